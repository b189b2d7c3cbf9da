"""The worker's per-request middleware: it sets the request id (see `trestle.requestid`) for
the request, echoes it back, and writes one log line per request."""

from __future__ import annotations

import logging
import time

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from trestle import requestid

logger = logging.getLogger("trestle.runtime")


class RequestIdMiddleware:
    """Sets the request id for the request, echoes it back, logs one line per request."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = requestid.from_header(dict(scope.get("headers") or []).get(requestid.HEADER.encode()))
        token = requestid.current.set(rid)
        status: list[int] = []
        started = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                status.append(message["status"])
                MutableHeaders(scope=message)[requestid.HEADER] = rid
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
                requestid.printable(scope["path"]),
                status[0] if status else "no response",
                elapsed_ms,
            )
            requestid.current.reset(token)
