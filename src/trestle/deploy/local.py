"""Replicas as local worker processes on Unix sockets (the default backend).

Each replica is `python -m trestle.runtime --model-dir ... --socket ...` run by the gateway's
interpreter, or by the deployment's own virtualenv when its config.yaml lists `requirements`
(`prepare` builds it under the deployment's folder), inside a bubblewrap sandbox with a scrubbed
environment (`trestle.deploy.sandbox`). The workers' output is pumped into the deployment log in
batches (`trestle.deploy.logs.pump`), rotated by size (`trestle.deploy.logs.logfile`). The backend
launches one worker at a time for the deployment's `ReplicaSet` (`trestle.deploy.replicas`:
balancing, restarts, autoscaling): it polls the worker's `/health` until it is ready or failed,
kills one that stops answering its health check for the deployment's `runtime.liveness_timeout`
(a stopped or wedged process; the replica set then restarts it), and reaches each worker through
an `HTTP1Transport` on its socket.
Sockets live in a run folder, `/tmp/trestle-*`, one folder per replica; it is removed on close,
and a dead gateway's (its pid is inside) on start.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import json
import logging
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from trestle.deploy import sandbox, stale
from trestle.deploy.processes import STOP_GRACE_S, terminate
from trestle.deploy.logs import logfile
from trestle.deploy.logs.pump import output_pipe, pump
from trestle.deploy.backend import DeploymentSpec, ReadinessError, deployment_log, log_tail, wait_ready
from trestle.deploy.replica_sets import ReplicaSets, watch_health
from trestle.deploy.http1 import HTTP1Transport
from trestle.deploy.transport import Replica
from trestle.deploy.build.commands import run_build_commands
from trestle.deploy.build.requirements import read_requirements
from trestle.deploy.build.venv import BuildError, build_venv, venv_python
from trestle.metrics import Metrics

log = logging.getLogger("trestle.deploy")

RUN_PREFIX = "trestle-"
PID_FILE = "gateway.pid"


def remove_stale_run_dirs(parent: Path | None = None) -> list[Path]:
    """Remove the run folders (`/tmp/trestle-*`) of gateways that are no longer running (killed
    before they could clean up), and stop any of their workers that outlived them."""
    return stale.remove_dead_run_dirs(RUN_PREFIX, PID_FILE, parent)


@dataclass(eq=False)
class _Process:
    """One worker process: a `Launched` replica of `trestle.deploy.replicas`."""

    spec: DeploymentSpec
    index: int
    socket: Path
    proc: asyncio.subprocess.Process | None = None
    replica: Replica | None = None
    stopping: bool = False
    liveness: asyncio.Task | None = None
    pump: asyncio.Task | None = None  # the worker's output into the deployment log
    out_of_rotation: bool = False  # reported unhealthy: no new requests until it is restarted
    restart_reason: str | None = None  # why the supervisor stopped it (metrics); None: it crashed
    metrics: Metrics | None = None  # the gateway's: restarts are counted there

    @property
    def pid(self) -> int | None:
        """The worker's own process (inside the sandbox's, when there is one)."""
        if self.proc is None or self.proc.returncode is not None:
            return None
        return sandbox.signal_target(self.proc.pid)

    async def exited(self) -> str:
        code = await self.proc.wait()
        if self.metrics is not None and not self.stopping:
            self.metrics.replica_restart(self.spec.model_id, self.spec.deployment_id,
                                         self.restart_reason or "crashed")
        if self.pump is not None:
            try:  # its last words into the log
                await asyncio.wait_for(asyncio.shield(self.pump), 1.0)
            except (asyncio.TimeoutError, Exception):
                pass
        return f"exit code {code}"

    async def stop(self) -> None:
        self.stopping = True
        if self.liveness is not None and self.liveness is not asyncio.current_task():
            self.liveness.cancel()
        if self.replica is not None:
            await self.replica.close()
        if self.proc is not None:
            await terminate(self.proc, signal_pid=sandbox.signal_target(self.proc.pid))
        if self.pump is not None and self.pump is not asyncio.current_task():
            try:  # its last lines into the log
                await asyncio.wait_for(asyncio.shield(self.pump), 2.0)
            except (asyncio.TimeoutError, Exception):
                self.pump.cancel()
        self.socket.unlink(missing_ok=True)
        shutil.rmtree(self.socket.parent, ignore_errors=True)


class LocalProcessBackend(ReplicaSets):
    def __init__(self, run_dir: Path | None = None, *,
                 log_max_bytes: int = logfile.DEFAULT_MAX_BYTES,
                 log_backups: int = logfile.DEFAULT_BACKUPS):
        super().__init__(log_max_bytes=log_max_bytes, log_backups=log_backups)
        remove_stale_run_dirs()
        # Unix socket paths are limited to ~107 bytes, so they live in a short temp dir, one
        # folder per replica in it, and the gateway's pid (to tell a dead run's from a live one's).
        self._own_run_dir = run_dir is None
        self.run_dir = Path(run_dir or tempfile.mkdtemp(prefix=RUN_PREFIX))
        self.run_dir.mkdir(parents=True, exist_ok=True)
        (self.run_dir / PID_FILE).write_text(f"{os.getpid()}\n")
        self._venvs: dict[str, Path] = {}  # deployment id -> its virtualenv (trestle.deploy.build.venv)
        box = sandbox.detect()
        (log.info if box.enabled else log.warning)("%s", box.describe())

    # -- ReplicaBackend ------------------------------------------------------------------------
    async def prepare(self, spec: DeploymentSpec) -> None:
        reqs = read_requirements(spec.source_dir, list(spec.requirements), spec.requirements_file)
        if spec.build_commands:  # they may change the venv: it must be the deployment's own
            reqs = dataclasses.replace(reqs, shareable=False)
        # Shared venvs sit beside the deployments' folders, keyed by their requirements.
        cache = spec.home.parent / ".venvs"
        log_file = deployment_log(spec.home)
        try:
            venv = await build_venv(cache, reqs, spec.source_dir, log_file, own=spec.home / "venv")
            self._venvs[spec.deployment_id] = venv
            await run_build_commands(list(spec.build_commands), deployment_id=spec.deployment_id,
                                     home=spec.home, source_dir=spec.source_dir, venv=venv,
                                     log_file=log_file)
        except BuildError as exc:
            raise ReadinessError(exc.message) from None

    async def start(self, spec: DeploymentSpec,
                    on_failed: Callable[[str], object] | None = None) -> None:
        await self.stop(spec.deployment_id)
        await self.start_set(spec, functools.partial(self._launch, spec), on_failed)

    async def close(self) -> None:
        await self.close_sets()
        if self._own_run_dir:
            shutil.rmtree(self.run_dir, ignore_errors=True)
        else:
            (self.run_dir / PID_FILE).unlink(missing_ok=True)

    # -- processes -----------------------------------------------------------------------------
    def _python(self, spec: DeploymentSpec) -> str:
        venv = self._venvs.get(spec.deployment_id)
        return str(venv_python(venv)) if venv is not None else sys.executable

    async def _launch(self, spec: DeploymentSpec, index: int) -> _Process:
        """Start worker `index` of the deployment; return it once it is ready."""
        p = _Process(spec, index, self.run_dir / f"{spec.deployment_id}-{index}" / "w.sock")
        p.metrics = self.metrics
        shutil.rmtree(p.socket.parent, ignore_errors=True)  # a previous life's socket and secrets
        # The replica's own folder for its socket (and secrets file): the only one of the run
        # folder the worker can reach; its home, beside the pushed folder.
        p.socket.parent.mkdir(mode=0o700, exist_ok=True)
        sandbox.give(p.socket.parent, spec.deployment_id)
        sandbox.share(spec.source_dir)
        home = spec.home / "home"
        home.mkdir(exist_ok=True)
        sandbox.give(home, spec.deployment_id)
        args = [
            self._python(spec), "-m", "trestle.runtime",
            "--model-dir", str(spec.source_dir),
            "--socket", str(p.socket),
            "--deployment-id", spec.deployment_id,
            "--replica", str(p.index),
        ]
        if spec.environment:
            args += ["--environment", spec.environment]
        if spec.secrets:
            args += ["--secrets-file", str(self._write_secrets(p))]
        box = sandbox.detect()
        venv = self._venvs.get(spec.deployment_id)
        args = sandbox.command(box, args, deployment_id=spec.deployment_id, folder=spec.home,
                               home=home, writable=p.socket.parent,
                               readable=[venv] if venv is not None else [])
        # Inside the sandbox the worker's parent is the sandbox's first process (pid 1).
        parent = "1" if box.enabled else str(os.getpid())
        log_file = deployment_log(spec.home)
        launched = time.monotonic()
        read_end, write_end = output_pipe()
        try:
            p.proc = await asyncio.create_subprocess_exec(
                *args, stdout=write_end, stderr=write_end,
                stdin=asyncio.subprocess.DEVNULL, env=sandbox.worker_env(home, parent),
            )
        except BaseException:
            os.close(read_end)
            raise
        finally:
            os.close(write_end)  # the worker's copy is its own: end of file when it exits
        p.pump = asyncio.create_task(pump(read_end, self.log_for(log_file)))
        log.info("deployment %s replica %d: started pid %d", spec.deployment_id, p.index, p.proc.pid)
        name = f"deployment {spec.deployment_id}"
        replica = Replica(spec.deployment_id, p.index,
                          HTTP1Transport.unix(str(p.socket), name, spec.request_timeout))

        exited_at: list[float] = []

        def gone() -> str | None:
            if p.proc.returncode is None:
                return None
            # Its last words may still be on the way to the log (a second at most).
            exited_at[:] = exited_at or [time.monotonic()]
            if not p.pump.done() and time.monotonic() - exited_at[0] < 1.0:
                return None
            return (f"worker exited with code {p.proc.returncode} before it was ready; "
                    f"last log lines:\n{log_tail(log_file)}")

        p.replica = replica
        try:
            await wait_ready(replica, gone, listening=p.socket.exists)
        except BaseException:
            await p.stop()
            raise
        if self.metrics is not None:
            self.metrics.cold_start(spec.model_id, spec.deployment_id, time.monotonic() - launched)
        p.liveness = asyncio.create_task(self._check_liveness(p))
        return p

    def _write_secrets(self, p: _Process) -> Path:
        fd, path = tempfile.mkstemp(prefix="secrets-", dir=p.socket.parent)
        with os.fdopen(fd, "w") as f:  # mkstemp creates it 0600
            json.dump(p.spec.secrets, f)
        sandbox.give(Path(path), p.spec.deployment_id)
        return Path(path)

    async def _check_liveness(self, p: _Process) -> None:
        """Kill a running replica that has not answered `/health` for `liveness_timeout` seconds,
        stop one that says it is unhealthy; its replica set then restarts it."""
        def running() -> Replica | None:
            proc = p.proc
            return p.replica if proc is not None and proc.returncode is None else None

        async def act(reason: str, why: str | None) -> bool:
            proc = p.proc
            if reason == "unhealthy":
                if not p.out_of_rotation:
                    self._restart_unhealthy(p, why)
            elif proc is not None and proc.returncode is None:
                log.error("deployment %s replica %d %s; restarting it",
                          p.spec.deployment_id, p.index, why)
                p.restart_reason = "unresponsive"
                proc.kill()
            return False  # the same process object watches its next run too

        await watch_health(p.spec, running, lambda: p.stopping, act)

    def _restart_unhealthy(self, p: _Process, reason: str | None) -> None:
        """The model's is_healthy() kept failing: no new requests to it, and a graceful stop
        (the requests it has finish); its replica set then starts it again."""
        p.out_of_rotation = True
        p.restart_reason = "unhealthy"
        log.error("deployment %s replica %d is unhealthy (%s); out of rotation, restarting it",
                  p.spec.deployment_id, p.index, reason)
        replicas = self._deployments.get(p.spec.deployment_id)
        if replicas is not None:
            replicas.take_out(p)
        proc = p.proc
        try:
            os.kill(sandbox.signal_target(proc.pid), signal.SIGTERM)
        except ProcessLookupError:
            pass

        def kill_if_running() -> None:
            if proc.returncode is None:
                proc.kill()

        asyncio.get_running_loop().call_later(STOP_GRACE_S, kill_if_running)
