"""The worker as a real subprocess: `python -m trestle.runtime --model-dir DIR --port N|--socket P`.

`workers` starts workers (tests/support.py's `Worker`) for one test module and stops them at its
end; `model_folder` writes a tiny model folder inline (config.yaml + model/model.py) for contract
cases that are not worth an example. Waits are deadline guards (a hung worker fails the test), never timing assertions.
"""

from __future__ import annotations

import json
import textwrap
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from support import Worker, start_worker


class Workers:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.started: list[Worker] = []

    def start(self, model_dir: Path | str, *args: str, unix_socket: bool = False, env: dict | None = None,
              wait: str = "ready") -> Worker:
        """Start a worker; `wait` is "ready", "settled" (ready or failed), "listening" or "none"."""
        n = len(self.started)
        worker = start_worker(model_dir, self.tmp / f"worker-{n}.log", *args, env=env, cwd=self.tmp,
                              socket_path=self.tmp / f"w{n}.sock" if unix_socket else None,
                              wait="none")
        self.started.append(worker)
        worker.wait(wait)
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


def assert_truss_error(res: httpx.Response, status: int, code: str) -> str:
    """Check `res` is Truss's error shape (a model's Truss routes: /predict, ...) with `status`
    and Baseten's error code `code` (700 client, 600 model code, 500 trestle); returns the message."""
    assert res.status_code == status, res.text
    body = res.json()
    assert set(body) == {"error"} and isinstance(body["error"], str), body
    assert res.headers["x-baseten-error-source"] == "04", res.headers
    assert res.headers["x-baseten-error-code"] == code, res.headers
    return body["error"]


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
