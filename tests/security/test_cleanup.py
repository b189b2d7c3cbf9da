"""trestle cleans up after itself: the run folder of Unix sockets (`/tmp/trestle-*`) goes away on
stop, and a killed gateway's is removed by the next start (only when its gateway is gone)."""

from __future__ import annotations

import os
import signal
import tempfile
import time
from pathlib import Path

from support import EXAMPLES, start_server


def _run_dir(pid: int) -> Path:
    for path in Path(tempfile.gettempdir()).glob("trestle-*"):
        try:
            if (path / "gateway.pid").read_text().strip() == str(pid):
                return path
        except OSError:
            continue
    raise AssertionError(f"no run folder for gateway {pid}")


def _wait_gone(path: Path, timeout: float = 60) -> bool:
    deadline = time.monotonic() + timeout
    while path.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    return not path.exists()


def test_the_run_folder_is_removed_on_a_graceful_stop(tmp_path):
    srv = start_server(tmp_path / "home", "--no-builtin")
    try:
        srv.push(EXAMPLES / "hello")
        run = _run_dir(srv.proc.pid)
        assert any(run.glob("*/w.sock")), list(run.iterdir())
    finally:
        srv.stop()
    assert not run.exists()


def test_a_killed_gateways_run_folder_is_removed_by_the_next_start(tmp_path):
    live = Path(tempfile.mkdtemp(prefix="trestle-"))  # a live gateway's (this test's pid): kept
    (live / "gateway.pid").write_text(f"{os.getpid()}\n")
    first = start_server(tmp_path / "home", "--no-builtin")
    try:
        first.push(EXAMPLES / "hello")
        run = _run_dir(first.proc.pid)
        first.proc.send_signal(signal.SIGKILL)
        first.proc.wait()
        assert run.exists()  # nobody cleaned up
        second = start_server(tmp_path / "home", "--no-builtin")
        try:
            assert _wait_gone(run), list(run.iterdir())
            assert live.exists()
        finally:
            second.stop()
    finally:
        first.stop()
        for path in live.iterdir():
            path.unlink()
        live.rmdir()
