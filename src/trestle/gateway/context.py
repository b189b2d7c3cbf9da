"""`Gateway`: everything the request path needs, built once at startup and passed explicitly.

    gateway = await Gateway.open(settings)     # store migrated and open, deployments coming back
    gateway.routing.route(model_id)            # the routing table (trestle.deploy.routing)
    datastore = await gateway.datastore()      # datasets and search (endpoints.retrieval.datastore)
    await gateway.close()

Opening creates the first API key when auth is on and none exists (written to
`TRESTLE_HOME/admin_key`, never logged), starts the replica backend, brings back the deployments
that were up, and deploys the built-in Model APIs. Every part of the gateway app receives this
object in its constructor; nothing is looked up on a request or an app's `state`.

`await gateway.datastore()` is the one `Datastore` of the gateway, made on first use (on
PostgreSQL that creates the pgvector tables; a server without pgvector answers 503 then, and the
rest of the gateway still works). It embeds through the routing table: the deployment serving
`sentence-transformers/all-MiniLM-L6-v2` (the built-in one unless `--no-builtin`).

On a shared store (PostgreSQL: several gateways, docs/multiple-gateways.md) the gateway follows
the others' changes (`trestle.store.changes.ChangeFeed`): `resync` brings the deployment
manager in step with the record and forgets cached keys that were revoked or changed. Its rate
limiter (`trestle.gateway.access.ratelimit`) counts in Redis when `TRESTLE_REDIS_URL` is set, else in
this process's memory.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from trestle.deploy.backend import ReplicaBackend
from trestle.deploy.lifecycle import Lifecycle
from trestle.deploy.manager import DeploymentManager
from trestle.deploy.routing import RoutingTable
from trestle.gateway.access.ratelimit import RateLimiter, limiter_for
from trestle.metrics import Metrics, StateCollector
from trestle.settings import Settings
from trestle.store import Store, keys
from trestle.store.changes import ChangeFeed

if TYPE_CHECKING:
    import httpx

    from trestle.endpoints.retrieval.datastore import Datastore

log = logging.getLogger("trestle.gateway")


@dataclass
class Gateway:
    settings: Settings
    store: Store
    manager: DeploymentManager
    metrics: Metrics
    _datastore: "Datastore | None" = field(default=None, init=False, repr=False)
    _embedder_client: "httpx.AsyncClient | None" = field(default=None, init=False, repr=False)
    _datastore_lock: asyncio.Lock = field(default_factory=asyncio.Lock, init=False, repr=False)
    lifecycle: Lifecycle = field(init=False)
    limiter: RateLimiter = field(init=False)
    changes: ChangeFeed | None = field(default=None, init=False, repr=False)
    # Set when `trestle serve` was asked to stop: long-lived answers (a log being followed) end.
    draining: bool = False

    def __post_init__(self) -> None:
        self.lifecycle = Lifecycle(self.manager)
        self.limiter = limiter_for(self.settings.redis_url)

    @property
    def routing(self) -> RoutingTable:
        return self.manager.routing

    @classmethod
    async def open(cls, settings: Settings, backend: ReplicaBackend | None = None) -> "Gateway":
        if backend is None:
            from trestle.deploy.backend import make_backend

            backend = make_backend(settings)
        settings.home.mkdir(parents=True, exist_ok=True)
        store = await Store.open(settings.db_url, secrets_key_file=settings.secrets_key_file,
                                 key_cache_ttl=settings.key_cache_ttl)
        metrics = Metrics()
        if hasattr(backend, "metrics"):
            backend.metrics = metrics  # the backend's hooks: cold starts, restarts, health checks
        gateway = cls(settings, store, DeploymentManager(store, backend, settings), metrics)
        metrics.registry.register(StateCollector(gateway.routing, backend))
        try:
            # Gateways starting together on one database take turns here: one creates the
            # first key and the built-in models, the others find them.
            async with store.setup_lock():
                if settings.auth:
                    await gateway._ensure_admin_key()
                await gateway.manager.start()
                if store.shared:
                    gateway.changes = ChangeFeed(store, gateway.resync, poll_s=settings.sync_poll_s)
                    await gateway.changes.start()
                if settings.builtin_models:
                    await gateway._deploy_builtin_models()
        except BaseException:
            await gateway.close()
            raise
        return gateway

    async def datastore(self) -> "Datastore":
        """The gateway's datastore, prepared once on first use (see the module docstring)."""
        if self._datastore is not None:
            return self._datastore
        async with self._datastore_lock:
            if self._datastore is None:
                from trestle.endpoints.retrieval.datastore import Datastore
                from trestle.endpoints.retrieval.embedder import routed_embedder

                embedder, client = routed_embedder(self.routing)
                datastore = Datastore(self.store.datasets, embedder)
                try:
                    await datastore.prepare()
                except BaseException:
                    await client.aclose()
                    raise
                self._embedder_client, self._datastore = client, datastore
        return self._datastore

    async def resync(self) -> None:
        """Another gateway changed the record: deployments, environments, keys."""
        await self.manager.sync()
        await self.store.refresh_keys()

    async def close(self) -> None:
        try:
            if self.changes is not None:
                await self.changes.close()
            await self.limiter.close()
            if self._datastore is not None:
                try:
                    await self._datastore.close()  # pending last_accessed times
                except Exception:
                    log.exception("could not write the datastore's pending last_accessed times")
            if self._embedder_client is not None:
                await self._embedder_client.aclose()
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
        """Deploy the built-in Model APIs once; later starts bring them back like any deployment.

        The embeddings model (torch: ~1.5 GiB of memory, seconds to import) is deployed unless
        `settings.builtin_embeddings` is off; it loads in its own worker, in the background."""
        from trestle.engine.builtin import builtin_config, embeddings_config

        configs = [builtin_config()]
        if self.settings.builtin_embeddings:
            configs.append(embeddings_config())
        for config in configs:
            await self._deploy_builtin(config)

    async def _deploy_builtin(self, config: dict) -> None:
        import yaml

        name = config["model_name"]
        if await self.store.get_model_by_name(name) is not None:
            return
        folder = self.settings.home / "builtin" / name
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
        log.info("deploying the built-in model %s", name)
        await self.manager.push_folder(folder)
