"""The one interface between the gateway and whatever runs replicas.

The gateway never knows which backend runs a deployment: it asks for a `Replica` and sends the
request through the replica's `session` (an aiohttp session bound to that replica's transport).
`trestle.deploy.local` runs replicas as local worker processes on Unix sockets; a Ray Serve
backend plugs in behind the same methods.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import aiohttp


@dataclass(frozen=True)
class DeploymentSpec:
    """What a backend needs to run a deployment."""

    deployment_id: str
    model_id: str
    source_dir: Path
    log_file: Path
    python: str  # interpreter that runs the worker (the deployment's own venv when it has requirements)
    replicas: int = 1
    secrets: dict[str, str] = field(default_factory=dict, repr=False)
    environment: str | None = None


@dataclass
class Replica:
    """A running copy of a deployment, reachable at `base_url` through `session`."""

    deployment_id: str
    index: int
    session: aiohttp.ClientSession
    base_url: str


class ReadinessError(Exception):
    """A replica that could not start: the message says why (load error, exit code, log tail)."""


class ReplicaBackend(Protocol):
    async def start(self, spec: DeploymentSpec) -> None:
        """Launch the replicas of `spec` and return once they are ready to serve.

        Raises `ReadinessError` with the reason when they cannot be made ready.
        """

    async def stop(self, deployment_id: str) -> None:
        """Stop every replica of the deployment (idempotent)."""

    def replica(self, deployment_id: str) -> Replica | None:
        """A ready replica to send the next request to, or None when none is running."""

    async def close(self) -> None:
        """Stop everything."""


def worker_log_tail(path: Path, lines: int = 20) -> str:
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return ""
    return "\n".join(text.splitlines()[-lines:])
