"""The OpenAI bridge: any OpenAI client reaches any deployment, named in the request body.

    POST /v1/chat/completions   {"baseten": {"model_id", "deployment_id"?}, ...}  or  model "baseten/ID[/DEP]"
    POST /v1/completions        the same, text completions
    POST /v1/direct/chat/completions, /v1/direct/completions   OpenAI-mode deployments only
    POST /v1/embeddings, /v1/messages, /v1/responses           to a Model's own method (`relay`)

The target (`trestle.protocol.bridge`) is looked up in the routing table: production when no
deployment is named, that exact deployment when one is. Then, by what the deployment serves:

- an OpenAI mode (an engine deployment, a Model with `chat_completions` / `completions`, or an
  external upstream, `trestle.deploy.upstream`): the body less `baseten` goes to the replica's
  own OpenAI route and the answer is relayed as is, unbuffered (`trestle.gateway.proxy.Relay`);
- `predict` only: the body less `baseten` goes to `/predict` and the result is wrapped into the
  OpenAI shapes (`trestle.gateway.bridge.legacy`). The direct routes refuse such a model.

What a deployment serves is known from its config (an engine, an upstream) or asked once from its worker
(`GET /health` lists the Model's `methods`) and remembered: a deployment never changes.
A deployment that is loading (or has no replica running) answers 503 with `Retry-After`.
"""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.types import ASGIApp

from trestle import tokencount
from trestle.deploy.config import EMBEDDINGS_KIND
from trestle.deploy.routing import PRODUCTION, RoutingTable
from trestle.deploy.transport import Replica
from trestle.errors import BadRequest, TrestleError, Unavailable
from trestle.gateway.access import auth
from trestle.gateway.bridge.legacy import LegacyAnswer
from trestle.gateway.proxy import Relay, query_of
from trestle.metrics import Metrics
from trestle.protocol.bridge import FIELD, MODEL_PREFIX, BridgeTarget, target_of, without_routing
from trestle.protocol.errors import error_response
from trestle.protocol.health import WorkerHealth
from trestle.store import Deployment

log = logging.getLogger("trestle.gateway")

RETRY_AFTER_S = "5"
RETRYABLE = frozenset({"loading", "no_replica"})
# the worker route of each bridged path, and the Model method that serves it
METHODS = {"/v1/chat/completions": "chat_completions", "/v1/completions": "completions"}
OPENAI_METHODS = frozenset(METHODS.values())
# routes relayed as they are to the Model method of the same name, when it defines one
RELAYED = {"/v1/embeddings": "embeddings", "/v1/messages": "messages", "/v1/responses": "responses"}


def parse_body(body: bytes) -> dict[str, Any]:
    try:
        payload = json.loads(body)
    except ValueError:
        raise BadRequest("body is not valid JSON") from None
    except RecursionError:
        raise BadRequest("body is nested too deeply") from None
    if not isinstance(payload, dict):
        raise BadRequest("body must be a JSON object")
    return payload


class Bridge:
    def __init__(self, routing: RoutingTable, metrics: Metrics | None = None):
        self.routing = routing
        self.metrics = metrics
        self._methods: dict[str, frozenset[str]] = {}  # deployment id -> endpoint methods
        self._counters: dict[str, tokencount.TokenCounter | None] = {}  # its `bridge.tokenizer`

    async def openai(self, request: Request, path: str, body: bytes, payload: dict[str, Any],
                     target: BridgeTarget) -> ASGIApp:
        """`/v1/chat/completions` or `/v1/completions` for a bridge target (`path` is that route)."""
        try:
            replica, methods = await self._resolve(request, target, payload)
        except Unavailable as exc:
            return unavailable(exc)
        forwarded = self._forwarded(body, payload, replica)
        if METHODS[path] in methods:
            return Relay(replica, "POST", path, query_of(request.scope), request.scope["headers"], forwarded,
                         request.state.request_id)
        if "predict" not in methods:
            raise BadRequest(f"deployment {replica.deployment_id} serves neither {METHODS[path]} nor predict",
                             param="model")
        model = payload.get("model") if isinstance(payload.get("model"), str) else f"baseten/{target.model_id}"
        return LegacyAnswer(replica, METHODS[path], without_routing(payload), model,
                            request.scope["headers"], request.state.request_id,
                            await self._counter_of(replica.deployment_id))

    async def direct(self, request: Request, path: str) -> ASGIApp:
        """`/v1/direct/...`: only to a deployment that speaks OpenAI itself; SSE byte for byte."""
        body = await request.body()
        payload = parse_body(body)
        target = target_of(payload)
        if target is None:
            raise BadRequest("the direct bridge needs the target deployment: "
                             "extra_body={'baseten': {'model_id': 'MODEL_ID'}}", param=f"{FIELD}.model_id")
        try:
            replica, methods = await self._resolve(request, target, payload)
        except Unavailable as exc:
            return unavailable(exc)
        if METHODS[path] not in methods:
            raise BadRequest(f"model {target.model_id} has no OpenAI mode (it defines no "
                             f"`{METHODS[path]}` method): use /v1{path.removeprefix('/v1')} without "
                             f"/direct, which wraps its predict", param=f"{FIELD}.model_id")
        forwarded = self._forwarded(body, payload, replica)
        return Relay(replica, "POST", path, query_of(request.scope), request.scope["headers"], forwarded,
                     request.state.request_id)

    async def relay(self, request: Request, path: str, body: bytes, payload: dict[str, Any],
                    target: BridgeTarget) -> ASGIApp:
        """A route of `RELAYED` for a bridge target: the body less `baseten` to the Model's own
        method of that name; a 400 that says so when it defines none."""
        try:
            replica, methods = await self._resolve(request, target, payload)
        except Unavailable as exc:
            return unavailable(exc)
        return self.relay_to(request, path, body, payload, target, replica, methods)

    def relay_to(self, request: Request, path: str, body: bytes, payload: dict[str, Any],
                 target: BridgeTarget, replica: Replica, methods: frozenset[str]) -> ASGIApp:
        """`relay`, to a replica `resolve` already gave."""
        method = RELAYED[path]
        if method not in methods:
            raise BadRequest(f"model {target.model_id} does not serve {path}: its deployment "
                             f"defines no `{method}` method", param="model")
        return Relay(replica, "POST", path, query_of(request.scope), request.scope["headers"],
                     self._forwarded(body, payload, replica), request.state.request_id)

    async def openai_replica(self, target: BridgeTarget, path: str) -> tuple[Replica, str | None]:
        """For callers inside the gateway (prompt endpoints): a replica of `target` that serves
        the OpenAI route `path` itself, and the slug its engine serves (None for a Model class).
        BadRequest when the deployment has no such OpenAI mode; Unavailable while it cannot serve."""
        dep = self.routing.target(target.model_id, deployment_id=target.deployment_id, param="model")
        replica = self.routing.replica(dep)
        if METHODS[path] not in await self._methods_of(dep, replica):
            raise BadRequest(f"model {target.model_id} has no OpenAI mode for {path} (its Model defines "
                             f"no `{METHODS[path]}` method)", param="model")
        return replica, ((dep.config or {}).get("engine") or {}).get("slug")

    def _forwarded(self, body: bytes, payload: dict[str, Any], replica: Replica) -> bytes:
        """The body less `baseten`; `model: baseten/...` (a routing field too) becomes the name an
        engine serves. Untouched bytes when there is nothing to take out."""
        model = payload.get("model")
        routed_by_model = isinstance(model, str) and model.startswith(MODEL_PREFIX)
        if FIELD not in payload and not routed_by_model:
            return body
        out = without_routing(payload)
        engine = (self.routing.deployments[replica.deployment_id].config or {}).get("engine") or {}
        if routed_by_model and engine.get("slug"):
            out["model"] = engine["slug"]
        return json.dumps(out).encode()

    async def resolve(self, request: Request, target: BridgeTarget,
                      payload: dict[str, Any]) -> tuple[Replica, frozenset[str]]:
        """A replica of the target and what its deployment serves (`/v1/messages` uses it)."""
        return await self._resolve(request, target, payload)

    async def _resolve(self, request: Request, target: BridgeTarget,
                       payload: dict[str, Any]) -> tuple[Replica, frozenset[str]]:
        auth.require_model(request.scope, target.model_id)  # an invoke key may be limited to models
        by_field = FIELD in payload
        param = (f"{FIELD}.deployment_id" if target.deployment_id else f"{FIELD}.model_id") if by_field else "model"
        dep = self.routing.target(target.model_id, deployment_id=target.deployment_id, param=param)
        replica = self.routing.replica(dep)
        if self.metrics is not None:
            self.metrics.route_to(request.scope, dep.model_id, dep.id,
                                  "" if target.deployment_id else PRODUCTION)
        return replica, await self._methods_of(dep, replica)

    async def _counter_of(self, deployment_id: str) -> tokencount.TokenCounter | None:
        """The deployment's `bridge.tokenizer`, loaded once (checked at push: a failure here is
        logged, and usage is then not computed)."""
        if deployment_id in self._counters:
            return self._counters[deployment_id]
        dep = self.routing.deployments[deployment_id]
        spec = ((dep.config or {}).get("bridge") or {}).get("tokenizer")
        counter = None
        if spec:
            try:
                counter = await asyncio.to_thread(tokencount.load_for, spec, Path(dep.source_dir))
            except TrestleError as exc:
                log.warning("deployment %s: cannot load its tokenizer: %s", deployment_id, exc.message)
        self._counters[deployment_id] = counter
        return counter

    async def _methods_of(self, dep: Deployment, replica: Replica) -> frozenset[str]:
        known = self._methods.get(dep.id)
        if known is not None:
            return known
        engine = (dep.config or {}).get("engine") or {}
        if engine.get("kind") == EMBEDDINGS_KIND:
            methods = frozenset({"embeddings"})
        elif engine or (dep.config or {}).get("upstream"):
            methods = OPENAI_METHODS
        else:
            upstream = await replica.send("GET", "/health", [], b"")
            raw = await upstream.read()
            try:
                health = WorkerHealth.model_validate_json(raw)
            except ValueError:
                raise Unavailable(f"deployment {dep.id} did not report its health; retry shortly",
                                  code="no_replica") from None
            if upstream.status != 200:
                raise Unavailable(f"deployment {dep.id} is {health.status.value}"
                                  + (f": {health.error}" if health.error else "; retry shortly"),
                                  code="loading" if health.error is None else "failed")
            methods = frozenset((health.model_extra or {}).get("methods") or ["predict"])
        self._methods[dep.id] = methods
        return methods


def unavailable(exc: Unavailable) -> ASGIApp:
    """503: with `Retry-After` while the deployment is on its way, without once it failed."""
    headers = {"Retry-After": RETRY_AFTER_S} if exc.code in RETRYABLE else None
    return error_response(exc, headers=headers)
