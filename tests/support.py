"""Test support: a real `trestle serve` subprocess, and the real CLI as a subprocess.

`Worker`/`start_worker` run one worker process (`python -m trestle.runtime`) for the runtime and
engine tests; `wait_for` polls a condition up to a generous deadline.

`server` is the product as a user gets it from the README's first command: auth on, the built-in
SmolLM2 Model API deployed. Tests authenticate with the key `trestle serve` writes to
TRESTLE_HOME/admin_key, and push folders with the real `trestle push`.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
SLUG = "HuggingFaceTB/SmolLM2-135M-Instruct"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop_process(proc: subprocess.Popen, grace: float = 60) -> None:
    """SIGTERM, then SIGKILL if it has not ended after `grace` seconds."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def wait_until_up(proc: subprocess.Popen, url: str, log: Path, timeout: float = 300) -> None:
    """Poll `url` until it answers 200; fail with the process's log if it exits or never does."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args[:4]} exited {proc.returncode}:\n"
                               f"{log.read_text(errors='replace')[-5000:]}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    stop_process(proc)
    raise RuntimeError(f"{proc.args[:4]} did not come up:\n{log.read_text(errors='replace')[-5000:]}")


@dataclass
class Server:
    url: str
    home: Path
    proc: subprocess.Popen
    log: Path
    args: list[str] = field(default_factory=list)

    @property
    def api_key(self) -> str | None:
        path = self.home / "admin_key"
        return path.read_text().strip() if path.exists() else None

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Api-Key {self.api_key}"} if self.api_key else {}

    def env(self) -> dict[str, str]:
        env = {**os.environ, "TRESTLE_HOME": str(self.home), "TRESTLE_URL": self.url}
        env.pop("TRESTLE_API_KEY", None)
        return env

    def cli(self, *args: str, input: str | None = None, check: bool = True,
            timeout: float = 300) -> subprocess.CompletedProcess:
        """Run the real `trestle` CLI against this server."""
        res = subprocess.run([sys.executable, "-m", "trestle", *args], capture_output=True,
                             text=True, env=self.env(), input=input, timeout=timeout)
        if check and res.returncode != 0:
            raise AssertionError(f"trestle {' '.join(args)} failed ({res.returncode}):\n"
                                 f"{res.stdout}\n{res.stderr}")
        return res

    def cli_json(self, *args: str) -> dict:
        return json.loads(self.cli(*args, "--output", "json").stdout)

    def push(self, folder: Path | str, *extra: str) -> dict:
        res = self.cli("push", str(folder), "--output", "json", *extra)
        return json.loads(res.stdout)

    def client(self, **kwargs) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers=self.headers, timeout=120, **kwargs)

    def stop(self) -> None:
        stop_process(self.proc)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


def start_server(home: Path, *args: str, wait_for_slug: bool = False,
                 env: dict[str, str] | None = None) -> Server:
    port = free_port()
    home.mkdir(parents=True, exist_ok=True)
    log = home / f"serve-{port}.log"
    out = open(log, "ab")
    env = {**os.environ, "TRESTLE_HOME": str(home), **(env or {})}
    proc = subprocess.Popen(
        [sys.executable, "-m", "trestle", "serve", "--port", str(port), *args],
        stdout=out, stderr=subprocess.STDOUT, env=env,
    )
    server = Server(f"http://127.0.0.1:{port}", home, proc, log, list(args))
    wait_until_up(proc, f"{server.url}/health", log)
    deadline = time.monotonic() + 300
    if wait_for_slug:
        while time.monotonic() < deadline:
            models = httpx.get(f"{server.url}/v1/models", headers=server.headers, timeout=5).json()
            if any(m["id"] == SLUG for m in models.get("data", [])):
                break
            time.sleep(0.3)
        else:
            server.stop()
            raise RuntimeError(f"built-in model never became active:\n{server.log_text()}")
    return server


DEADLINE_S = 120


def log_entries(text: str) -> list[dict]:
    """The JSON lines of a worker's log (what the model prints is left out)."""
    entries = []
    for line in text.splitlines():
        if line.startswith("{"):
            try:
                entries.append(json.loads(line))
            except ValueError:
                pass
    return entries


def wait_for(predicate: Callable[[], object], what: str, deadline_s: float = DEADLINE_S) -> object:
    """Poll `predicate` until it returns something truthy; fail the test at the deadline.

    The deadline is a guard against a hang, never a timing assertion: keep it generous."""
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
    """A worker subprocess (`python -m trestle.runtime`) on a TCP port or a Unix socket."""

    proc: subprocess.Popen
    log_path: Path
    port: int | None = None
    socket_path: Path | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}" if self.port else "http://worker"

    def client(self, **kwargs) -> httpx.Client:
        transport = httpx.HTTPTransport(uds=str(self.socket_path)) if self.socket_path else None
        return httpx.Client(base_url=self.url, transport=transport, timeout=120, **kwargs)

    def openai(self, **kwargs):
        """The official openai client pointed at this worker (TCP workers only)."""
        import openai

        return openai.OpenAI(base_url=f"{self.url}/v1", api_key="unused", max_retries=0,
                             timeout=120, **kwargs)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def health(self) -> httpx.Response | None:
        """GET /health, or None while nothing listens yet."""
        try:
            with self.client() as c:
                return c.get("/health")
        except httpx.TransportError:
            return None

    def stats(self) -> dict:
        """The body of /health (an engine worker adds the scheduler's counters once ready)."""
        res = self.health()
        assert res is not None, f"the worker does not answer:\n{self.log()[-5000:]}"
        return res.json()

    def wait_listening(self) -> httpx.Response:
        def answered():
            if self.proc.poll() is not None:
                raise AssertionError(f"worker exited {self.proc.returncode}:\n{self.log()[-5000:]}")
            return self.health()

        return wait_for(answered, "the worker to listen")

    def wait_settled(self) -> httpx.Response:
        """Wait until /health says ready or failed; returns that response."""
        return wait_for(
            lambda: (r := self.health()) is not None and r.json()["status"] != "loading" and r,
            "the model to finish loading",
        )

    def wait_ready(self) -> None:
        body = self.wait_settled().json()
        assert body["status"] == "ready", f"{body}\n{self.log()[-5000:]}"

    def wait(self, until: str) -> None:
        """`until` is "ready", "settled" (ready or failed), "listening" or "none"."""
        if until in ("listening", "settled", "ready"):
            self.wait_listening()
        if until == "settled":
            self.wait_settled()
        if until == "ready":
            self.wait_ready()

    def stop(self) -> None:
        stop_process(self.proc, grace=15)


def start_worker(model_dir: Path | str, log_path: Path, *args: str, socket_path: Path | None = None,
                 env: dict | None = None, cwd: Path | None = None, wait: str = "ready") -> Worker:
    """Start `python -m trestle.runtime --model-dir DIR` on a free TCP port (or `socket_path`),
    then `worker.wait(wait)`; a worker that fails that wait is stopped."""
    if socket_path is not None:
        port, where = None, ["--socket", str(socket_path)]
    else:
        port = free_port()
        where = ["--port", str(port)]
    with open(log_path, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "trestle.runtime", "--model-dir", str(model_dir), *where, *args],
            stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}, cwd=cwd,
        )
    worker = Worker(proc, log_path, port, socket_path)
    try:
        worker.wait(wait)
    except BaseException:
        worker.stop()
        raise
    return worker


def worker_pids(deployment_id: str) -> list[int]:
    """Host pids of the processes running a deployment's workers (seen from outside any sandbox:
    the sandbox's launchers too, whose command lines hold the worker's)."""
    from trestle.deploy.stale import worker_processes

    return [pid for pid, args in worker_processes() if deployment_id.encode() in args]


# -- /metrics, read with prometheus-client's own parser ---------------------------------------------
def scrape(server) -> dict[str, list]:
    """{metric family name: its samples}, as the parser reads them."""
    text = httpx.get(f"{server.url}/metrics", timeout=30).text
    return {f.name: f.samples for f in text_string_to_metric_families(text)}


def samples(families, name: str, **labels) -> list:
    """The samples of family `name`, or those named `name` (e.g. `..._count`), with these labels."""
    pool = families.get(name)
    if pool is None:
        pool = [s for family in families.values() for s in family if s.name == name]
    return [s for s in pool if all(s.labels.get(k) == v for k, v in labels.items())]


def value(families, name: str, **labels) -> float:
    return sum(s.value for s in samples(families, name, **labels))


def metric(server, name: str, **labels) -> float:
    """One reading of `name` (a family or sample name) summed over the samples with `labels`."""
    return value(scrape(server), name, **labels)
