"""Helpers for tests of replicas on a real `trestle serve` (local processes or Ray): a tiny model
folder with its scaling, a deployment's record and ready replicas, and load from threads."""

from __future__ import annotations

import shutil
import threading
from collections.abc import Callable
from pathlib import Path

import httpx
import yaml

from support import Server

TINY = Path(__file__).resolve().parent / "lifecycle" / "models" / "tiny"


def tiny(into: Path, name: str, version: str = "v1", **scaling) -> Path:
    """A copy of the tiny model named `name`, answering `version`, with `scaling` in its config."""
    dest = into / f"{name}-{version}"
    shutil.copytree(TINY, dest)
    config = yaml.safe_load((dest / "config.yaml").read_text())
    config["model_name"] = name
    if scaling:
        config["scaling"] = scaling
    (dest / "config.yaml").write_text(yaml.safe_dump(config))
    code = dest / "model" / "model.py"
    code.write_text(code.read_text().replace('VERSION = "v1"', f'VERSION = "{version}"'))
    return dest


def deployment(srv: Server, dep_id: str) -> dict:
    with srv.client() as http:
        resp = http.get(f"/api/v1/deployments/{dep_id}")
    assert resp.status_code == 200, resp.text
    return resp.json()


def ready(srv: Server, dep_id: str) -> list[dict]:
    return [r for r in deployment(srv, dep_id)["replicas"] or [] if r["state"] == "ready"]


class Load:
    """Threads sending requests in a loop until stopped; every outcome is recorded."""

    def __init__(self, srv: Server, url: str, bodies: list[dict], threads: int = 4):
        self.srv, self.url, self.bodies = srv, url, bodies
        self.results: list[tuple[int, str]] = []  # (status, body text)
        self.errors: list[str] = []  # transport errors (a hang ends as a timeout here)
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run, args=(i,)) for i in range(threads)]

    def _run(self, i: int) -> None:
        with httpx.Client(base_url=self.srv.url, headers=self.srv.headers, timeout=60) as http:
            n = i
            while not self._stop.is_set():
                body = self.bodies[n % len(self.bodies)]
                n += 1
                try:
                    resp = http.post(self.url, json=body)
                    outcome = (resp.status_code, resp.text)
                except httpx.HTTPError as exc:
                    with self._lock:
                        self.errors.append(repr(exc))
                    continue
                with self._lock:
                    self.results.append(outcome)

    def count(self, predicate: Callable[[tuple[int, str]], bool] = lambda r: True) -> int:
        with self._lock:
            return sum(1 for r in self.results if predicate(r))

    def __enter__(self) -> "Load":
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(120)
        assert not any(t.is_alive() for t in self._threads), "a request hung"
