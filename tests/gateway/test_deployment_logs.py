"""`trestle deployments logs`: JSON lines with the request id and replica, `--since`, and
`--follow` streaming new lines as requests come in."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from datetime import UTC, datetime, timedelta

import pytest

from support import EXAMPLES, start_server, wait_for


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    server = start_server(tmp_path_factory.mktemp("home"), "--no-builtin")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def hello(srv):
    return srv.push(EXAMPLES / "hello")


def parse(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line]


def test_logs_are_json_lines_with_request_ids_and_replicas(srv, hello):
    m, d = hello["model"]["id"], hello["deployment"]["id"]
    with srv.client() as http:
        assert http.post(f"/model/{m}/production/predict", json={},
                         headers={"x-request-id": "logs-probe-1"}).status_code == 200
    def seen():
        out = parse(srv.cli("deployments", "logs", d).stdout)
        return out if any(r["request_id"] == "logs-probe-1" for r in out) else None

    out = wait_for(seen, "the request's log line")
    mine = [r for r in out if r["request_id"] == "logs-probe-1"]
    assert mine[0]["source"] == "worker" and mine[0]["replica"] == 0
    assert "POST /predict -> 200" in mine[0]["message"]
    sources = {r["source"] for r in out}
    assert {"trestle", "worker"} <= sources
    assert any(r["source"] == "trestle" and r["message"] == "deployment is active" for r in out)
    assert any(r["message"].startswith("model ready") for r in out)  # the load
    for r in out:
        datetime.fromisoformat(r["time"])

    later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    assert srv.cli("deployments", "logs", d, "--since", later).stdout == ""
    recent = parse(srv.cli("deployments", "logs", d, "--since", "1h").stdout)
    assert any(r["request_id"] == "logs-probe-1" for r in recent)
    assert len(parse(srv.cli("deployments", "logs", d, "--tail", "2").stdout)) == 2
    bad = srv.cli("deployments", "logs", d, "--since", "yesterday", check=False)
    assert bad.returncode == 1 and "since must be a duration" in bad.stderr
    raw = srv.cli("deployments", "logs", d, "--raw").stdout
    assert '"request_id": "logs-probe-1"' in raw  # the file's own text: the worker's JSON lines


def test_follow_streams_new_lines_until_the_client_leaves(srv, hello):
    m, d = hello["model"]["id"], hello["deployment"]["id"]
    proc = subprocess.Popen([sys.executable, "-m", "trestle", "deployments", "logs", d, "--follow",
                             "--tail", "1"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=srv.env())
    lines: list[dict] = []

    def read():
        for line in proc.stdout:
            lines.append(json.loads(line))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        wait_for(lambda: lines, "the first line")
        with srv.client() as http:
            def followed():
                http.post(f"/model/{m}/production/predict", json={},
                          headers={"x-request-id": "follow-probe"})
                return any(r["request_id"] == "follow-probe" for r in lines)

            wait_for(followed, "a new request's line in the followed log")
    finally:
        proc.terminate()
        proc.wait(60)
    # the gateway is fine after the follower left
    with srv.client() as http:
        assert http.post(f"/model/{m}/production/predict", json={}).status_code == 200


def test_bad_log_parameters_name_them(srv, hello):
    d = hello["deployment"]["id"]
    with srv.client() as http:
        for query, param in (("format=xml", "format"), ("follow=1", "follow"),
                             ("format=json&offset=3", "offset"), ("format=json&timeout=5", "timeout"),
                             ("format=json&tail=-1", "tail")):
            resp = http.get(f"/api/v1/deployments/{d}/logs?{query}")
            assert resp.status_code == 400, (query, resp.text)
            assert resp.json()["error"]["param"] == param, query
