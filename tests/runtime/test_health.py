"""/health and the readiness gate: loading, ready, failed (with the reason)."""

from __future__ import annotations

import json

from trestle.protocol.health import WorkerHealth, WorkerState

from support import EXAMPLES, log_entries, wait_for

from .conftest import assert_envelope, assert_truss_error

GATED_LOAD = """
    import os, time

    class Model:
        def load(self):
            # Waits for the test to open the gate, so "loading" can be observed for sure.
            while not os.path.exists(os.environ["LOAD_GATE"]):
                time.sleep(0.02)

        def predict(self, model_input):
            return {"served": True}
"""


def test_loading_then_ready(workers, model_folder, tmp_path):
    gate = tmp_path / "gate"
    worker = workers.start(model_folder(GATED_LOAD), env={"LOAD_GATE": str(gate)}, wait="listening")
    health = worker.health()
    assert health.status_code == 503 and health.json() == {"status": "loading", "methods": ["predict"]}
    with worker.client() as c:
        for res in (c.post("/predict", json={}), c.get("/anything")):  # Truss routes
            message = assert_truss_error(res, 503, "500")
            assert "still loading" in message
        res = c.post("/v1/chat/completions", json={})  # an OpenAI route: the envelope
        assert "still loading" in assert_envelope(res, 503, type="service_unavailable_error")
        assert res.json()["error"]["code"] == "loading"
        gate.touch()
        worker.wait_ready()
        assert c.post("/predict", json={}).json() == {"served": True}


def test_failed_load_reports_the_error(workers):
    worker = workers.start(EXAMPLES / "load_fails", wait="settled")
    health = worker.health()
    assert health.status_code == 503
    assert health.json()["status"] == "failed"
    assert "RuntimeError: weights file model.bin is missing from data/" in health.json()["error"]
    assert "Model.load" in health.json()["error"]
    with worker.client() as c:
        res = c.post("/predict", json={})
    message = assert_truss_error(res, 503, "500")
    assert message.startswith("the model failed to load") and "weights file model.bin is missing" in message
    messages = "\n".join(e["message"] for e in log_entries(worker.log()))
    assert 'examples/load_fails/model/model.py", line 3, in load' in messages


def test_missing_secret_fails_load_saying_how_to_set_it(workers):
    worker = workers.start(EXAMPLES / "secrets_env", wait="settled")
    error = worker.health().json()["error"]
    assert "webhook_token" in error and "trestle secrets set webhook_token" in error


def test_load_runs_once(workers, model_folder, tmp_path):
    counter = tmp_path / "loads"
    source = """
        import os

        class Model:
            def load(self):
                with open(os.environ["LOAD_COUNTER"], "a") as f:
                    f.write("x")

            def predict(self, model_input):
                return open(os.environ["LOAD_COUNTER"]).read()
    """
    worker = workers.start(model_folder(source), env={"LOAD_COUNTER": str(counter)})
    with worker.client() as c:
        answers = [c.post("/predict", json={}).json() for _ in range(3)]
    assert answers == ["x", "x", "x"]
    assert wait_for(lambda: worker.health().json() == {"status": "ready", "methods": ["predict"]}, "health")


def test_engine_worker_answers_the_same_health_contract(workers, tmp_path):
    """An engine whose weights are missing fails the way a model whose load raises does."""
    folder = tmp_path / "engine"
    folder.mkdir()
    engine = {"kind": "llama_cpp", "weights": "missing.gguf", "slug": "acme/missing"}
    (folder / "config.yaml").write_text(json.dumps({"model_name": "missing", "engine": engine}))
    worker = workers.start(folder, wait="settled")
    health = worker.health()
    assert health.status_code == 503
    parsed = WorkerHealth.model_validate(health.json())
    assert parsed.status is WorkerState.FAILED and "no such file" in parsed.error
    with worker.client() as c:
        res = c.get("/v1/models")
    message = assert_envelope(res, 503, type="service_unavailable_error")
    assert message.startswith("the model acme/missing failed to load")
    assert res.json()["error"]["code"] == "load_failed"  # the runtime's code, one contract
