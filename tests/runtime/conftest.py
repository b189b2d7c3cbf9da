"""The worker as a real subprocess: `python -m trestle.runtime --model-dir DIR --port N|--socket P`.

`workers` starts workers for one test module and stops them at its end; `model_folder` writes a
tiny model folder inline (config.yaml + model/model.py) for contract cases that are not worth an
example. Waits are deadline guards (a hung worker fails the test), never timing assertions.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from support import free_port, stop_process

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
DEADLINE_S = 60


def wait_for(predicate: Callable[[], object], what: str, deadline_s: float = DEADLINE_S) -> object:
    """Poll `predicate` until it returns something truthy; fail the test at the deadline."""
    end = time.monotonic() + deadline_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > end:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.05)


@dataclass
class Worker:
    proc: subprocess.Popen
    log_path: Path
    port: int | None = None
    socket_path: Path | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}" if self.port else "http://worker"

    def client(self, **kwargs) -> httpx.Client:
        transport = httpx.HTTPTransport(uds=str(self.socket_path)) if self.socket_path else None
        return httpx.Client(base_url=self.url, transport=transport, timeout=30, **kwargs)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def health(self) -> httpx.Response | None:
        try:
            with self.client() as c:
                return c.get("/health")
        except httpx.TransportError:
            return None

    def wait_listening(self) -> httpx.Response:
        def answered():
            if self.proc.poll() is not None:
                raise AssertionError(f"worker exited {self.proc.returncode}:\n{self.log()}")
            return self.health()

        return wait_for(answered, "the worker to listen")

    def wait_settled(self) -> httpx.Response:
        """Wait until /health says ready or failed; returns that response."""
        return wait_for(
            lambda: (r := self.health()) is not None and r.json()["status"] != "loading" and r,
            "the model to finish loading",
        )

    def wait_ready(self) -> None:
        res = self.wait_settled()
        assert res.json() == {"status": "ready"}, f"{res.json()}\n{self.log()}"

    def stop(self) -> None:
        stop_process(self.proc, grace=15)


class Workers:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.started: list[Worker] = []

    def start(self, model_dir: Path | str, *args: str, unix_socket: bool = False, env: dict | None = None,
              wait: str = "ready") -> Worker:
        """Start a worker; `wait` is "ready", "settled" (ready or failed), "listening" or "none"."""
        n = len(self.started)
        log_path = self.tmp / f"worker-{n}.log"
        if unix_socket:
            where, port, sock = ["--socket", str(self.tmp / f"w{n}.sock")], None, self.tmp / f"w{n}.sock"
        else:
            port = free_port()
            where, sock = ["--port", str(port)], None
        with open(log_path, "wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "trestle.runtime", "--model-dir", str(model_dir), *where, *args],
                stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}, cwd=self.tmp,
            )
        worker = Worker(proc, log_path, port, sock)
        self.started.append(worker)
        if wait in ("listening", "settled", "ready"):
            worker.wait_listening()
        if wait == "settled":
            worker.wait_settled()
        if wait == "ready":
            worker.wait_ready()
        return worker

    def stop_all(self) -> None:
        for worker in self.started:
            worker.stop()


@pytest.fixture(scope="module")
def workers(tmp_path_factory) -> Workers:
    pool = Workers(tmp_path_factory.mktemp("workers"))
    yield pool
    pool.stop_all()


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory) -> Callable[..., Path]:
    """Write a model folder: `model_folder(source, config={...})` -> its path."""
    base = tmp_path_factory.mktemp("models")
    count = 0

    def write(source: str, config: dict | None = None) -> Path:
        nonlocal count
        count += 1
        folder = base / f"m{count}"
        (folder / "model").mkdir(parents=True)
        (folder / "config.yaml").write_text(json.dumps(config or {"model_name": f"m{count}"}))
        (folder / "model" / "model.py").write_text(textwrap.dedent(source))
        return folder

    return write


def assert_envelope(res: httpx.Response, status: int, *, type: str | None = None, param: str | None = None) -> str:
    """Check `res` is the error envelope with `status`; returns its message."""
    assert res.status_code == status, res.text
    body = res.json()
    assert set(body) == {"error"}, body
    assert set(body["error"]) == {"message", "type", "param", "code"}, body
    if type is not None:
        assert body["error"]["type"] == type, body
    assert body["error"]["param"] == param, body
    return body["error"]["message"]
