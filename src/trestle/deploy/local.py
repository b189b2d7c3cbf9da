"""Replicas as local worker processes on Unix sockets (the default backend).

Each replica is `python -m trestle.runtime --model-dir ... --socket ...` run by the gateway's
interpreter, or by the deployment's own virtualenv when its config.yaml lists `requirements`
(`prepare` builds it under the deployment's folder). The workers' output is appended to the
deployment log. The backend polls the worker's `/health` until it is ready or failed, restarts a
replica that dies after it was ready or stops answering its health check for the deployment's
`runtime.liveness_timeout` (e.g. a stopped or wedged process: it is killed, then restarted), and
reaches each replica through an `HTTPTransport` on its socket.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import os
import signal
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from trestle.deploy.backend import DeploymentSpec, ReadinessError, deployment_log, log_tail, wait_ready
from trestle.deploy.transport import HTTPTransport, Replica
from trestle.deploy.venv import BuildError, build_venv
from trestle.errors import UpstreamError

log = logging.getLogger("trestle.deploy")

STOP_GRACE_S = 10.0
RESTART_BACKOFF_S = 1.0
LIVENESS_INTERVAL_S = 5.0


@dataclass
class _Process:
    spec: DeploymentSpec
    index: int
    socket: Path
    proc: asyncio.subprocess.Process | None = None
    replica: Replica | None = None
    stopping: bool = False
    watcher: asyncio.Task | None = None
    liveness: asyncio.Task | None = None


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
    async def prepare(self, spec: DeploymentSpec) -> None:
        try:
            await build_venv(spec.home / "venv", list(spec.requirements), deployment_log(spec.home))
        except BuildError as exc:
            raise ReadinessError(exc.message) from None

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
            p.liveness = asyncio.create_task(self._check_liveness(p))
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
    @staticmethod
    def _python(spec: DeploymentSpec) -> str:
        if spec.requirements:
            return str(spec.home / "venv" / "bin" / "python")
        return sys.executable

    async def _launch(self, p: _Process) -> None:
        spec = p.spec
        p.socket.unlink(missing_ok=True)
        args = [
            self._python(spec), "-m", "trestle.runtime",
            "--model-dir", str(spec.source_dir),
            "--socket", str(p.socket),
            "--deployment-id", spec.deployment_id,
        ]
        if spec.environment:
            args += ["--environment", spec.environment]
        if spec.secrets:
            args += ["--secrets-file", str(self._write_secrets(p))]
        log_file = deployment_log(spec.home)
        with open(log_file, "ab") as out:
            p.proc = await asyncio.create_subprocess_exec(
                *args, stdout=out, stderr=out, stdin=asyncio.subprocess.DEVNULL,
                env={**os.environ, "PYTHONUNBUFFERED": "1", "TRESTLE_PARENT_PID": str(os.getpid())},
            )
        log.info("deployment %s replica %d: started pid %d", spec.deployment_id, p.index, p.proc.pid)
        name = f"deployment {spec.deployment_id}"
        replica = Replica(spec.deployment_id, p.index,
                          HTTPTransport.unix(str(p.socket), name, spec.request_timeout))

        def gone() -> str | None:
            if p.proc.returncode is None:
                return None
            return (f"worker exited with code {p.proc.returncode} before it was ready; "
                    f"last log lines:\n{log_tail(log_file)}")

        try:
            await wait_ready(replica, gone, listening=p.socket.exists)
        except BaseException:
            await replica.close()
            await self._stop_process(p)
            raise
        p.replica = replica

    def _write_secrets(self, p: _Process) -> Path:
        fd, path = tempfile.mkstemp(prefix=f"{p.spec.deployment_id}-secrets-", dir=self.run_dir)
        with os.fdopen(fd, "w") as f:  # mkstemp creates it 0600
            json.dump(p.spec.secrets, f)
        return Path(path)

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
                await p.replica.close()
                p.replica = None
            await asyncio.sleep(RESTART_BACKOFF_S)
            try:
                await self._launch(p)
            except ReadinessError as exc:
                log.error("deployment %s replica %d did not come back: %s",
                          p.spec.deployment_id, p.index, exc)
                return

    async def _check_liveness(self, p: _Process) -> None:
        """Kill a running replica that has not answered `/health` for `liveness_timeout` seconds;
        `_watch` then restarts it."""
        loop = asyncio.get_running_loop()
        timeout = p.spec.liveness_timeout
        interval = min(LIVENESS_INTERVAL_S, timeout / 3)
        last_answer = loop.time()
        while not p.stopping:
            await asyncio.sleep(interval)
            replica, proc = p.replica, p.proc
            if replica is None or proc is None or proc.returncode is not None:
                last_answer = loop.time()  # starting or restarting: the watcher's part
                continue
            try:
                async with asyncio.timeout(interval):
                    await (await replica.send("GET", "/health", [], b"")).read()
                last_answer = loop.time()
            except (UpstreamError, TimeoutError):
                if loop.time() - last_answer >= timeout and proc.returncode is None:
                    log.error("deployment %s replica %d has not answered its health check for %.0fs; "
                              "restarting it", p.spec.deployment_id, p.index, loop.time() - last_answer)
                    proc.kill()
                    last_answer = loop.time()

    async def _stop_process(self, p: _Process) -> None:
        p.stopping = True
        if p.liveness is not None and p.liveness is not asyncio.current_task():
            p.liveness.cancel()
        if p.watcher is not None and p.watcher is not asyncio.current_task():
            p.watcher.cancel()
        if p.replica is not None:
            await p.replica.close()
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
