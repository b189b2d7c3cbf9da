"""The gateway's answer ends as the worker's did: a stream that breaks upstream never looks
complete, and the log says "client went away" only when the client really left."""

from __future__ import annotations

import json

import httpx
import pytest

from support import ROOT, start_server

ECHO = ROOT / "tests" / "security" / "models" / "echo"


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    server = start_server(tmp_path_factory.mktemp("home"), "--no-builtin")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def echo(srv) -> str:
    push = srv.push(ECHO)
    assert push["deployment"]["status"] == "active", push["deployment"]["error"]
    return push["model"]["id"]


def test_a_plain_stream_that_breaks_upstream_is_cut_off_not_completed(srv, echo):
    received = b""
    with srv.client() as http:
        with http.stream("POST", f"/model/{echo}/production/predict", json={"mode": "break"}) as resp:
            assert resp.status_code == 200
            with pytest.raises(httpx.RemoteProtocolError):
                for chunk in resp.iter_raw():
                    received += chunk
    assert received in (b"", b"one ", b"one two ")  # what the model sent, and no clean end


def test_an_sse_stream_that_breaks_upstream_ends_with_an_error_event(srv, echo):
    with srv.client() as http:
        with http.stream("POST", f"/model/{echo}/production/sync/v1/chat/completions",
                         json={"stream": True}) as resp:
            assert resp.status_code == 200
            assert resp.headers["content-type"].startswith("text/event-stream")
            events = [line[len("data: "):] for line in resp.iter_lines() if line.startswith("data: ")]
    assert json.loads(events[0])["choices"][0]["delta"] == {"content": "hi"}
    last = json.loads(events[-1])
    assert last["error"]["type"] == "upstream_error", last


def test_ordinary_answers_are_not_logged_as_clients_going_away(srv, echo):
    with srv.client() as http:
        for i in range(20):
            resp = http.post(f"/model/{echo}/production/sync/predict?i={i}", json={})
            assert resp.status_code == 200
    # the access lines are written once each request ended: all 20 are there
    log = srv.log_text()
    assert sum("/sync/predict?i=" in line or "/sync/predict " in line for line in log.splitlines()) >= 20
    assert "client went away" not in log
