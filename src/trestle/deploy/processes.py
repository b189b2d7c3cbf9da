"""Stopping a worker process: SIGTERM (it finishes what it was doing), SIGKILL after a grace."""

from __future__ import annotations

import asyncio
import os
import signal

STOP_GRACE_S = 10.0


async def terminate(proc: asyncio.subprocess.Process, *, signal_pid: int | None = None,
                    grace: float = STOP_GRACE_S) -> None:
    """SIGTERM `signal_pid` (default: `proc` itself; a sandboxed worker's own pid inside its
    launcher), wait up to `grace` seconds for `proc` to end, then SIGKILL it. Returns once it
    has ended; a process that already ended is left alone."""
    if proc.returncode is not None:
        return
    try:
        os.kill(signal_pid if signal_pid is not None else proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    try:
        await asyncio.wait_for(proc.wait(), grace)
    except asyncio.TimeoutError:
        proc.kill()
        await proc.wait()
