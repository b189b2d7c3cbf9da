"""Pure ASGI middleware on the request path, outermost first:

- `RequestContext`: request id (honoured or generated, echoed, in every log line), API-key auth,
  one access-log line and the Prometheus metrics per request, and the last-resort 500 envelope.
- `ModelHost`: `Host: model-{id}.<anything>` serves the `/model/{id}/...` paths without the prefix.
- `Dispatch`: `/model/...` to the data plane, everything else (and lifespan) to the Starlette app.
"""

from __future__ import annotations

import logging
import re
import time

from prometheus_client import Counter, Histogram
from starlette.datastructures import Headers, State
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from trestle.errors import TrestleError
from trestle import requestid
from trestle.gateway.auth import authenticate
from trestle.protocol.errors import error_response

log = logging.getLogger("trestle.access")

REQUESTS = Counter("trestle_requests_total", "Requests handled by the gateway", ["kind", "status"])
LATENCY = Histogram(
    "trestle_request_duration_seconds", "Time to the response headers, by kind of route", ["kind"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)

PUBLIC_PATHS = frozenset({"/health", "/metrics"})
_HOST = re.compile(r"^model-([A-Za-z0-9]+)\.")
_RESERVED = ("/model/", "/v1/", "/api/", "/health", "/metrics")


def route_kind(path: str) -> str:
    if path.startswith("/model/"):
        return "model"
    if path.startswith("/v1/"):
        return "model_api"
    if path.startswith("/api/"):
        return "management"
    return "other"


class ModelHost:
    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            host = Headers(scope=scope).get("host", "")
            match = _HOST.match(host)
            if match and not scope["path"].startswith(_RESERVED):
                path = f"/model/{match.group(1)}{scope['path']}"
                scope = {**scope, "path": path, "raw_path": path.encode()}
        await self.app(scope, receive, send)


class Dispatch:
    def __init__(self, model_routes: ASGIApp, app: ASGIApp):
        self.model_routes = model_routes
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith("/model/"):
            await self.model_routes(scope, receive, send)
        else:
            await self.app(scope, receive, send)


class RequestContext:
    def __init__(self, app: ASGIApp, *, auth: bool, state: State):
        self.app = app
        self.auth = auth
        self.state = state  # the app state: `store` is set on it at startup

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        rid = requestid.from_header(headers.get(requestid.HEADER))
        token = requestid.current.set(rid)
        scope.setdefault("state", {})["request_id"] = rid
        path = scope["path"]
        kind = route_kind(path)
        start = time.perf_counter()
        status = 500
        rid_header = (requestid.HEADER.encode(), rid.encode())

        started = False

        async def send_with_id(message: Message) -> None:
            nonlocal status, started
            if message["type"] == "http.response.start":
                started = True
                status = message["status"]
                LATENCY.labels(kind).observe(time.perf_counter() - start)
                hdrs = list(message.get("headers", []))
                if not any(k == rid_header[0] for k, _ in hdrs):
                    hdrs.append(rid_header)
                    message = {**message, "headers": hdrs}
            await send(message)

        try:
            if self.auth and path not in PUBLIC_PATHS:
                try:
                    await authenticate(self.state.store, headers.get("authorization"))
                except TrestleError as exc:
                    await error_response(exc)(scope, receive, send_with_id)
                    return
            await self.app(scope, receive, send_with_id)
        except Exception:
            if started:  # answered already (Starlette's handler): the server logs it
                raise
            log.exception("unhandled error")
            await error_response(TrestleError("internal error; see the gateway log"))(
                scope, receive, send_with_id)
        finally:
            REQUESTS.labels(kind, str(status)).inc()
            log.info("%s %s %d %.1fms", scope["method"], path, status,
                     (time.perf_counter() - start) * 1000)
            requestid.current.reset(token)
