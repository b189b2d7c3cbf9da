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
    url = f"/model/{push['model']['id']}/production/predict"
    WEDGED_DEPLOYMENT[url] = push["deployment"]["id"]
    return url


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def worker_pid(url: str) -> int:
    """The host pid of the deployment's worker process (inside its sandbox it sees another)."""
    deployment = None
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            args = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        wanted = [b"--deployment-id", WEDGED_DEPLOYMENT[url].encode()]
        if b"trestle.runtime" in args and not args[0].endswith(b"bwrap") and any(
                args[i:i + 2] == wanted for i in range(len(args))):
            deployment = int(entry)
    assert deployment is not None, "no worker process found"
    return deployment


WEDGED_DEPLOYMENT: dict[str, str] = {}


def test_a_stopped_worker_gives_504_and_is_restarted(edge, wedged):
    with edge.client() as http:
        before = http.post(wedged, json={}).json()["process"]
        pid = worker_pid(wedged)
        os.kill(pid, signal.SIGSTOP)
        try:
            resp = http.post(wedged, json={})
            assert resp.status_code == 504, resp.text
            # a Truss route: Truss's error shape, from the gateway, trestle's own failure (500)
            assert "request_timeout" in resp.json()["error"]
            assert resp.headers["x-baseten-error-source"] == "01"
            deadline = time.monotonic() + 180
            while time.monotonic() < deadline:
                resp = http.post(wedged, json={})
                if resp.status_code == 200:
                    break
                # wedged (its socket's backlog full: 502; or no answer: 504), then restarting (503)
                assert resp.status_code in (502, 503, 504), resp.text
                time.sleep(0.5)
            assert resp.status_code == 200 and resp.json()["process"] != before
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
