"""Test support: a real `trestle serve` subprocess, and the real CLI as a subprocess.

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
from dataclasses import dataclass, field
from pathlib import Path

import httpx

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
