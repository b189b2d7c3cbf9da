"""The backend `trestle serve` runs: each deployment on the backend its config.yaml names.

A deployment's `runtime.backend` (`local` or `ray`) says where its workers run; one that says
nothing runs on the gateway's default (`trestle serve --backend`). `PerDeploymentBackend` is one
`ReplicaBackend` that hands each deployment to a `LocalProcessBackend` (`trestle.deploy.local`)
or a `RayBackend` (`trestle.deploy.ray`). The default one is made at start; the other the first
time a deployment needs it: a local gateway joins a Ray cluster (`--ray-address`, else a Ray of
its own on this machine) only once a deployment asks for Ray. Callers see one backend; a deployment's calls go to the backend that
runs it.
"""

from __future__ import annotations

from collections.abc import Callable

from trestle.deploy.backend import BACKENDS, DeploymentSpec, ReplicaBackend
from trestle.deploy.config import ScalingConfig
from trestle.deploy.logs import logfile
from trestle.deploy.transport import Sender
from trestle.metrics import Metrics


class PerDeploymentBackend:
    """A `ReplicaBackend` that runs each deployment on the backend its spec names (see the
    module docstring)."""

    def __init__(self, default: str = "local", ray_address: str | None = None, *,
                 log_max_bytes: int = logfile.DEFAULT_MAX_BYTES,
                 log_backups: int = logfile.DEFAULT_BACKUPS):
        if default not in BACKENDS:
            raise ValueError(f"unknown backend {default!r}: one of {', '.join(BACKENDS)}")
        self.default = default
        self.ray_address = ray_address
        self._log_options = {"log_max_bytes": log_max_bytes, "log_backups": log_backups}
        self._backends: dict[str, ReplicaBackend] = {}  # "local" / "ray" -> made when needed
        self._runs_on: dict[str, str] = {}  # deployment id -> the name of the backend running it
        self._metrics: Metrics | None = None
        # The default one at once, as the gateway starts: it says how its workers are isolated
        # and clears what a killed gateway left behind before any deployment asks for it.
        self._backend(default)

    @property
    def metrics(self) -> Metrics | None:
        return self._metrics

    @metrics.setter
    def metrics(self, metrics: Metrics | None) -> None:
        """The gateway's hooks (cold starts, restarts), given to every backend made."""
        self._metrics = metrics
        for backend in self._backends.values():
            backend.metrics = metrics

    def backend_for(self, spec: DeploymentSpec) -> ReplicaBackend:
        """The backend that runs `spec` (made now if it is the first to need it)."""
        return self._backend(spec.backend or self.default)

    def _backend(self, name: str) -> ReplicaBackend:
        backend = self._backends.get(name)
        if backend is None:
            if name == "ray":
                from trestle.deploy.ray.backend import RayBackend

                backend = RayBackend(self.ray_address, **self._log_options)
            elif name == "local":
                from trestle.deploy.local import LocalProcessBackend

                backend = LocalProcessBackend(**self._log_options)
            else:  # config.yaml refuses any other value at push
                raise ValueError(f"unknown backend {name!r}: one of {', '.join(BACKENDS)}")
            backend.metrics = self._metrics
            self._backends[name] = backend
        return backend

    def _running(self, deployment_id: str) -> ReplicaBackend | None:
        name = self._runs_on.get(deployment_id)
        return self._backends.get(name) if name is not None else None

    # -- ReplicaBackend ------------------------------------------------------------------------
    async def prepare(self, spec: DeploymentSpec) -> None:
        await self.backend_for(spec).prepare(spec)

    async def start(self, spec: DeploymentSpec,
                    on_failed: Callable[[str], object] | None = None) -> None:
        backend = self.backend_for(spec)
        previous = self._running(spec.deployment_id)
        if previous is not None and previous is not backend:
            await previous.stop(spec.deployment_id)
        self._runs_on[spec.deployment_id] = spec.backend or self.default
        await backend.start(spec, on_failed=on_failed)

    async def stop(self, deployment_id: str) -> None:
        backend = self._running(deployment_id)
        self._runs_on.pop(deployment_id, None)
        if backend is not None:
            await backend.stop(deployment_id)

    def replica(self, deployment_id: str) -> Sender | None:
        backend = self._running(deployment_id)
        return backend.replica(deployment_id) if backend is not None else None

    def scale(self, deployment_id: str, scaling: ScalingConfig) -> None:
        if (backend := self._running(deployment_id)) is not None:
            backend.scale(deployment_id, scaling)

    def settle(self, deployment_id: str) -> None:
        if (backend := self._running(deployment_id)) is not None:
            backend.settle(deployment_id)

    def replicas(self, deployment_id: str) -> list[dict] | None:
        backend = self._running(deployment_id)
        return backend.replicas(deployment_id) if backend is not None else None

    def ready_replicas(self, deployment_id: str) -> list:
        """Every replica of the deployment in the rotation (for scraping their counters)."""
        backend = self._running(deployment_id)
        return backend.ready_replicas(deployment_id) if backend is not None else []

    def replica_states(self) -> dict[str, dict[str, int]]:
        """{deployment id: {state: how many replicas}} over every backend."""
        out: dict[str, dict[str, int]] = {}
        for backend in self._backends.values():
            out.update(backend.replica_states())
        return out

    async def close(self) -> None:
        for backend in list(self._backends.values()):
            await backend.close()
        self._backends.clear()
        self._runs_on.clear()
