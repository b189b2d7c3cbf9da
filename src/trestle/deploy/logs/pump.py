"""Copying a worker's output (a pipe) into its deployment's log, in batches.

    read_end, write_end = output_pipe()          # the worker gets `write_end` as stdout/stderr
    task = asyncio.create_task(pump(read_end, rotating_log))   # ends when the worker's side closes

A worker writes a log line per request. Read as it comes, each line would wake the gateway's
event loop once more per request (a read, a file write) while it relays answers. `pump` reads
what the pipe holds, writes it to the log in one go, then leaves the pipe alone for `BATCH_S`:
lines written meanwhile wait in the pipe (1 MiB where the system allows it) and are read
together. A worker that writes faster than that waits for the pipe, as it would for a disk.
A log that cannot be written (a full disk) loses those lines, with a warning in the gateway's
own log; the pipe is read on, so the worker neither blocks nor fails on its next write.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os

from trestle.deploy.logs.logfile import BLOCK, RotatingLog

BATCH_S = 0.02  # at most ~50 reads a second per worker
PIPE_BYTES = 1024 * 1024
MAX_BLOCKS = 16  # read per wake-up at most, so that a flood cannot hold the event loop

log = logging.getLogger("trestle.deploy")


def output_pipe() -> tuple[int, int]:
    """(read end, write end): the read end non-blocking, the pipe enlarged where allowed."""
    read_end, write_end = os.pipe()
    os.set_blocking(read_end, False)
    try:
        fcntl.fcntl(read_end, fcntl.F_SETPIPE_SZ, PIPE_BYTES)
    except OSError:  # above the system's pipe-max-size: the default 64 KiB will do
        pass
    return read_end, write_end


async def pump(read_end: int, out: RotatingLog, batch_s: float = BATCH_S) -> None:
    """Copy the pipe into `out` until every writer has closed it; closes `read_end`."""
    loop = asyncio.get_running_loop()
    failing = False  # the last write failed: warn again only once one has succeeded
    try:
        while True:
            readable = loop.create_future()
            loop.add_reader(read_end, _ready, readable)
            try:
                await readable
            finally:
                loop.remove_reader(read_end)
            try:
                eof = _drain(read_end, out)
                failing = False
            except OSError as exc:  # from `out`: the pipe is read on
                if not failing:
                    log.warning("cannot write the log %s (%s); its lines are lost until it can",
                                out.path.name, exc.strerror or exc)
                failing = True
                eof = False
            if eof:
                return
            await asyncio.sleep(batch_s)
    finally:
        os.close(read_end)


def _ready(fut: asyncio.Future) -> None:
    if not fut.done():
        fut.set_result(None)


def _drain(read_end: int, out: RotatingLog) -> bool:
    """Write what the pipe holds (up to `MAX_BLOCKS` blocks) to `out`; True at end of file.
    Block by block: the log rotates between blocks, so no file passes its size by more."""
    for _ in range(MAX_BLOCKS):
        try:
            data = os.read(read_end, BLOCK)
        except BlockingIOError:
            return False
        if not data:
            return True
        out.write(data)
    return False
