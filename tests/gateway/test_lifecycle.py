"""What survives a restart, and the explicit --no-auth mode for local use."""

from __future__ import annotations

import os

import httpx

from support import EXAMPLES, ROOT, start_server, wait_for, worker_pids


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

        def served():
            resp = httpx.post(f"{srv.url}/model/{m}/production/predict", json={"name": "b"})
            if resp.status_code == 503:  # brought back in the background
                assert "still deploying" in resp.json()["error"], resp.text
                return None
            return resp

        resp = wait_for(served, "the deployment to be back")
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
    assert "/.venvs/" in body["prefix"] and str(server.home) in body["prefix"]
    log = server.cli("deployments", "logs", push["deployment"]["id"]).stdout
    assert "building a virtualenv with 1 requirement(s)" in log


def test_a_worker_that_dies_mid_request_gives_a_502_and_is_restarted(server):
    push = server.push(ROOT / "tests" / "gateway" / "models" / "crashy")
    url = f"/model/{push['model']['id']}/production/predict"
    with server.client() as http:
        before = http.post(url, json={}).json()["process"]
        crashed = http.post(url, json={"crash": True})
        assert crashed.status_code == 502
        assert crashed.headers["x-baseten-error-source"] == "01"  # the gateway saw it go
        assert isinstance(crashed.json()["error"], str) and crashed.json()["error"], crashed.text

        def restarted():
            resp = http.post(url, json={})
            # until the new worker is ready there is no running replica: a 503 that says retry,
            # whether or not the gateway has noticed the exit yet
            if resp.status_code == 503:
                assert "no running replica" in resp.json()["error"], resp.text
                return None
            return resp

        resp = wait_for(restarted, "the worker to be restarted")
    assert resp.status_code == 200 and resp.json()["process"] != before
    log = server.cli("deployments", "logs", push["deployment"]["id"]).stdout
    assert log.count("serving ") >= 2  # the worker started twice


def test_workers_stop_when_the_gateway_is_killed(tmp_path):
    srv = start_server(tmp_path / "home", "--no-auth", "--no-builtin")
    try:
        push = srv.push(ROOT / "tests" / "gateway" / "models" / "crashy")
        with httpx.Client() as http:
            assert http.post(f"{srv.url}/model/{push['model']['id']}/production/predict",
                             json={}).status_code == 200
        workers = worker_pids(push["deployment"]["id"])  # the worker (and its sandbox)
        assert workers
        srv.proc.kill()  # SIGKILL: the gateway gets no chance to stop its workers
        srv.proc.wait()
        wait_for(lambda: not any(_alive(pid) for pid in workers), "the worker to stop with its gateway")
    finally:
        srv.stop()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie has exited; only its parent (gone) would reap it
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False
