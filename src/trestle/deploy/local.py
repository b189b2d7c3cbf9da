"""Replicas as local worker processes on Unix sockets (the default backend).

Each replica is `python -m trestle.runtime --model-dir ... --socket ...`, its output appended to
the deployment's log file. The backend polls the worker's `/health` until it is ready or failed,
restarts a replica that dies after it was ready, and keeps one pooled aiohttp session per replica.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import os
import signal
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from trestle.deploy.backend import DeploymentSpec, ReadinessError, Replica, worker_log_tail

log = logging.getLogger("trestle.deploy")

READY_TIMEOUT_S = 900.0
POLL_INTERVAL_S = 0.1
STOP_GRACE_S = 10.0
RESTART_BACKOFF_S = 1.0


@dataclass
class _Process:
    spec: DeploymentSpec
    index: int
    socket: Path
    proc: asyncio.subprocess.Process | None = None
    replica: Replica | None = None
    stopping: bool = False
    watcher: asyncio.Task | None = None


@dataclass
class _Deployment:
    spec: DeploymentSpec
    processes: list[_Process] = field(default_factory=list)
    cycle: itertools.cycle | None = None


class LocalProcessBackend:
    def __init__(self, run_dir: Path | None = None):
        # Unix socket paths are limited to ~107 bytes, so they live in a short temp dir.
        self.run_dir = Path(run_dir or tempfile.mkdtemp(prefix="trestle-"))
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._deployments: dict[str, _Deployment] = {}

    # -- ReplicaBackend ------------------------------------------------------------------------
    async def start(self, spec: DeploymentSpec) -> None:
        await self.stop(spec.deployment_id)
        dep = _Deployment(spec)
        self._deployments[spec.deployment_id] = dep
        dep.processes = [
            _Process(spec, i, self.run_dir / f"{spec.deployment_id}-{i}.sock")
            for i in range(max(spec.replicas, 1))
        ]
        try:
            await asyncio.gather(*(self._launch(p) for p in dep.processes))
        except BaseException:
            await self.stop(spec.deployment_id)
            raise
        for p in dep.processes:
            p.watcher = asyncio.create_task(self._watch(p))
        dep.cycle = itertools.cycle(dep.processes)

    async def stop(self, deployment_id: str) -> None:
        dep = self._deployments.pop(deployment_id, None)
        if dep is None:
            return
        await asyncio.gather(*(self._stop_process(p) for p in dep.processes))

    def replica(self, deployment_id: str) -> Replica | None:
        dep = self._deployments.get(deployment_id)
        if dep is None or dep.cycle is None:
            return None
        for _ in range(len(dep.processes)):
            p = next(dep.cycle)
            if p.replica is not None:
                return p.replica
        return None

    async def close(self) -> None:
        await asyncio.gather(*(self.stop(d) for d in list(self._deployments)))

    # -- processes -----------------------------------------------------------------------------
    async def _launch(self, p: _Process) -> None:
        spec = p.spec
        p.socket.unlink(missing_ok=True)
        args = [
            spec.python, "-m", "trestle.runtime",
            "--model-dir", str(spec.source_dir),
            "--socket", str(p.socket),
            "--deployment-id", spec.deployment_id,
        ]
        if spec.environment:
            args += ["--environment", spec.environment]
        if spec.secrets:
            args += ["--secrets-file", str(self._write_secrets(p))]
        spec.log_file.parent.mkdir(parents=True, exist_ok=True)
        with open(spec.log_file, "ab") as out:
            p.proc = await asyncio.create_subprocess_exec(
                *args, stdout=out, stderr=out, stdin=asyncio.subprocess.DEVNULL,
                env={**os.environ, "PYTHONUNBUFFERED": "1", "TRESTLE_PARENT_PID": str(os.getpid())},
            )
        log.info("deployment %s replica %d: started pid %d", spec.deployment_id, p.index, p.proc.pid)
        connector = aiohttp.UnixConnector(path=str(p.socket), limit=0, keepalive_timeout=60)
        session = aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=10),
            auto_decompress=False,
            skip_auto_headers=("User-Agent", "Accept-Encoding"),
        )
        try:
            await self._wait_ready(p, session)
        except BaseException:
            await session.close()
            raise
        p.replica = Replica(spec.deployment_id, p.index, session, "http://worker")

    def _write_secrets(self, p: _Process) -> Path:
        fd, path = tempfile.mkstemp(prefix=f"{p.spec.deployment_id}-secrets-", dir=self.run_dir)
        with os.fdopen(fd, "w") as f:  # mkstemp creates it 0600
            json.dump(p.spec.secrets, f)
        return Path(path)

    async def _wait_ready(self, p: _Process, session: aiohttp.ClientSession) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + READY_TIMEOUT_S
        while loop.time() < deadline:
            if p.proc.returncode is not None:
                raise ReadinessError(
                    f"worker exited with code {p.proc.returncode} before it was ready; "
                    f"last log lines:\n{worker_log_tail(p.spec.log_file)}"
                )
            if p.socket.exists():
                try:
                    async with session.get("http://worker/health") as resp:
                        body = await resp.json(content_type=None)
                    status = body.get("status")
                    if resp.status == 200 and status == "ready":
                        return
                    if status == "failed":
                        await self._stop_process(p)
                        raise ReadinessError(body.get("error") or "the model failed to load")
                except (aiohttp.ClientError, ValueError, OSError):
                    pass
            await asyncio.sleep(POLL_INTERVAL_S)
        await self._stop_process(p)
        raise ReadinessError(f"worker was not ready after {READY_TIMEOUT_S:.0f}s")

    async def _watch(self, p: _Process) -> None:
        """Restart a replica that dies while it should be serving."""
        while not p.stopping:
            code = await p.proc.wait()
            if p.stopping:
                return
            log.error(
                "deployment %s replica %d exited with code %s; restarting",
                p.spec.deployment_id, p.index, code,
            )
            if p.replica is not None:
                await p.replica.session.close()
                p.replica = None
            await asyncio.sleep(RESTART_BACKOFF_S)
            try:
                await self._launch(p)
            except ReadinessError as exc:
                log.error("deployment %s replica %d did not come back: %s",
                          p.spec.deployment_id, p.index, exc)
                return

    async def _stop_process(self, p: _Process) -> None:
        p.stopping = True
        if p.watcher is not None and p.watcher is not asyncio.current_task():
            p.watcher.cancel()
        if p.replica is not None:
            await p.replica.session.close()
            p.replica = None
        proc = p.proc
        if proc is not None and proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), STOP_GRACE_S)
            except asyncio.TimeoutError:
                proc.kill()
                await proc.wait()
        p.socket.unlink(missing_ok=True)
