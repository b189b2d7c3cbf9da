"""The routing table: which replica serves a request (the hot path: in memory, no I/O).

    routing.route(model_id)                                  production
    routing.route(model_id, environment="staging")           an environment
    routing.route(model_id, deployment_id="d123")            one deployment
    routing.route(slug="smollm2-135m")                       a Model API, by its slug
    routing.target(model_id, deployment_id=...)              the Deployment only (lookups)

Every caller that sends a request to a model — the `/model/...` data plane, the `/v1` Model APIs,
the OpenAI bridge, prompt endpoints — asks here, then `send`s through what it gets: the
deployment's replica set (`trestle.deploy.replicas`, which picks the least busy replica per
request), as `trestle.deploy.transport.Replica.send` does. The deployment manager keeps this table up to date: it records
deployments as their status changes, what each environment should point at (`intended`), and
what it points at now (`live`: moved only once the new deployment is active, so the old one
keeps serving until then). A request for a deployment still loading waits until it is active
(bounded), or until it is deleted (then a 404 at once). Errors say exactly why nothing can serve:
no such model, no such environment, still deploying after the wait, failed, deleted.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

from trestle.deploy.backend import ReplicaBackend
from trestle.deploy.config import ScalingConfig
from trestle.deploy.transport import Headers, Sender, Upstream
from trestle.errors import BadRequest, NotFound, Unavailable
from trestle.protocol.management import Status
from trestle.store import Deployment

if TYPE_CHECKING:
    from trestle.metrics import Metrics

PRODUCTION = "production"
DEVELOPMENT = "development"

Key = tuple[str, str]  # (model_id, environment)
LOADING = (Status.BUILDING, Status.DEPLOYING)


class RoutingTable:
    def __init__(self, backend: ReplicaBackend, metrics: Metrics | None = None):
        self.backend = backend
        self.metrics = metrics  # the gateway's: the time requests waited for a loading deployment
        self.deployments: dict[str, Deployment] = {}
        self.live: dict[Key, str] = {}  # (model_id, env) -> deployment serving it now
        self.intended: dict[Key, str] = {}  # what the store says it should be
        self._slugs: dict[str, str] = {}  # Model API slug -> model_id
        self._loaded: dict[str, asyncio.Event] = {}  # deployment still loading -> set once not

    async def wait_loaded(self, deployment_id: str, timeout: float) -> Deployment:
        """The deployment once it is no longer loading; Unavailable (`loading`) after `timeout`,
        NotFound (`deployment_deleted`) as soon as it is deleted (here or by another gateway)."""
        dep = self._still_there(deployment_id)
        if dep.status in LOADING:
            loaded = self._loaded.setdefault(deployment_id, asyncio.Event())
            try:
                async with asyncio.timeout(timeout):
                    await loaded.wait()
            except TimeoutError:
                raise Unavailable(f"deployment {deployment_id} is still {dep.status} after {timeout:g}s "
                                  "(its scaling.cold_start_timeout); retry when it is active",
                                  code="loading") from None
        return self._still_there(deployment_id)

    def _still_there(self, deployment_id: str) -> Deployment:
        dep = self.deployments.get(deployment_id)
        if dep is None:
            raise NotFound(f"deployment {deployment_id} was deleted while this request waited for "
                           "it", code="deployment_deleted")
        return dep

    # -- the hot path --------------------------------------------------------------------------
    def route(self, model_id: str | None = None, *, environment: str | None = None,
              deployment_id: str | None = None, slug: str | None = None) -> Sender:
        """A replica for the request, or the error (NotFound, Unavailable) that says why none."""
        if slug is not None:
            model_id = self._slugs.get(slug)
            if model_id is None:
                known = ", ".join(sorted(self._slugs)) or "none"
                raise NotFound(f"The model `{slug}` does not exist. Model APIs served here: {known}",
                               param="model", code="model_not_found")
        if model_id is None:
            raise BadRequest("route() needs a model id or a slug")
        return self._replica(self.target(model_id, environment=environment, deployment_id=deployment_id))

    def target(self, model_id: str, *, environment: str | None = None,
               deployment_id: str | None = None, param: str | None = None) -> Deployment:
        """The deployment a request for the model (environment, deployment) goes to, or NotFound."""
        if deployment_id is not None:
            dep = self.deployments.get(deployment_id)
            if dep is None or dep.model_id != model_id:
                raise NotFound(f"model {model_id} has no deployment {deployment_id}", param=param)
            return dep
        key = (model_id, environment or PRODUCTION)
        target = self.live.get(key) or self.intended.get(key)
        if target is None:
            if not any(m == model_id for m, _ in self.intended) and not any(
                d.model_id == model_id for d in self.deployments.values()
            ):
                raise NotFound(f"no model with id {model_id}", param=param)
            if key[1] == PRODUCTION:
                raise NotFound(f"model {model_id} has no production deployment (promote one, or "
                               "name a deployment)", param=param, code="no_production_deployment")
            raise NotFound(f"model {model_id} has no environment {key[1]!r}", param=param)
        return self.deployments[target]

    def replica(self, dep: Deployment) -> Sender:
        """What to send a request for the deployment to, or Unavailable saying why nothing can
        serve it (code: `failed`, `no_replica`). A deployment still loading is sent to once it is
        active: the request waits, up to its `scaling.cold_start_timeout` (then `loading`)."""
        return self._replica(dep)

    def _replica(self, dep: Deployment) -> Sender:
        if dep.status == Status.ACTIVE:
            replica = self.backend.replica(dep.id)
            if replica is not None:
                return replica
            raise Unavailable(f"deployment {dep.id} has no running replica right now; retry shortly",
                              code="no_replica")
        if dep.status in LOADING:
            return _Pending(self, dep)
        if dep.status == Status.FAILED:
            raise Unavailable(f"deployment {dep.id} failed: {dep.error}", code="failed")
        if dep.status == Status.INACTIVE:
            raise Unavailable(f"deployment {dep.id} is inactive (deactivated); activate it with "
                              f"`trestle deployments activate {dep.id}`", code="inactive")
        raise Unavailable(f"deployment {dep.id} is {dep.status}")

    def slug_model(self, slug: str) -> str | None:
        """The id of the model that serves a Model API slug, if any."""
        return self._slugs.get(slug)

    def served_slugs(self) -> list[tuple[str, Deployment]]:
        """The Model APIs whose production deployment is live, with that deployment, by slug."""
        out = []
        for slug, model_id in sorted(self._slugs.items()):
            live = self.live.get((model_id, PRODUCTION))
            if live is not None:
                out.append((slug, self.deployments[live]))
        return out

    def production_models(self) -> list[tuple[str, Deployment]]:
        """Every model whose production deployment is live, with that deployment, by model id."""
        return sorted(((m, self.deployments[d]) for (m, env), d in self.live.items() if env == PRODUCTION),
                      key=lambda item: item[0])

    # -- kept up to date by the manager --------------------------------------------------------
    def record(self, dep: Deployment) -> None:
        """A deployment, new or with a new status."""
        self.deployments[dep.id] = dep
        if dep.status not in LOADING and (loaded := self._loaded.pop(dep.id, None)) is not None:
            loaded.set()
        engine = (dep.config or {}).get("engine")
        if engine and engine.get("slug"):
            self._slugs[engine["slug"]] = dep.model_id

    def forget(self, deployment_id: str) -> Deployment | None:
        """A deployment deleted (here or by another gateway): requests waiting for it to load
        are told at once (NotFound), not at the end of their wait."""
        dep = self.deployments.pop(deployment_id, None)
        if (loaded := self._loaded.pop(deployment_id, None)) is not None:
            loaded.set()
        return dep

    def point(self, key: Key, deployment_id: str, *, live: bool = False) -> None:
        """Record that environment `key` should point at the deployment (and does now: `live`)."""
        self.intended[key] = deployment_id
        if live:
            self.live[key] = deployment_id

    def go_live(self, deployment_id: str) -> list[str]:
        """The deployment is active: every environment meant to point at it now does. Returns
        the deployments this left without any live environment."""
        replaced = set()
        for key, target in self.intended.items():
            if target == deployment_id:
                previous = self.live.get(key)
                if previous is not None and previous != deployment_id:
                    replaced.add(previous)
                self.live[key] = deployment_id
        return sorted(d for d in replaced if d not in self.live.values())

    def environments_of(self, deployment_id: str) -> list[str]:
        return [env for (_, env), d in self.intended.items() if d == deployment_id]


class _Pending:
    """A deployment still loading: a request sent here waits until it is active (bounded by its
    `scaling.cold_start_timeout`), then goes to its replicas."""

    def __init__(self, routing: RoutingTable, dep: Deployment):
        self.routing = routing
        self.deployment_id = dep.id
        self.model_id = dep.model_id
        scaling = (dep.config or {}).get("scaling") or {}
        self.timeout = scaling.get("cold_start_timeout", ScalingConfig.model_fields["cold_start_timeout"].default)

    async def send(self, method: str, path: str, headers: Headers, body: bytes) -> Upstream:
        started = time.monotonic()
        try:
            dep = await self.routing.wait_loaded(self.deployment_id, self.timeout)
        finally:
            if (metrics := self.routing.metrics) is not None:
                metrics.queue_wait(self.model_id, self.deployment_id, time.monotonic() - started)
        return await self.routing.replica(dep).send(method, path, headers, body)
