"""A deployment manager over a fresh store, for tests that drive it in-process, and a poll for a
condition inside their scenarios."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from trestle.deploy.backend import ReplicaBackend
from trestle.deploy.inprocess import InProcessBackend
from trestle.deploy.manager import DeploymentManager
from trestle.settings import Settings
from trestle.store import Store


@contextlib.asynccontextmanager
async def open_manager(home: Path, backend: ReplicaBackend | None = None, *,
                       database_url: str | None = None) -> AsyncIterator[DeploymentManager]:
    """A started manager on `home` (its own SQLite store, or `database_url`), with the
    in-process backend unless told otherwise; closed, with its store, on the way out."""
    settings = Settings(home=home, auth=False, builtin_models=False, database_url=database_url)
    home.mkdir(parents=True, exist_ok=True)
    store = await Store.open(settings.db_url, secrets_key_file=settings.secrets_key_file)
    manager = DeploymentManager(store, backend or InProcessBackend(), settings)
    await manager.start()
    try:
        yield manager
    finally:
        await manager.close()
        await store.close()


async def until(condition: Callable[[], object], what: str, timeout: float = 180):
    """Poll `condition` until it is truthy and return its value (a generous deadline against a
    hang, not a timing check: the machine may be loaded)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not (value := condition()):
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)
    return value
