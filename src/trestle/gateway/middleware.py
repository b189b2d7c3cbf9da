"""Pure ASGI middleware on the gateway's request path, outermost first:

- `ModelSubdomain`: `Host: model-{id}.<anything>` serves the `/model/{id}/...` paths without the
  prefix. It runs first, so everything after it (metrics included) sees the model path.
- `RequestContext`: request id (honoured or generated, echoed, in every log line), one access-log
  line and the Prometheus metrics per request, and the error boundary: the one place where an
  exception raised anywhere below becomes the error envelope.
- (Starlette's `AuthenticationMiddleware` with `trestle.gateway.access.auth.ApiKeyBackend`, when auth is on.)
- `BodyLimit`: the request body, bounded by its route's limit (`Settings.body_limit`) while it
  streams in, chunked bodies included: past it, reading raises `PayloadTooLarge` (413).
- `Dispatch`: `/model/...` to the data plane, everything else to the edge router.
"""

from __future__ import annotations

import logging
import re
import time

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from trestle import requestid
from trestle.errors import PayloadTooLarge, TrestleError
from trestle.metrics import Metrics, RequestMetrics, route_kind, route_name
from trestle.protocol.errors import error_for, http_exception_response
from trestle.settings import Settings

log = logging.getLogger("trestle.access")

_HOST = re.compile(r"^model-([A-Za-z0-9]+)\.")
_RESERVED = ("/model/", "/v1/", "/api/", "/health", "/metrics")
_CONTENT_LENGTH = b"content-length"
_REQUEST_ID = requestid.HEADER.encode()


def header(scope: Scope, name: bytes) -> bytes | None:
    """The first value of a request header (`name` in lowercase, as ASGI servers give them)."""
    for key, value in scope["headers"]:
        if key == name:
            return value
    return None


class ModelSubdomain:
    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            match = _HOST.match((header(scope, b"host") or b"").decode("latin-1"))
            if match and not scope["path"].startswith(_RESERVED):
                prefix = f"/model/{match.group(1)}"
                raw = scope.get("raw_path") or scope["path"].encode()
                scope = {**scope, "path": prefix + scope["path"], "raw_path": prefix.encode() + raw}
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


class BodyLimit:
    def __init__(self, app: ASGIApp, settings: Settings):
        self.app = app
        self.settings = settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        bound = self.settings.body_limit(scope["path"]) if scope["type"] == "http" else None
        if bound is None:
            await self.app(scope, receive, send)
            return
        limit, setting = bound

        def too_large() -> PayloadTooLarge:
            code = setting.removeprefix("TRESTLE_").lower() if setting.startswith("TRESTLE_") else None
            return PayloadTooLarge(f"the request body is larger than this route's limit of {limit} bytes "
                                   f"(limit: {setting})", code=code)

        declared = header(scope, _CONTENT_LENGTH)
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise too_large()
        received = 0

        async def bounded_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise too_large()
            return message

        await self.app(scope, bounded_receive, send)


def error_answer(scope: Scope, exc: Exception) -> ASGIApp:
    """The response for an exception: the envelope, with the status of its class."""
    if isinstance(exc, TrestleError):
        return error_for(scope["path"], exc, worker=False)
    if isinstance(exc, HTTPException):  # the router's 405
        return http_exception_response(Request(scope), exc)
    log.exception("unhandled error", exc_info=exc)
    return error_for(scope["path"], TrestleError("internal error in the gateway; see its log"),
                     worker=False)


class RequestContext:
    def __init__(self, app: ASGIApp, metrics: Metrics):
        self.app = app
        self.metrics = RequestMetrics(metrics)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = requestid.from_header(header(scope, _REQUEST_ID))
        token = requestid.current.set(rid)
        scope.setdefault("state", {})["request_id"] = rid
        path = scope["path"]
        kind = route_kind(path)
        start = time.perf_counter()
        status = 500
        started = False
        streamed = False  # no content-length: the body comes in pieces (time to first byte)
        left: int | None = None  # bytes of a content-length body still to send
        first_byte: float | None = None
        recorded = False

        def record() -> None:
            nonlocal recorded
            if not recorded:
                recorded = True
                self.metrics.done(scope, kind, route_name(path), status,
                                  time.perf_counter() - start, first_byte)

        async def send_with_id(message: Message) -> None:
            nonlocal status, started, streamed, left, first_byte
            if message["type"] == "http.response.start":
                started = True
                status = message["status"]
                headers = message.get("headers", [])
                length = None
                has_id = False
                for name, value in headers:
                    name = name.lower()
                    if name == _CONTENT_LENGTH and length is None:
                        length = value
                    elif name == _REQUEST_ID:
                        has_id = True
                streamed = length is None
                left = int(length) if length is not None and length.isdigit() else None
                if not has_id:
                    message = {**message, "headers": [*headers, (_REQUEST_ID, rid.encode())]}
            elif message["type"] == "http.response.body":
                body = message.get("body", b"")
                if streamed and first_byte is None and body:
                    first_byte = time.perf_counter() - start
                if left is not None:
                    left -= len(body)
                # counted before the client can see the end of its answer: the last message, or
                # the last of a content-length body (a relayed answer ends with an empty message
                # sent after the client already has every byte)
                if not message.get("more_body", False) or (left is not None and left <= 0):
                    record()
            await send(message)

        self.metrics.start(kind)
        try:
            await self.app(scope, receive, send_with_id)
        except Exception as exc:
            if started:  # the answer is under way: nothing to do but let the server close it
                raise
            await error_answer(scope, exc)(scope, receive, send_with_id)
        finally:
            record()
            log.info("%s %s %d %.1fms", scope["method"], requestid.printable(path), status,
                     (time.perf_counter() - start) * 1000)
            requestid.current.reset(token)
