"""What every replica backend that runs `ReplicaSet`s keeps: the deployments' replica sets and
their log files.

    class LocalProcessBackend(ReplicaSets):
        async def start(self, spec, on_failed=None):
            await self.start_set(spec, functools.partial(self._launch, spec), on_failed)

A subclass supplies how one replica starts (`launch(index)`, given to `start_set`), may add what it
keeps per deployment (`forget` drops it when the deployment stops) and what `replicas` says about
each (`describe_slot`); balancing, scaling, draining and restarts are the `ReplicaSet`'s.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from trestle.deploy.logs import logfile
from trestle.deploy.backend import DeploymentSpec, deployment_log, log_tail
from trestle.deploy.config import ScalingConfig
from trestle.deploy.replicas import ReplicaSet
from trestle.deploy.transport import Replica
from trestle.errors import Unavailable, UpstreamError
from trestle.metrics import Metrics
from trestle.protocol.health import WorkerState, reported

LIVENESS_INTERVAL_S = 5.0  # at most; a short liveness_timeout polls at a third of it


async def watch_health(spec: DeploymentSpec, current: Callable[[], Replica | None],
                       stopping: Callable[[], bool],
                       act: Callable[[str, str | None], Awaitable[bool]]) -> None:
    """Poll a replica's `/health` until `stopping()`: `act("unhealthy", error)` when the model
    says it is unhealthy, `act("unresponsive", why)` when it has not answered for the deployment's
    `liveness_timeout` (no answer, refused, or too slow); watching ends when `act` returns True.
    `current()` is the replica to ask, None while it starts or restarts (not counted)."""
    loop = asyncio.get_running_loop()
    timeout = spec.liveness_timeout
    interval = min(LIVENESS_INTERVAL_S, timeout / 3)
    last_answer = loop.time()
    while not stopping():
        await asyncio.sleep(interval)
        replica = current()
        if replica is None:
            last_answer = loop.time()
            continue
        try:
            async with asyncio.timeout(interval):
                body = await (await replica.send("GET", "/health", [], b"")).read()
        except (UpstreamError, Unavailable, TimeoutError):
            silent = loop.time() - last_answer
            if silent >= timeout and not stopping():
                last_answer = loop.time()
                if await act("unresponsive", f"has not answered its health check for {silent:.0f}s"):
                    return
            continue
        last_answer = loop.time()
        health = reported(body)
        if health is not None and health.status is WorkerState.UNHEALTHY:
            if await act("unhealthy", health.error):
                return


class ReplicaSets:
    metrics: Metrics | None = None  # the gateway's (trestle.metrics): cold starts, restarts

    def __init__(self, *, log_max_bytes: int = logfile.DEFAULT_MAX_BYTES,
                 log_backups: int = logfile.DEFAULT_BACKUPS):
        self.log_max_bytes = log_max_bytes
        self.log_backups = log_backups
        self._deployments: dict[str, ReplicaSet] = {}
        self._logs: dict[Path, logfile.RotatingLog] = {}

    async def start_set(self, spec: DeploymentSpec, launch: Callable[[int], Awaitable[Any]],
                        on_failed: Callable[[str], object] | None) -> None:
        """The deployment's replica set, started (its minimum of replicas ready)."""
        log_file = deployment_log(spec.home)
        replicas = ReplicaSet(spec, launch, on_failed=on_failed, log_tail=lambda: log_tail(log_file),
                              metrics=self.metrics)
        self._deployments[spec.deployment_id] = replicas
        try:
            await replicas.start()
        except BaseException:
            await self.stop(spec.deployment_id)
            raise

    def forget(self, deployment_id: str) -> None:
        """Drop what the backend keeps for a deployment that stops (a hook)."""

    def describe_slot(self, slot) -> dict:
        return slot.describe()

    def log_for(self, path: Path) -> logfile.RotatingLog:
        """The deployment log at `path`, opened once, where its replicas' output goes."""
        out = self._logs.get(path)
        if out is None:
            out = self._logs[path] = logfile.RotatingLog(path, self.log_max_bytes, self.log_backups)
        return out

    # -- ReplicaBackend ------------------------------------------------------------------------
    async def stop(self, deployment_id: str) -> None:
        replicas = self._deployments.pop(deployment_id, None)
        self.forget(deployment_id)
        if replicas is None:
            return
        await replicas.close()
        out = self._logs.pop(deployment_log(replicas.home), None)
        if out is not None:
            out.close()

    def replica(self, deployment_id: str) -> ReplicaSet | None:
        return self._deployments.get(deployment_id)

    def scale(self, deployment_id: str, scaling: ScalingConfig) -> None:
        if (replicas := self._deployments.get(deployment_id)) is not None:
            replicas.rescale(scaling)

    def settle(self, deployment_id: str) -> None:
        if (replicas := self._deployments.get(deployment_id)) is not None:
            replicas.settle()

    def replicas(self, deployment_id: str) -> list[dict] | None:
        replicas = self._deployments.get(deployment_id)
        if replicas is None:
            return None
        return [self.describe_slot(slot) for slot in sorted(replicas.slots, key=lambda s: s.index)]

    def ready_replicas(self, deployment_id: str) -> list[Replica]:
        """Every replica of the deployment in the rotation (for scraping their counters)."""
        replicas = self._deployments.get(deployment_id)
        if replicas is None:
            return []
        return [slot.launched.replica for slot in replicas.ready if slot.launched is not None]

    def replica_states(self) -> dict[str, dict[str, int]]:
        """{deployment id: {state: how many replicas}}: the replica sets' slot states, and
        `unhealthy` for one taken out after failing its health checks."""
        out: dict[str, dict[str, int]] = {}
        for deployment_id, replicas in self._deployments.items():
            counts = out.setdefault(deployment_id, {})
            for slot in replicas.slots:
                launched = slot.launched
                state = "unhealthy" if getattr(launched, "out_of_rotation", False) else slot.state.value
                counts[state] = counts.get(state, 0) + 1
        return out

    async def close_sets(self) -> None:
        """Stop every deployment and close the logs (the subclass's `close` calls it first)."""
        await asyncio.gather(*(self.stop(d) for d in list(self._deployments)))
        for out in self._logs.values():
            out.close()
