"""Replicas as the worker app called inside the gateway's own process (for fast tests).

The same worker app `python -m trestle.runtime` serves (`build_worker_app`), started through the
ASGI lifespan and reached through an `ASGITransport`: no subprocess, no socket, no log file. It
runs the request path end to end — routing, transport, the worker app, the model — in one event
loop. It cannot install `requirements` (it has no interpreter of its own to put them in), and a
replica that dies is not restarted: `kill` one in a test to see what routing does then. It runs
`scaling.min_replicas` replicas (at least one), round robin, with no autoscaling.

One process has one `sys.modules`: model folders all import their code as `model.model`, so
before loading a folder the backend forgets the previous folder's modules (replicas already
running keep the classes they loaded). Module-level state is shared between replicas of a
deployment, unlike worker processes.
"""

from __future__ import annotations

import asyncio
import importlib
import itertools
import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass, field

from starlette.types import ASGIApp, Message

from trestle.deploy.backend import DeploymentSpec, ReadinessError, wait_ready
from trestle.deploy.config import ModelConfig, ScalingConfig
from trestle.deploy.transport import ASGITransport, Replica
from trestle.errors import TrestleError

log = logging.getLogger("trestle.deploy")


class Lifespan:
    """Runs an ASGI app's lifespan: `startup()` before serving, `shutdown()` after."""

    def __init__(self, app: ASGIApp):
        self.app = app
        self._inbox: asyncio.Queue[Message] = asyncio.Queue()
        self._outbox: asyncio.Queue[Message] = asyncio.Queue()
        self._task: asyncio.Task | None = None

    async def _run(self) -> None:
        try:
            await self.app({"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}},
                           self._inbox.get, self._outbox.put)
        except Exception as exc:
            await self._outbox.put({"type": "lifespan.startup.failed", "message": repr(exc)})

    async def startup(self) -> None:
        self._task = asyncio.create_task(self._run())
        await self._inbox.put({"type": "lifespan.startup"})
        message = await self._outbox.get()
        if message["type"] != "lifespan.startup.complete":
            raise ReadinessError(f"the worker app did not start: {message.get('message', '')}")

    async def shutdown(self) -> None:
        if self._task is None or self._task.done():
            return
        await self._inbox.put({"type": "lifespan.shutdown"})
        try:
            await asyncio.wait_for(self._task, 30)
        except (asyncio.TimeoutError, Exception):
            self._task.cancel()


@dataclass
class _Replica:
    replica: Replica
    lifespan: Lifespan
    alive: bool = True


@dataclass
class _Deployment:
    replicas: list[_Replica] = field(default_factory=list)
    cycle: itertools.cycle | None = None


class InProcessBackend:
    def __init__(self) -> None:
        self._deployments: dict[str, _Deployment] = {}

    async def prepare(self, spec: DeploymentSpec) -> None:
        raise ReadinessError("the in-process backend cannot install requirements or run build "
                             "commands; use the local process backend")

    async def start(self, spec: DeploymentSpec,
                    on_failed: Callable[[str], object] | None = None) -> None:
        from trestle.runtime.secrets import Secrets
        from trestle.runtime.server import build_worker_app

        await self.stop(spec.deployment_id)
        dep = self._deployments[spec.deployment_id] = _Deployment()
        try:
            try:
                config = ModelConfig.load(spec.source_dir)
            except TrestleError as exc:
                raise ReadinessError(exc.message) from None
            for index in range(max(spec.scaling.min_replicas, 1)):
                _forget_modules(config.model_module_dir)
                app = build_worker_app(config, spec.source_dir, secrets=Secrets(spec.secrets),
                                       environment=spec.environment)
                lifespan = Lifespan(app)
                await lifespan.startup()
                name = f"deployment {spec.deployment_id}"
                r = _Replica(Replica(spec.deployment_id, index, ASGITransport(app, name)), lifespan)
                dep.replicas.append(r)
                await wait_ready(r.replica, lambda: None)
        except BaseException:
            await self.stop(spec.deployment_id)
            raise
        dep.cycle = itertools.cycle(dep.replicas)

    def replica(self, deployment_id: str) -> Replica | None:
        dep = self._deployments.get(deployment_id)
        if dep is None or dep.cycle is None:
            return None
        for _ in range(len(dep.replicas)):
            r = next(dep.cycle)
            if r.alive:
                return r.replica
        return None

    def scale(self, deployment_id: str, scaling: ScalingConfig) -> None:
        """Recorded by the manager; replicas here stay as started (no autoscaling in-process)."""

    def settle(self, deployment_id: str) -> None:
        """Nothing to scale down in-process."""

    def replicas(self, deployment_id: str) -> list[dict] | None:
        dep = self._deployments.get(deployment_id)
        if dep is None:
            return None
        return [{"index": r.replica.index, "state": "ready" if r.alive else "stopped",
                 "in_flight": None, "pid": None, "restarts": 0, "last_exit": None}
                for r in dep.replicas]

    async def kill(self, deployment_id: str, index: int = 0) -> None:
        """End one replica as if its process had died (for tests): it is not restarted."""
        r = self._deployments[deployment_id].replicas[index]
        r.alive = False
        await self._end(r)

    async def stop(self, deployment_id: str) -> None:
        dep = self._deployments.pop(deployment_id, None)
        if dep is not None:
            await asyncio.gather(*(self._end(r) for r in dep.replicas))

    async def close(self) -> None:
        await asyncio.gather(*(self.stop(d) for d in list(self._deployments)))

    @staticmethod
    async def _end(r: _Replica) -> None:
        await r.replica.close()
        await r.lifespan.shutdown()


def _forget_modules(module_dir: str) -> None:
    package = module_dir.strip("/").split("/")[0]
    for name in [n for n in sys.modules if n == package or n.startswith(package + ".")]:
        del sys.modules[name]
    importlib.invalidate_caches()
