"""Wedged workers do not hang clients: `runtime.request_timeout` gives a 504, and a replica that
stops answering its health check (`runtime.liveness_timeout`) is restarted."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import httpx
import pytest

MODELS = Path(__file__).parent / "models"


@pytest.fixture(scope="module")
def wedged(edge) -> str:
    push = edge.push(MODELS / "wedged")
    assert push["deployment"]["status"] == "active", push["deployment"]["error"]
    return f"/model/{push['model']['id']}/production/predict"


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_a_stopped_worker_gives_504_and_is_restarted(edge, wedged):
    with edge.client() as http:
        pid = http.post(wedged, json={}).json()["pid"]
        os.kill(pid, signal.SIGSTOP)
        try:
            resp = http.post(wedged, json={})
            assert resp.status_code == 504, resp.text
            error = resp.json()["error"]
            assert error["type"] == "timeout_error" and "request_timeout" in error["message"]
            deadline = time.monotonic() + 180
            while time.monotonic() < deadline:
                resp = http.post(wedged, json={})
                if resp.status_code == 200:
                    break
                # wedged (its socket's backlog full: 502; or no answer: 504), then restarting (503)
                assert resp.status_code in (502, 503, 504), resp.text
                time.sleep(0.5)
            assert resp.status_code == 200 and resp.json()["pid"] != pid
        finally:
            if pid_alive(pid):
                os.kill(pid, signal.SIGKILL)
    assert "has not answered its health check" in edge.log_text()


def test_a_stream_that_stalls_past_the_timeout_is_cut_off(edge, wedged):
    with edge.client() as http:
        with http.stream("POST", wedged, json={"stall": True}) as resp:
            assert resp.status_code == 200
            with pytest.raises(httpx.RemoteProtocolError):
                for _ in resp.iter_raw():
                    pass
