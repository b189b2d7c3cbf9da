"""Fixtures of the security tests.

`edge`: a gateway with auth on, no built-in model, small limits where a test needs to reach them
(each is an ordinary setting, as a user would configure it). `engine`: a real engine worker
(`examples/smollm2`: 4 slots, a queue of 16) and `memory`, its resident memory from /proc."""

from __future__ import annotations

from pathlib import Path

import pytest

from support import EXAMPLES, Server, Worker, start_server, start_worker

MODELS = Path(__file__).parent / "models"
PREDICT_LIMIT = 8 * 1024 * 1024


@pytest.fixture(scope="module")
def edge(tmp_path_factory) -> Server:
    srv = start_server(tmp_path_factory.mktemp("home"), "--no-builtin",
                       env={"TRESTLE_MAX_PREDICT_BODY_BYTES": str(PREDICT_LIMIT)})
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def echo(edge) -> str:
    """The echo model, pushed and active: its model id."""
    push = edge.push(MODELS / "echo")
    assert push["deployment"]["status"] == "active", push["deployment"]["error"]
    return push["model"]["id"]


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
