"""A Model's `is_healthy()` is polled once it is loaded: failing `failure_threshold` checks in a
row makes the worker report `unhealthy` (503, with the reason) while it keeps serving."""

from __future__ import annotations


import pytest

from support import ROOT, start_worker, wait_for

SICKLY = ROOT / "tests" / "gateway" / "models" / "sickly"


@pytest.mark.parametrize(("sick", "reason"), [(True, "is_healthy() returned False"),
                                              ("raise", "is_healthy() raised RuntimeError: the disk is full")])
def test_failing_checks_make_the_worker_unhealthy(tmp_path, sick, reason):
    worker = start_worker(SICKLY, tmp_path / "worker.log")
    try:
        with worker.client() as http:
            body = http.get("/health").json()
            assert body["status"] == "ready" and body["health_check_failures"] == 0
            assert http.post("/predict", json={"sick": sick}).status_code == 200

            def unhealthy():
                resp = http.get("/health")
                return resp if resp.json()["status"] == "unhealthy" else None

            resp = wait_for(unhealthy, "the worker to report unhealthy")
            assert resp.status_code == 503
            assert resp.json()["error"] == reason
            assert http.post("/predict", json={}).status_code == 200  # still serving
        assert "health check failed (1 of 2)" in worker.log()
    finally:
        worker.stop()


def test_is_healthy_must_be_a_plain_method(tmp_path):
    folder = tmp_path / "bad"
    (folder / "model").mkdir(parents=True)
    (folder / "config.yaml").write_text("model_name: bad\n")
    (folder / "model" / "model.py").write_text(
        "class Model:\n"
        "    def predict(self, model_input):\n"
        "        return 1\n"
        "    def is_healthy(self):\n"
        "        yield True\n"
    )
    worker = start_worker(folder, tmp_path / "worker.log", wait="settled")
    try:
        body = worker.stats()
        assert body["status"] == "failed" and "Model.is_healthy must return True or False" in body["error"]
    finally:
        worker.stop()


def test_health_checks_config_is_validated_and_truss_keys_are_accepted():
    from trestle.deploy.config import ModelConfig
    from trestle.errors import BadRequest

    config = ModelConfig.parse("runtime:\n  health_checks:\n    period: 2\n    failure_threshold: 4\n"
                               "    restart_threshold_seconds: 1800\n")
    assert (config.runtime.health_checks.period, config.runtime.health_checks.failure_threshold) == (2, 4)
    assert config.ignored_keys == ["runtime.health_checks.restart_threshold_seconds"]
    with pytest.raises(BadRequest) as info:
        ModelConfig.parse("runtime:\n  health_checks:\n    failure_threshold: 0\n")
    assert "failure_threshold" in info.value.message
