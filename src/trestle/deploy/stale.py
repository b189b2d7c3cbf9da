"""Workers left running by a gateway that was killed (SIGKILL, a crash): found and stopped by
the next gateway before it starts its own.

A worker normally ends with its gateway (it asks the kernel for a signal when its parent dies,
and bubblewrap kills a sandbox whose parent died), but one that ignores that signal or is stuck
would live on, holding memory and its socket. Every worker's command line names its socket,
inside its gateway's run folder (`/tmp/trestle-*`), so the workers of a dead gateway's run
folder are the `trestle.runtime` processes whose arguments point into it.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

log = logging.getLogger("trestle.deploy")

GRACE_S = 5.0


def worker_processes() -> Iterator[tuple[int, list[bytes]]]:
    """(pid, arguments) of each `trestle.runtime` process on the machine (and each sandbox
    launcher, whose arguments hold its worker's), this process excepted."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                args = f.read().split(b"\0")
        except OSError:
            continue
        if b"trestle.runtime" in args:
            yield int(entry), args


def workers_of(run_dir: Path) -> list[int]:
    """Pids of the worker processes (and their sandboxes) whose socket is in `run_dir`."""
    prefix = (str(run_dir).rstrip("/") + "/").encode()
    return [pid for pid, args in worker_processes() if any(a.startswith(prefix) for a in args)]


def _running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def stop_workers_of(run_dir: Path, grace: float = GRACE_S) -> list[int]:
    """Stop the workers of a dead gateway's run folder: SIGTERM, then SIGKILL after `grace`
    seconds. Returns their pids."""
    pids = workers_of(run_dir)
    if not pids:
        return []
    log.warning("stopping %d worker process(es) left by a gateway that is gone: %s",
                len(pids), " ".join(map(str, pids)))
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            try:
                os.kill(pid, sig)
            except (ProcessLookupError, PermissionError):
                pass
        deadline = time.monotonic() + grace
        while any(_running(p) for p in pids) and time.monotonic() < deadline:
            time.sleep(0.05)
        if not any(_running(p) for p in pids):
            break
    return pids
