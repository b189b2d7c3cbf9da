"""What survives a restart, and the explicit --no-auth mode for local use."""

from __future__ import annotations

import time

import httpx

from support import EXAMPLES, ROOT, start_server


def test_deployments_come_back_after_a_restart_and_no_auth_needs_no_key(tmp_path):
    home = tmp_path / "home"
    srv = start_server(home, "--no-auth", "--no-builtin")
    try:
        push = srv.push(EXAMPLES / "hello")
        m = push["model"]["id"]
        resp = httpx.post(f"{srv.url}/model/{m}/production/predict", json={"name": "a"})
        assert resp.status_code == 200
        assert not (home / "admin_key").exists()
    finally:
        srv.stop()
    srv = start_server(home, "--no-auth", "--no-builtin")
    try:
        deps = srv.cli_json("deployments", "list")["deployments"]
        assert [d["id"] for d in deps] == [push["deployment"]["id"]]
        for _ in range(300):
            resp = httpx.post(f"{srv.url}/model/{m}/production/predict", json={"name": "b"})
            if resp.status_code != 503:
                break
            assert "still deploying" in resp.json()["error"]["message"]
            time.sleep(0.1)
        assert resp.status_code == 200 and resp.json() == {"message": "Hello, b!"}
    finally:
        srv.stop()


def test_requirements_get_their_own_virtualenv(server):
    push = server.push(ROOT / "tests" / "gateway" / "models" / "with_requirements")
    assert push["deployment"]["status"] == "active", push["deployment"]["error"]
    with server.client() as http:
        resp = http.post(f"/model/{push['model']['id']}/production/predict", json={"text": "Ærøskøbing"})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["ascii"] == "AEroskobing"
    assert body["prefix"].endswith("/venv") and str(server.home) in body["prefix"]
    log = server.cli("deployments", "logs", push["deployment"]["id"]).stdout
    assert "building a virtualenv with 1 requirement(s)" in log
