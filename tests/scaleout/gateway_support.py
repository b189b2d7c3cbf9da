"""Throwaway services for the scale-out tests: redis-server on a free port, a model folder
that says which version it is and reports the tokens it was asked to, and gateways started at
the same moment.

    with throwaway_redis() as url:      # pytest.skip, saying why, where redis-server is missing
        ...
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from support import Server, free_port, stop_process, wait_for, wait_until_up

TALLY = '''
class Model:
    def __init__(self, **kwargs):
        pass

    def predict(self, model_input):
        return {"output": VERSION, "usage": {"total_tokens": int(model_input.get("tokens", 0))}}
'''


def tally_model(root: Path, name: str, version: str) -> Path:
    """A model folder whose predict answers `{"output": version, "usage": {"total_tokens": N}}`
    for `{"tokens": N}`."""
    folder = root / f"{name}-{version}"
    (folder / "model").mkdir(parents=True)
    (folder / "config.yaml").write_text(f"model_name: {name}\n")
    (folder / "model" / "model.py").write_text(f"VERSION = {version!r}\n{TALLY}")
    return folder


@contextlib.contextmanager
def throwaway_redis(port: int | None = None) -> Iterator[str]:
    """redis-server on a loopback port (default: a free one) and a temporary folder, stopped by
    its PID."""
    redis_server = shutil.which("redis-server")
    if redis_server is None:
        pytest.skip("redis-server is not installed (apt-get install redis-server; .ci/run does)")
    pytest.importorskip("redis", reason="redis-py is not installed (pip install -e '.[test]')")
    import redis

    root = Path(tempfile.mkdtemp(prefix="trestle-redis-"))
    port = port or free_port()
    proc = subprocess.Popen(
        [redis_server, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", str(root)],
        stdout=open(root / "log", "wb"), stderr=subprocess.STDOUT)
    url = f"redis://127.0.0.1:{port}/0"

    def answers() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"redis-server exited:\n{(root / 'log').read_text()}")
        try:
            return redis.Redis.from_url(url, socket_timeout=2).ping()
        except redis.ConnectionError:
            return False

    try:
        wait_for(answers, "redis-server to answer PING")
        yield url
    finally:
        stop_process(proc, grace=15)
        shutil.rmtree(root, ignore_errors=True)


def start_servers_together(homes: list[Path], *args: str, env: dict[str, str],
                           launched: Callable[[list[Server]], None] = lambda servers: None,
                           ) -> list[Server]:
    """`trestle serve` in each home, all launched before any is waited for (so they start at
    the same moment), then `launched(servers)`, then each waited for until its /health
    answers."""
    servers = []
    for home in homes:
        port = free_port()
        home.mkdir(parents=True, exist_ok=True)
        log = home / f"serve-{port}.log"
        proc = subprocess.Popen(
            [sys.executable, "-m", "trestle", "serve", "--port", str(port), *args],
            stdout=open(log, "ab"), stderr=subprocess.STDOUT,
            env={**os.environ, "TRESTLE_HOME": str(home), **env})
        servers.append(Server(f"http://127.0.0.1:{port}", home, proc, log, list(args)))
    try:
        launched(servers)
        for server in servers:
            wait_until_up(server.proc, f"{server.url}/health", server.log)
    except BaseException:
        for server in servers:
            server.stop()
        raise
    return servers
