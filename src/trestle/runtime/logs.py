"""The worker's log: JSON lines, and one line per request.

`JsonLines` writes every log record of the worker (trestle's, uvicorn's and the model's own
`logging` calls) as one JSON object per line, as Truss's model server does, with the request id:

    {"time": "2026-11-22T03:50:01.123Z", "level": "INFO", "request_id": "req-42",
     "logger": "trestle.runtime", "message": "POST /predict -> 200 (12 ms)"}

`request_id` is null outside a request; a model's traceback is in `message`, trimmed to the
user's frames (`trestle.runtime.truss.tracebacks`). What the model prints goes to the log as it is.
`RequestIdMiddleware` sets the request id (see `trestle.requestid`) for the request, echoes it
back, and writes one log line per request."""

from __future__ import annotations

import json
import logging
import time
from datetime import datetime, timezone

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from trestle import requestid

logger = logging.getLogger("trestle.runtime")


class JsonLines(logging.Formatter):
    """A log record as one JSON object (see the module docstring)."""

    def __init__(self, deployment_id: str | None = None, replica: int | None = None) -> None:
        super().__init__()
        self.deployment_id = deployment_id
        self.replica = replica

    def format(self, record: logging.LogRecord) -> str:
        rid = getattr(record, "request_id", requestid.NO_REQUEST)
        entry = {
            "time": datetime.fromtimestamp(record.created, timezone.utc)
                    .isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "request_id": None if rid == requestid.NO_REQUEST else rid,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["message"] += "\n" + self.formatException(record.exc_info)
        if self.deployment_id:
            entry["deployment"] = self.deployment_id
        if self.replica is not None:
            entry["replica"] = self.replica
        return json.dumps(entry, ensure_ascii=False, default=str)


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
