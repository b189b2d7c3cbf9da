"""Environments and the deployment lifecycle through the real CLI and a real `trestle serve`:
named environments, promote, rollback along the history, deactivate (503 that says so, workers
gone), activate, delete (409 while an environment points at it)."""

from __future__ import annotations

from pathlib import Path

import pytest

from support import start_server, wait_for, worker_pids


def version(tmp_path: Path, n: int, name: str = "lifecycle") -> Path:
    folder = tmp_path / f"{name}-v{n}"
    (folder / "model").mkdir(parents=True)
    (folder / "config.yaml").write_text(f"model_name: {name}\n")
    (folder / "model" / "model.py").write_text(
        "class Model:\n"
        "    def predict(self, model_input):\n"
        f"        return {{'version': {n}}}\n"
    )
    return folder


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    server = start_server(tmp_path_factory.mktemp("home"), "--no-builtin")
    yield server
    server.stop()


def call(srv, path: str):
    with srv.client() as http:
        return http.post(path, json={})


def served_version(srv, path: str) -> int:
    resp = call(srv, path)
    assert resp.status_code == 200, resp.text
    return resp.json()["version"]


def test_named_environments_promote_and_rollback_along_the_history(srv, tmp_path):
    v1 = srv.push(version(tmp_path, 1, "envs"))
    m, d1 = v1["model"]["id"], v1["deployment"]["id"]
    d2 = srv.push(version(tmp_path, 2, "envs"))["deployment"]["id"]
    assert served_version(srv, f"/model/{m}/production/predict") == 1

    staging = srv.cli_json("environments", "create", "envs", "staging")  # by name; production's
    assert staging["deployment_id"] == d1 and staging["serving"] == d1
    assert served_version(srv, f"/model/{m}/environments/staging/predict") == 1
    again = srv.cli("environments", "create", m, "staging", check=False)
    assert again.returncode == 1 and "409" in again.stderr and "already has" in again.stderr

    srv.cli_json("deployments", "promote", d2, "--environment", "staging")
    assert served_version(srv, f"/model/{m}/environments/staging/predict") == 2
    promoted = srv.cli_json("deployments", "promote", d2)
    assert promoted["name"] == "production" and promoted["deployment_id"] == d2
    assert served_version(srv, f"/model/{m}/production/predict") == 2

    back = srv.cli_json("deployments", "rollback", m)
    assert back["deployment_id"] == d1 and back["history"] == [d1]
    assert served_version(srv, f"/model/{m}/production/predict") == 1
    none_left = srv.cli("deployments", "rollback", m, check=False)
    assert none_left.returncode == 1 and "no earlier active deployment" in none_left.stderr

    envs = {e["name"]: e for e in srv.cli_json("environments", "list", m)["environments"]}
    assert set(envs) == {"production", "development", "staging"}
    assert envs["staging"]["history"] == [d1, d2] and envs["development"]["deployment_id"] == d2

    srv.cli("environments", "delete", m, "staging", "--yes")
    assert call(srv, f"/model/{m}/environments/staging/predict").status_code == 404
    kept = srv.cli("environments", "delete", m, "production", "--yes", check=False)
    assert kept.returncode == 1 and "cannot be deleted" in kept.stderr
    assert served_version(srv, f"/model/{m}/production/predict") == 1


def test_rollback_skips_a_deployment_that_failed(srv, tmp_path):
    v1 = srv.push(version(tmp_path, 1, "skipfail"))
    m, d1 = v1["model"]["id"], v1["deployment"]["id"]
    d2 = srv.push(version(tmp_path, 2, "skipfail"), "--promote")["deployment"]["id"]
    broken = version(tmp_path, 3, "skipfail")
    (broken / "model" / "model.py").write_text("raise RuntimeError('broken on purpose')\n")
    failed = srv.cli("push", str(broken), "--promote", "--output", "json", check=False)
    assert failed.returncode == 1  # production stayed on d2
    assert served_version(srv, f"/model/{m}/production/predict") == 2
    back = srv.cli_json("deployments", "rollback", m)
    assert back["deployment_id"] == d1, back
    assert d2 != d1


def test_deactivate_activate_and_delete(srv, tmp_path):
    v1 = srv.push(version(tmp_path, 1, "life"))
    m, d1 = v1["model"]["id"], v1["deployment"]["id"]
    d2 = srv.push(version(tmp_path, 2, "life"))["deployment"]["id"]
    assert worker_pids(d2)

    out = srv.cli_json("deployments", "deactivate", d2)
    assert out["status"] == "inactive"
    resp = call(srv, f"/model/{m}/deployment/{d2}/predict")
    assert resp.status_code == 503  # in Truss's shape on a Truss route: the message, from the gateway
    assert resp.headers["x-baseten-error-source"] == "01"
    assert "inactive" in resp.json()["error"] and "activate" in resp.json()["error"]
    assert call(srv, f"/model/{m}/development/predict").status_code == 503  # it points at d2
    wait_for(lambda: not worker_pids(d2), "the deactivated deployment's workers to stop")
    assert served_version(srv, f"/model/{m}/production/predict") == 1  # others untouched
    refused = srv.cli("deployments", "promote", d2, check=False)
    assert refused.returncode == 1 and "activate it first" in refused.stderr

    assert srv.cli_json("deployments", "activate", d2)["status"] == "active"
    assert served_version(srv, f"/model/{m}/deployment/{d2}/predict") == 2
    assert served_version(srv, f"/model/{m}/development/predict") == 2

    in_use = srv.cli("deployments", "delete", d1, "--yes", check=False)
    assert in_use.returncode == 1 and "409" in in_use.stderr and "production" in in_use.stderr
    d3 = srv.push(version(tmp_path, 3, "life"))["deployment"]["id"]  # development moves to d3
    home = next(p for p in (srv.home / "deployments").iterdir() if (p / "src").exists()
                and d2 in (p / "worker.log").read_text())
    srv.cli_json("deployments", "delete", d2, "--yes")
    assert not home.exists()
    assert call(srv, f"/model/{m}/deployment/{d2}/predict").status_code == 404
    assert d2 not in [d["id"] for d in srv.cli_json("deployments", "list", "--model", m)["deployments"]]
    assert not worker_pids(d2)
    assert served_version(srv, f"/model/{m}/deployment/{d3}/predict") == 3
