"""Copying a worker's output into its deployment log: everything, in order, in few writes, and the
pipe closed at the end (`trestle.deploy.logs.pump`)."""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import threading

import pytest

from trestle.deploy.logs import pump as pump_module
from trestle.deploy.logs.logfile import RotatingLog
from trestle.deploy.logs.pump import output_pipe, pump


class Recorder(RotatingLog):
    def __init__(self, path):
        super().__init__(path)
        self.writes: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.writes.append(data)
        super().write(data)


def test_lines_waiting_in_the_pipe_are_written_in_one_go(run, tmp_path):
    """A hundred request lines already in the pipe: one write to the log, then end of file."""
    read_end, write_end = output_pipe()
    lines = b"".join(b'{"message": "POST /predict -> 200 (%d ms)"}\n' % i for i in range(100))
    os.write(write_end, lines)
    os.close(write_end)
    out = Recorder(tmp_path / "worker.log")
    run(asyncio.wait_for(pump(read_end, out), 60))
    assert out.writes == [lines]
    assert (tmp_path / "worker.log").read_bytes() == lines


def test_a_flood_arrives_whole_and_in_order_with_rotation(run, tmp_path, monkeypatch):
    """More than the pipe holds, from a writer that blocks when it is full: every byte, in order,
    through a log that rotates by size, each file within its size plus one block."""
    monkeypatch.setattr(pump_module, "BATCH_S", 0.001)
    read_end, write_end = output_pipe()
    payload = b"".join(b"line %07d %s\n" % (i, b"x" * 80) for i in range(40_000))  # ~3.6 MB

    def writer():
        with os.fdopen(write_end, "wb", buffering=0) as f:
            f.write(payload)

    thread = threading.Thread(target=writer)
    thread.start()
    out = RotatingLog(tmp_path / "worker.log", max_bytes=1 << 20, backups=10)
    run(asyncio.wait_for(pump(read_end, out, batch_s=0.001), 120))
    thread.join()
    out.close()
    files = sorted(tmp_path.glob("worker.log*"), reverse=True,  # oldest (highest number) first
                   key=lambda p: 0 if p.name == "worker.log" else int(p.name.rsplit(".", 1)[1]))
    assert len(files) >= 3
    assert b"".join(p.read_bytes() for p in files) == payload
    assert all(p.stat().st_size <= (1 << 20) + 64 * 1024 for p in files)


def test_a_cancelled_pump_closes_its_end(run, tmp_path):
    """The replica stopped before its worker's output ended: the pipe is closed all the same."""
    read_end, write_end = output_pipe()

    async def cancelled():
        task = asyncio.create_task(pump(read_end, RotatingLog(tmp_path / "worker.log")))
        await asyncio.sleep(0)  # it waits for the pipe
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    run(cancelled())
    try:
        with pytest.raises(BrokenPipeError):  # no reader is left
            os.write(write_end, b"x")
    finally:
        os.close(write_end)


def test_a_log_that_cannot_be_written_loses_lines_but_the_pipe_is_read_on(run, tmp_path, caplog):
    """A full disk: the lines of the failed write are lost (with one warning), the worker's
    later lines are copied once writing works again, and the pump ends at end of file."""
    read_end, write_end = output_pipe()

    class FullOnce(RotatingLog):
        failed = False

        def write(self, data: bytes) -> None:
            if not self.failed:
                self.failed = True
                os.write(write_end, b"later line\n")  # the worker goes on meanwhile
                os.close(write_end)
                raise OSError(errno.ENOSPC, "No space left on device")
            super().write(data)

    os.write(write_end, b"lost line\n")
    out = FullOnce(tmp_path / "worker.log")
    with caplog.at_level(logging.WARNING, logger="trestle.deploy"):
        run(asyncio.wait_for(pump(read_end, out, batch_s=0.001), 60))
    assert (tmp_path / "worker.log").read_bytes() == b"later line\n"
    warnings = [r.getMessage() for r in caplog.records if r.name == "trestle.deploy"]
    assert warnings == ["cannot write the log worker.log (No space left on device); its lines "
                        "are lost until it can"]
