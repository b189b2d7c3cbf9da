"""Log lines that carry the request id.

The gateway sends `x-request-id` with every request; `RequestIdMiddleware` puts it in a
context variable for the duration of the request (a fresh id when the header is missing) and
echoes it back in the response headers. `RequestIdFilter`, installed on the worker's log
handler, stamps every record with it, so a line logged by the runtime or by the user's model
(also from the threads that run sync model code: they get a copy of the context) reads:

    2026-11-22 03:50:01,123 INFO [req-42] trestle.runtime: POST /predict -> 200 (12 ms)

Lines that belong to no request carry `-`.
"""

from __future__ import annotations

import logging
import sys
import time
import uuid
from contextvars import ContextVar

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

REQUEST_ID_HEADER = "x-request-id"
NO_REQUEST = "-"
LOG_FORMAT = "%(asctime)s %(levelname)s [%(request_id)s] %(name)s: %(message)s"

request_id: ContextVar[str] = ContextVar("trestle_request_id", default=NO_REQUEST)

logger = logging.getLogger("trestle.runtime")


class RequestIdFilter(logging.Filter):
    """Adds `record.request_id` (the current request's id, or `-`)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id.get()
        return True


def configure_logging(level: int = logging.INFO) -> None:
    """One stderr handler on the root logger, stamping the request id on every line."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    handler.addFilter(RequestIdFilter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)


def _clean(value: str) -> str:
    # A request id is echoed into logs and headers: keep it short and printable.
    return "".join(ch for ch in value if ch.isprintable())[:128]


class RequestIdMiddleware:
    """Sets the request id for the request, echoes it back, logs one line per request."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        raw = dict(scope.get("headers") or []).get(REQUEST_ID_HEADER.encode())
        rid = _clean(raw.decode("latin-1")) if raw else ""
        rid = rid or uuid.uuid4().hex
        token = request_id.set(rid)
        status: list[int] = []
        started = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                status.append(message["status"])
                MutableHeaders(scope=message)[REQUEST_ID_HEADER] = rid
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            elapsed_ms = (time.perf_counter() - started) * 1000
            # The supervisor polls /health: keep those out of the log unless debugging.
            level = logging.DEBUG if scope["path"] == "/health" else logging.INFO
            logger.log(
                level,
                "%s %s -> %s (%.0f ms)",
                scope["method"],
                scope["path"],
                status[0] if status else "no response",
                elapsed_ms,
            )
            request_id.reset(token)
