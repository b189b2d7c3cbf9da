"""Fixtures for the deployment manager and its backends, driven through the transport seam.

Tests are plain functions that run one scenario with `asyncio.run`; `open_manager` gives a
manager over a fresh store and home, with the in-process backend unless told otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import yaml

from trestle.deploy.backend import ReplicaBackend
from trestle.deploy.inprocess import InProcessBackend
from trestle.deploy.manager import DeploymentManager
from trestle.deploy.transport import Replica
from trestle.settings import Settings
from trestle.store import Status, Store


@contextlib.asynccontextmanager
async def open_manager(home: Path, backend: ReplicaBackend | None = None
                       ) -> AsyncIterator[DeploymentManager]:
    settings = Settings(home=home, auth=False, builtin_models=False)
    home.mkdir(parents=True, exist_ok=True)
    store = await Store.open(settings.db_url)
    manager = DeploymentManager(store, backend or InProcessBackend(), settings)
    await manager.start()
    try:
        yield manager
    finally:
        await manager.close()
        await store.close()


async def until(condition: Callable[[], object], what: str, timeout: float = 180):
    """Poll `condition` until it is truthy (generous deadline: the machine may be loaded)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        value = condition()
        if value:
            return value
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


async def settled(manager: DeploymentManager, deployment_id: str):
    return await until(lambda: manager.deployment(deployment_id).status.settled and
                       manager.deployment(deployment_id), f"deployment {deployment_id} to settle")


async def push(manager: DeploymentManager, folder: Path, **kwargs):
    return await manager.push_folder(folder, **kwargs)


async def predict(replica: Replica, payload: dict) -> tuple[int, dict]:
    upstream = await replica.send("POST", "/predict", [(b"content-type", b"application/json")],
                                  json.dumps(payload).encode())
    return upstream.status, json.loads(await upstream.read())


def renamed(folder: Path, name: str, into: Path) -> Path:
    """A copy of `folder` whose config.yaml says `model_name: name`."""
    dest = into / f"{folder.name}-as-{name}"
    shutil.copytree(folder, dest)
    config = yaml.safe_load((dest / "config.yaml").read_text()) or {}
    config["model_name"] = name
    (dest / "config.yaml").write_text(yaml.safe_dump(config))
    return dest


ACTIVE, FAILED = Status.ACTIVE, Status.FAILED
