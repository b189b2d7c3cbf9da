"""Stopping `trestle serve`: SIGTERM and Ctrl-C let requests and streams in flight finish, then
stop the workers (none is left running); a gateway killed with SIGKILL leaves workers behind,
which the next `trestle serve` stops before it starts its own."""

from __future__ import annotations

import os
import signal
import threading

import httpx
import pytest

from support import ROOT, start_server, wait_for, worker_pids

MODELS = ROOT / "tests" / "gateway" / "models"
NO_SANDBOX = {"TRESTLE_SANDBOX": "off"}  # the gated model reads the test's files


def running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0] != "Z"
    except OSError:
        return False


def refused(url: str) -> bool:
    try:
        httpx.get(f"{url}/health", timeout=5)
    except httpx.ConnectError:
        return True
    except httpx.TransportError:
        return False
    return False


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "Ctrl-C"])
def test_a_stream_in_flight_finishes_then_the_workers_stop(tmp_path, sig):
    srv = start_server(tmp_path / "home", "--no-builtin", env=NO_SANDBOX)
    try:
        push = srv.push(MODELS / "gated")
        m, d = push["model"]["id"], push["deployment"]["id"]
        workers = worker_pids(d)
        assert workers
        gate, seen = tmp_path / "gate", tmp_path / "disconnected"
        received: list[bytes] = []
        finished = threading.Event()

        def stream() -> None:
            with srv.client() as http, http.stream(
                "POST", f"/model/{m}/production/predict",
                json={"gate": str(gate), "disconnect_file": str(seen)},
            ) as resp:
                for chunk in resp.iter_raw():
                    received.append(chunk)
            finished.set()

        reader = threading.Thread(target=stream, daemon=True)
        reader.start()
        wait_for(lambda: received, "the stream's first chunk")
        srv.proc.send_signal(sig)
        wait_for(lambda: refused(srv.url), "the gateway to stop accepting connections")
        assert srv.proc.poll() is None and not finished.is_set()  # still draining the stream
        gate.touch()
        wait_for(finished.is_set, "the stream to finish")
        assert b"".join(received) == b"first\nsecond\n"
        assert not seen.exists()  # the model was never cut off
        srv.proc.wait(120)
        assert not [p for p in workers if running(p)]
        assert not worker_pids(d)
    finally:
        srv.stop()


def test_a_restart_after_sigkill_stops_the_workers_left_behind(tmp_path):
    home = tmp_path / "home"
    first = start_server(home, "--no-builtin", env=NO_SANDBOX)
    try:
        d = first.push(MODELS / "stubborn")["deployment"]["id"]
        left = worker_pids(d)
        assert left
        first.proc.kill()
        first.proc.wait()
        # it ignores the SIGTERM a worker gets when its gateway dies: still there
        assert all(running(p) for p in left)
        second = start_server(home, "--no-builtin", env=NO_SANDBOX)
        try:
            wait_for(lambda: not any(running(p) for p in left), "the stale worker to be stopped")
            fresh = wait_for(lambda: [p for p in worker_pids(d) if p not in left],
                             "the deployment's new worker")
            assert fresh
        finally:
            second.stop()
    finally:
        first.stop()
        for pid in worker_pids(d):  # never leave one behind, even when the test fails
            os.kill(pid, signal.SIGKILL)

