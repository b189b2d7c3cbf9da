"""Replicas as local worker processes on Unix sockets (the default backend).

Each replica is `python -m trestle.runtime --model-dir ... --socket ...` run by the gateway's
interpreter, or by the deployment's own virtualenv when its config.yaml lists `requirements`
(`prepare` builds it under the deployment's folder), inside a bubblewrap sandbox with a scrubbed
environment (`trestle.deploy.sandbox`). The workers' output is pumped into the deployment log,
rotated by size (`trestle.deploy.logfile`). The backend polls the worker's `/health` until it is
ready or failed, restarts a replica that dies after it was ready or stops answering its health
check for the deployment's `runtime.liveness_timeout` (e.g. a stopped or wedged process: it is
killed, then restarted), and reaches each replica through an `HTTPTransport` on its socket.
Sockets live in a run folder, `/tmp/trestle-*`, one folder per replica; it is removed on close,
and a dead gateway's (its pid is inside) on start.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import os
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from trestle.deploy import logfile, sandbox, stale
from trestle.deploy.backend import DeploymentSpec, ReadinessError, deployment_log, log_tail, wait_ready
from trestle.deploy.transport import HTTPTransport, Replica
from trestle.deploy.venv import BuildError, build_venv
from trestle.errors import UpstreamError
from trestle.metrics import Metrics
from trestle.protocol.health import WorkerState, reported

log = logging.getLogger("trestle.deploy")

STOP_GRACE_S = 10.0
RESTART_BACKOFF_S = 1.0
LIVENESS_INTERVAL_S = 5.0


RUN_PREFIX = "trestle-"
PID_FILE = "gateway.pid"


def remove_stale_run_dirs(parent: Path | None = None) -> list[Path]:
    """Remove the run folders (`/tmp/trestle-*`) of gateways that are no longer running (killed
    before they could clean up); a folder without a gateway's pid in it is left alone."""
    removed = []
    for path in Path(parent or tempfile.gettempdir()).glob(f"{RUN_PREFIX}*"):
        try:
            pid = int((path / PID_FILE).read_text().strip())
        except (OSError, ValueError):
            continue
        if _alive(pid):
            continue
        stale.stop_workers_of(path)  # any of its workers that outlived it
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path)
    if removed:
        log.info("removed %d run folder(s) left by gateways that are gone", len(removed))
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


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
    pump: asyncio.Task | None = None  # the worker's output into the deployment log
    out_of_rotation: bool = False  # reported unhealthy: no new requests until it is restarted
    restart_reason: str | None = None  # why the supervisor stopped it (metrics); None: it crashed


@dataclass
class _Deployment:
    spec: DeploymentSpec
    processes: list[_Process] = field(default_factory=list)
    cycle: itertools.cycle | None = None


class LocalProcessBackend:
    metrics: Metrics | None = None  # the gateway's (trestle.metrics): cold starts, restarts

    def __init__(self, run_dir: Path | None = None, *,
                 log_max_bytes: int = logfile.DEFAULT_MAX_BYTES,
                 log_backups: int = logfile.DEFAULT_BACKUPS):
        self.log_max_bytes = log_max_bytes
        self.log_backups = log_backups
        self._logs: dict[Path, logfile.RotatingLog] = {}
        remove_stale_run_dirs()
        # Unix socket paths are limited to ~107 bytes, so they live in a short temp dir, one
        # folder per replica in it, and the gateway's pid (to tell a dead run's from a live one's).
        self._own_run_dir = run_dir is None
        self.run_dir = Path(run_dir or tempfile.mkdtemp(prefix=RUN_PREFIX))
        self.run_dir.mkdir(parents=True, exist_ok=True)
        (self.run_dir / PID_FILE).write_text(f"{os.getpid()}\n")
        self._deployments: dict[str, _Deployment] = {}
        box = sandbox.detect()
        (log.info if box.enabled else log.warning)("%s", box.describe())

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
            _Process(spec, i, self.run_dir / f"{spec.deployment_id}-{i}" / "w.sock")
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
        out = self._logs.pop(deployment_log(dep.spec.home), None)
        if out is not None:
            out.close()

    def replica(self, deployment_id: str) -> Replica | None:
        dep = self._deployments.get(deployment_id)
        if dep is None or dep.cycle is None:
            return None
        for _ in range(len(dep.processes)):
            p = next(dep.cycle)
            if p.replica is not None and not p.out_of_rotation:
                return p.replica
        return None

    def replicas(self, deployment_id: str) -> list[Replica]:
        """Every ready replica of the deployment (for scraping their counters)."""
        dep = self._deployments.get(deployment_id)
        return [p.replica for p in dep.processes if p.replica is not None] if dep else []

    def replica_states(self) -> dict[str, dict[str, int]]:
        """{deployment id: {state: how many replicas}}: ready, starting, restarting."""
        out: dict[str, dict[str, int]] = {}
        for deployment_id, dep in self._deployments.items():
            counts = out.setdefault(deployment_id, {})
            for p in dep.processes:
                if p.replica is not None:
                    state = "unhealthy" if p.out_of_rotation else "ready"
                elif p.proc is not None and p.proc.returncode is not None:
                    state = "restarting"
                else:
                    state = "starting"
                counts[state] = counts.get(state, 0) + 1
        return out

    async def close(self) -> None:
        await asyncio.gather(*(self.stop(d) for d in list(self._deployments)))
        for out in self._logs.values():
            out.close()
        if self._own_run_dir:
            shutil.rmtree(self.run_dir, ignore_errors=True)
        else:
            (self.run_dir / PID_FILE).unlink(missing_ok=True)

    # -- processes -----------------------------------------------------------------------------
    @staticmethod
    def _python(spec: DeploymentSpec) -> str:
        if spec.requirements:
            return str(spec.home / "venv" / "bin" / "python")
        return sys.executable

    async def _launch(self, p: _Process) -> None:
        spec = p.spec
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
        args = sandbox.command(box, args, deployment_id=spec.deployment_id, folder=spec.home,
                               home=home, writable=p.socket.parent)
        # Inside the sandbox the worker's parent is the sandbox's first process (pid 1).
        parent = "1" if box.enabled else str(os.getpid())
        log_file = deployment_log(spec.home)
        launched = time.monotonic()
        p.proc = await asyncio.create_subprocess_exec(
            *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
            stdin=asyncio.subprocess.DEVNULL, env=sandbox.worker_env(home, parent),
        )
        p.pump = asyncio.create_task(self._pump(p.proc.stdout, log_file))
        log.info("deployment %s replica %d: started pid %d", spec.deployment_id, p.index, p.proc.pid)
        name = f"deployment {spec.deployment_id}"
        replica = Replica(spec.deployment_id, p.index,
                          HTTPTransport.unix(str(p.socket), name, spec.request_timeout))

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

        try:
            await wait_ready(replica, gone, listening=p.socket.exists)
        except BaseException:
            await replica.close()
            await self._stop_process(p)
            raise
        p.replica = replica
        p.out_of_rotation = False
        if self.metrics is not None:
            self.metrics.cold_start(spec.model_id, spec.deployment_id, time.monotonic() - launched)

    async def _pump(self, stream: asyncio.StreamReader, path: Path) -> None:
        """Copy a worker's output into its deployment's log, rotating it by size."""
        out = self._logs.get(path)
        if out is None:
            out = self._logs[path] = logfile.RotatingLog(path, self.log_max_bytes, self.log_backups)
        while chunk := await stream.read(logfile.BLOCK):
            out.write(chunk)

    def _write_secrets(self, p: _Process) -> Path:
        fd, path = tempfile.mkstemp(prefix="secrets-", dir=p.socket.parent)
        with os.fdopen(fd, "w") as f:  # mkstemp creates it 0600
            json.dump(p.spec.secrets, f)
        sandbox.give(Path(path), p.spec.deployment_id)
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
            if self.metrics is not None:
                self.metrics.replica_restart(p.spec.model_id, p.spec.deployment_id,
                                             p.restart_reason or "crashed")
            p.restart_reason = None
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
                    body = await (await replica.send("GET", "/health", [], b"")).read()
                last_answer = loop.time()
                health = reported(body)
                if health is not None and health.status is WorkerState.UNHEALTHY and not p.out_of_rotation:
                    self._restart_unhealthy(p, health.error)
            except (UpstreamError, TimeoutError):
                if loop.time() - last_answer >= timeout and proc.returncode is None:
                    log.error("deployment %s replica %d has not answered its health check for %.0fs; "
                              "restarting it", p.spec.deployment_id, p.index, loop.time() - last_answer)
                    p.restart_reason = "unresponsive"
                    proc.kill()
                    last_answer = loop.time()

    def _restart_unhealthy(self, p: _Process, reason: str | None) -> None:
        """The model's is_healthy() kept failing: no new requests to it, and a graceful stop
        (the requests it has finish); `_watch` then starts it again."""
        p.out_of_rotation = True
        p.restart_reason = "unhealthy"
        log.error("deployment %s replica %d is unhealthy (%s); out of rotation, restarting it",
                  p.spec.deployment_id, p.index, reason)
        proc = p.proc
        try:
            os.kill(sandbox.signal_target(proc.pid), signal.SIGTERM)
        except ProcessLookupError:
            pass

        def kill_if_running() -> None:
            if proc.returncode is None:
                proc.kill()

        asyncio.get_running_loop().call_later(STOP_GRACE_S, kill_if_running)

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
            try:
                os.kill(sandbox.signal_target(proc.pid), signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                await asyncio.wait_for(proc.wait(), STOP_GRACE_S)
            except asyncio.TimeoutError:
                proc.kill()
                await proc.wait()
        if p.pump is not None and p.pump is not asyncio.current_task():
            try:  # its last lines into the log
                await asyncio.wait_for(asyncio.shield(p.pump), 2.0)
            except (asyncio.TimeoutError, Exception):
                p.pump.cancel()
        p.socket.unlink(missing_ok=True)
        shutil.rmtree(p.socket.parent, ignore_errors=True)
