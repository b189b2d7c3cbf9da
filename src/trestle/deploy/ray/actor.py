"""One replica on a Ray cluster: a Ray actor that runs one worker process on its node.

`trestle.deploy.ray` creates one `ReplicaActor` per replica; Ray places it on a node with the
resources the deployment asks for. The actor unpacks the pushed folder (shipped through Ray's
object store as the gzip tar `trestle.deploy.build.package.pack` makes) into a folder of its own on
that node, starts `python -m trestle.runtime --model-dir ... --host NODE_IP --port N` with its
own interpreter (the deployment's `runtime_env`, when it has requirements), and reports the
worker's address: the gateway then sends requests straight to the worker over HTTP, as it does to
a local one, and Ray is not on the request path.

The worker is the actor's child and exits with it (`trestle.runtime.parent`): a replica killed by
Ray, or whose node left the cluster, leaves no worker behind. The actor keeps the last
`OUTPUT_BYTES` of the worker's output for the gateway, which copies it into the deployment log.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import shutil
import socket
import sys
import tarfile
import tempfile
from pathlib import Path

from trestle.deploy import stale
from trestle.deploy.processes import terminate

OUTPUT_BYTES = 256 * 1024  # the worker's output kept for the gateway to fetch


DIR_PREFIX = "trestle-ray-"
PID_FILE = "actor.pid"


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class ReplicaActor:
    """Runs one worker; the gateway calls `start`, then `exited` (which returns when the worker
    ends), `output` now and then, and `stop` (or `kill`, for one that stopped answering)."""

    def __init__(self, deployment_id: str, index: int):
        self.deployment_id = deployment_id
        self.index = index
        self._proc: asyncio.subprocess.Process | None = None
        self._dir: Path | None = None
        self._output = bytearray()
        self._dropped = 0  # bytes of output dropped from the front of `_output`
        self._pump: asyncio.Task | None = None

    async def start(self, folder: bytes, secrets: dict[str, str], environment: str | None) -> dict:
        """Unpack `folder` (the pushed folder, a gzip tar) and start the worker on it; return
        where it listens (`url`), its pid and the node. The gateway polls its `/health` for
        readiness. (The secrets are a call's argument, not the actor's: Ray keeps an actor's
        creation arguments for as long as the actor lives.)"""
        import ray

        node_ip = ray.util.get_node_ip_address()
        stale.remove_dead_run_dirs(DIR_PREFIX, PID_FILE)  # of actors killed before cleaning up
        self._dir = Path(tempfile.mkdtemp(prefix=f"{DIR_PREFIX}{self.deployment_id}-{self.index}-"))
        (self._dir / PID_FILE).write_text(f"{os.getpid()}\n")
        model_dir = self._dir / "src"
        model_dir.mkdir()
        with tarfile.open(fileobj=io.BytesIO(folder), mode="r:gz") as tar:
            tar.extractall(model_dir, filter="data")
        port = _free_port(node_ip)
        args = [sys.executable, "-m", "trestle.runtime", "--model-dir", str(model_dir),
                "--host", node_ip, "--port", str(port),
                "--deployment-id", self.deployment_id, "--replica", str(self.index)]
        if environment:
            args += ["--environment", environment]
        if secrets:
            path = self._dir / "secrets.json"
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                json.dump(secrets, f)
            args += ["--secrets-file", str(path)]  # the worker deletes it once read
        home = self._dir / "home"
        home.mkdir()
        env = {k: v for k, v in os.environ.items() if not k.startswith("TRESTLE_")}
        env.update(HOME=str(home), TRESTLE_PARENT_PID=str(os.getpid()), PYTHONUNBUFFERED="1")
        self._proc = await asyncio.create_subprocess_exec(
            *args, cwd=str(self._dir), env=env, stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        self._pump = asyncio.create_task(self._read_output())
        return {"url": f"http://{node_ip}:{port}", "pid": self._proc.pid, "node_ip": node_ip,
                "node_id": ray.get_runtime_context().get_node_id()}

    async def _read_output(self) -> None:
        while chunk := await self._proc.stdout.read(65536):
            self._output += chunk
            extra = len(self._output) - OUTPUT_BYTES
            if extra > 0:
                del self._output[:extra]
                self._dropped += extra

    async def exited(self) -> str:
        """Wait until the worker ends; say how."""
        code = await self._proc.wait()
        if self._pump is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._pump), 1.0)
            except (asyncio.TimeoutError, Exception):
                pass
        return f"exit code {code}"

    def output(self, offset: int) -> tuple[bytes, int]:
        """The worker's output from byte `offset` on (what is still kept), and the next offset."""
        start = max(offset - self._dropped, 0)
        data = bytes(self._output[start:])
        return data, self._dropped + len(self._output)

    def kill(self) -> None:
        """SIGKILL the worker (one that stopped answering: a stopped process ignores SIGTERM)."""
        if self._proc is not None and self._proc.returncode is None:
            try:
                self._proc.kill()
            except ProcessLookupError:
                pass

    async def stop(self) -> None:
        """SIGTERM the worker (it finishes what it was doing), SIGKILL it after a grace."""
        if self._proc is not None:
            await terminate(self._proc)
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
