"""Fixtures for the deployment manager and its backends, driven through the transport seam.

Tests are plain functions that run one scenario with `asyncio.run`; `managers.open_manager` gives
a manager over a fresh store and home, with the in-process backend unless told otherwise.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import yaml

from managers import until
from trestle.deploy.manager import DeploymentManager
from trestle.deploy.transport import Replica
from trestle.store import Status


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
