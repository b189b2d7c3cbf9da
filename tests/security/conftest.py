"""Fixtures: a real engine worker (`examples/smollm2`: 4 slots, a queue of 16) and its memory."""

from __future__ import annotations

from pathlib import Path

import pytest

from support import EXAMPLES
from tests.engine.conftest import Worker, start_worker


@pytest.fixture(scope="module")
def engine(tmp_path_factory) -> Worker:
    w = start_worker(EXAMPLES / "smollm2", tmp_path_factory.mktemp("security") / "worker.log")
    yield w
    w.stop()


class Memory:
    """A process's resident memory, from /proc; `peak` is the high-water mark since `reset`."""

    def __init__(self, pid: int):
        self.status = Path(f"/proc/{pid}/status")
        self.clear_refs = Path(f"/proc/{pid}/clear_refs")

    def _field(self, name: str) -> int:
        for line in self.status.read_text().splitlines():
            if line.startswith(name + ":"):
                return int(line.split()[1]) * 1024
        raise AssertionError(f"{name} not in {self.status}")

    @property
    def rss(self) -> int:
        return self._field("VmRSS")

    @property
    def peak(self) -> int:
        return self._field("VmHWM")

    def reset_peak(self) -> None:
        self.clear_refs.write_text("5")  # resets VmHWM to the current RSS


@pytest.fixture
def memory(engine) -> Memory:
    return Memory(engine.proc.pid)
