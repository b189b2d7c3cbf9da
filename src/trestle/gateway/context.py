"""`Gateway`: everything the request path needs, built once at startup and passed explicitly.

    gateway = await Gateway.open(settings)     # store migrated and open, deployments coming back
    gateway.routing.route(model_id)            # the routing table (trestle.deploy.routing)
    await gateway.close()

Opening creates the first API key when auth is on and none exists (written to
`TRESTLE_HOME/admin_key`, never logged), starts the replica backend, brings back the deployments
that were up, and deploys the built-in Model APIs. Every part of the gateway app receives this
object in its constructor; nothing is looked up on a request or an app's `state`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from trestle.deploy.backend import ReplicaBackend
from trestle.deploy.lifecycle import Lifecycle
from trestle.deploy.manager import DeploymentManager
from trestle.deploy.routing import RoutingTable
from trestle.metrics import Metrics, StateCollector
from trestle.settings import Settings
from trestle.store import Store, keys

log = logging.getLogger("trestle.gateway")


@dataclass
class Gateway:
    settings: Settings
    store: Store
    manager: DeploymentManager
    metrics: Metrics
    lifecycle: Lifecycle = field(init=False)
    # Set when `trestle serve` was asked to stop: long-lived answers (a log being followed) end.
    draining: bool = False

    def __post_init__(self) -> None:
        self.lifecycle = Lifecycle(self.manager)

    @property
    def routing(self) -> RoutingTable:
        return self.manager.routing

    @classmethod
    async def open(cls, settings: Settings, backend: ReplicaBackend | None = None) -> "Gateway":
        if backend is None:
            from trestle.deploy.local import LocalProcessBackend

            backend = LocalProcessBackend(log_max_bytes=settings.worker_log_max_bytes,
                                          log_backups=settings.worker_log_backups)
        settings.home.mkdir(parents=True, exist_ok=True)
        store = await Store.open(settings.db_url, secrets_key_file=settings.secrets_key_file)
        metrics = Metrics()
        if hasattr(backend, "metrics"):
            backend.metrics = metrics  # the backend's hooks: cold starts, restarts, health checks
        gateway = cls(settings, store, DeploymentManager(store, backend, settings), metrics)
        metrics.registry.register(StateCollector(gateway.routing, backend))
        try:
            if settings.auth:
                await gateway._ensure_admin_key()
            await gateway.manager.start()
            if settings.builtin_models:
                await gateway._deploy_builtin_models()
        except BaseException:
            await gateway.close()
            raise
        return gateway

    async def close(self) -> None:
        try:
            await self.manager.close()
        finally:
            await self.store.close()

    async def _ensure_admin_key(self) -> None:
        if await self.store.count_api_keys() > 0:
            return
        _, plaintext = await self.store.create_api_key("admin", scope=keys.ADMIN)
        path = self.settings.admin_key_file
        keys.write_key_file(path, plaintext)
        log.info("created the first API key; it is in %s (readable by you only)", path)

    async def _deploy_builtin_models(self) -> None:
        """Deploy the built-in Model APIs once; later starts bring them back like any deployment."""
        import yaml

        from trestle.engine.builtin import builtin_config

        config = builtin_config()
        name = config["model_name"]
        if await self.store.get_model_by_name(name) is not None:
            return
        folder = self.settings.home / "builtin" / name
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
        log.info("deploying the built-in model %s", name)
        await self.manager.push_folder(folder)
