"""The one interface between the deployment manager and whatever runs replicas.

The manager never knows which backend runs a deployment: it hands the backend a `DeploymentSpec`,
and the routing table asks it what to `send` a request through (`trestle.deploy.transport`): the
deployment's `ReplicaSet` (`trestle.deploy.replicas`: balancing, restarts, autoscaling), which a
backend fills by launching and stopping one replica at a time.

- `trestle.deploy.local`: replicas as local worker processes on Unix sockets (the default);
  it builds a virtualenv for `requirements` and writes the workers' output to the deployment log.
- `trestle.deploy.inprocess`: the worker app called in the gateway's own process (fast tests).

- `trestle.deploy.ray`: replicas as Ray actors on a Ray cluster, each running a worker that the
  gateway calls over TCP (`trestle serve --backend ray`).

`make_backend` makes the gateway's: `trestle.deploy.per_deployment`, which runs each deployment on
the one of these its config.yaml `runtime.backend` names (default: `trestle serve --backend`).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from trestle.deploy.config import ScalingConfig, UpstreamConfig
from trestle.deploy.transport import Replica, Sender
from trestle.errors import Unavailable, UpstreamError


@dataclass(frozen=True)
class DeploymentSpec:
    """What a backend needs to run a deployment."""

    deployment_id: str
    model_id: str
    home: Path  # the deployment's folder on the gateway: `src/` is the pushed model folder
    requirements: tuple[str, ...] = ()  # pip requirements from config.yaml
    requirements_file: str | None = None  # config.yaml `requirements_file`, in `source_dir`
    build_commands: tuple[str, ...] = ()  # config.yaml `build_commands`
    scaling: ScalingConfig = field(default_factory=ScalingConfig)  # config.yaml `scaling`
    secrets: dict[str, str] = field(default_factory=dict, repr=False)
    environment: str | None = None
    request_timeout: float = 300.0  # config.yaml `runtime.request_timeout`
    liveness_timeout: float = 60.0  # config.yaml `runtime.liveness_timeout`
    upstream: UpstreamConfig | None = None  # config.yaml `upstream`: no worker (deploy/upstream.py)
    backend: str | None = None  # config.yaml `runtime.backend`; None: the gateway's default

    @property
    def source_dir(self) -> Path:
        return self.home / "src"


class ReadinessError(Exception):
    """A deployment that could not start: the message says why (build or load error, exit code)."""


class ReplicaBackend(Protocol):
    async def prepare(self, spec: DeploymentSpec) -> None:
        """Make what the replicas need beyond the pushed folder (its `requirements`).

        Called before `start` when the spec has requirements (a list or a file) or build
        commands; may take minutes. Raises
        `ReadinessError` with the reason when it cannot.
        """

    async def start(self, spec: DeploymentSpec,
                    on_failed: Callable[[str], object] | None = None) -> None:
        """Launch the replicas of `spec` and return once they are ready to serve.

        Raises `ReadinessError` with the reason when they cannot be made ready. If the
        deployment later fails for good (its replicas keep crashing), the backend stops it and
        calls `on_failed(reason)`.
        """

    async def stop(self, deployment_id: str) -> None:
        """Stop every replica of the deployment (idempotent)."""

    def replica(self, deployment_id: str) -> Sender | None:
        """What to send the deployment's next request to (it picks a replica, or waits a
        bounded time for one), or None when the deployment is not running."""

    def scale(self, deployment_id: str, scaling: ScalingConfig) -> None:
        """Apply new scaling bounds to a running deployment (no-op if it is not running)."""

    def settle(self, deployment_id: str) -> None:
        """The deployment no longer serves an environment: once its in-flight requests have
        finished, scale it down to its `min_replicas` without waiting for `scale_down_delay`."""

    def replicas(self, deployment_id: str) -> list[dict] | None:
        """Each replica's state (`ReplicaOut` fields), or None when the deployment is not running."""

    async def close(self) -> None:
        """Stop everything."""


BACKENDS = ("local", "ray")


def make_backend(settings) -> ReplicaBackend:
    """The gateway's backend: each deployment on the one its `runtime.backend` names, else on
    `settings.backend` (`trestle serve --backend`; trestle.deploy.per_deployment)."""
    from trestle.deploy.per_deployment import PerDeploymentBackend

    return PerDeploymentBackend(settings.backend, settings.ray_address,
                                log_max_bytes=settings.worker_log_max_bytes,
                                log_backups=settings.worker_log_backups)


def deployment_log(home: Path) -> Path:
    """The deployment's log on the gateway: trestle's own lines about it, and whatever its
    backend writes there (the local backend: the workers' output)."""
    return home / "worker.log"


def log_tail(path: Path, lines: int = 20) -> str:
    from trestle.deploy.logs.logfile import tail

    return tail(path, lines, max_bytes=64 * 1024).decode(errors="replace").rstrip("\n")


READY_TIMEOUT_S = 900.0
# A worker is watched closely while it comes up (a small model is ready a few milliseconds after
# its socket appears), then less often (an engine may load for minutes): the interval doubles
# from FIRST_POLL_S up to POLL_INTERVAL_S.
FIRST_POLL_S = 0.005
POLL_INTERVAL_S = 0.1


async def wait_ready(replica: Replica, gone: Callable[[], str | None],
                     listening: Callable[[], bool] = lambda: True,
                     timeout: float = READY_TIMEOUT_S) -> None:
    """Poll the replica's `/health` (once `listening()`) until it says `ready`.

    Until it listens, only `listening()` and `gone()` are checked (every FIRST_POLL_S: both are
    cheap); then `/health` is asked at intervals that grow from FIRST_POLL_S to POLL_INTERVAL_S.
    Raises `ReadinessError` when it says `failed`, when `gone()` returns why the replica is no
    more, or after `timeout` seconds.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    interval = FIRST_POLL_S
    while loop.time() < deadline:
        reason = gone()
        if reason is not None:
            raise ReadinessError(reason)
        body = None
        if listening():
            try:
                upstream = await replica.send("GET", "/health", [], b"")
                body = json.loads(await upstream.read())
            except (UpstreamError, Unavailable, ValueError):
                pass  # not answering yet (its socket is bound but not yet listening: refused)
            if isinstance(body, dict):
                if upstream.status == 200 and body.get("status") == "ready":
                    return
                if body.get("status") == "failed":
                    raise ReadinessError(body.get("error") or "the model failed to load")
            await asyncio.sleep(interval)
            interval = min(interval * 2, POLL_INTERVAL_S)
        else:
            await asyncio.sleep(FIRST_POLL_S)
    raise ReadinessError(f"the worker was not ready after {timeout:.0f}s")
