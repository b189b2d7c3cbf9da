"""Run folders and workers left by a gateway (or a Ray replica's actor) that was killed (SIGKILL,
a crash): found and removed by the next one before it starts its own (`remove_dead_run_dirs`).

A worker normally ends with its gateway (it asks the kernel for a signal when its parent dies,
and bubblewrap kills a sandbox whose parent died), but one that ignores that signal or is stuck
would live on, holding memory and its socket. Every worker's command line names its socket,
inside its gateway's run folder (`/tmp/trestle-*`), so the workers of a dead gateway's run
folder are the `trestle.runtime` processes whose arguments point into it. The same holds for the
folder a Ray replica's actor unpacks its deployment into on its node (`trestle.deploy.ray.actor`).
"""

from __future__ import annotations

import logging
import os
import signal
import shutil
import tempfile
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


def remove_dead_run_dirs(prefix: str, pid_file: str, parent: Path | None = None) -> list[Path]:
    """Remove the run folders `parent/prefix*` (default parent: the temp folder) whose owner, the
    process whose pid is in their `pid_file`, is no longer running, after stopping any of their
    workers that outlived it. A folder without that file (not one of ours, or one still being made)
    is left alone. Returns the folders removed."""
    removed = []
    for path in Path(parent or tempfile.gettempdir()).glob(f"{prefix}*"):
        try:
            pid = int((path / pid_file).read_text().strip())
        except (OSError, ValueError):
            continue
        if _alive(pid):
            continue
        stop_workers_of(path)
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path)
    if removed:
        log.info("removed %d run folder(s) left by processes that are gone", len(removed))
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's
    return True
