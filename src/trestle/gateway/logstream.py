"""`GET /api/v1/deployments/{id}/logs?format=json`: a deployment's log as JSON lines, and
`follow=1` to keep streaming what is appended.

    ?format=json                 the last 1000 records (`tail=N`, at most 100,000)
    &since=10m | since=ISO-TIME  only records from then on (read from the log's last 8 MiB)
    &follow=1                    then every new record as it is written, until the client leaves,
                                 the gateway stops, or `timeout` seconds (default 3600) pass

Records are `trestle.deploy.logs.logrecords.LogRecord`s, one JSON object a line
(`application/x-ndjson`). Following survives the log's rotation: the rest of the old file is
sent, then the new one from its start.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from trestle.deploy.logs import logfile
from trestle.deploy.logs.logrecords import LineParser, parse_since
from trestle.errors import BadRequest
from trestle.gateway.context import Gateway

MEDIA_TYPE = "application/x-ndjson"
TAIL_DEFAULT = 1000
TAIL_MAX = 100_000
WINDOW_BYTES = logfile.TAIL_MAX_BYTES  # how far back a request reads
FOLLOW_DEFAULT_S = 3600
FOLLOW_MAX_S = 86400
POLL_S = 0.25
READ_BYTES = 1024 * 1024  # per poll
MAX_PENDING = 64 * 1024  # a line longer than this is sent in pieces


def _int(request: Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    if not raw.isdigit() or len(raw) > 18 or not low <= int(raw) <= high:
        raise BadRequest(f"{name} must be an integer from {low} to {high}", param=name)
    return int(raw)


def _lines(data: bytes) -> tuple[list[str], bytes]:
    """The complete lines in `data`, and what is left after the last newline."""
    *lines, rest = data.split(b"\n")
    if len(rest) > MAX_PENDING:
        lines.append(rest)
        rest = b""
    return [line.decode(errors="replace") for line in lines], rest


def _window(path: Path) -> tuple[bytes, int]:
    """The log's last `WINDOW_BYTES` bytes from its first whole line, and the offset they end at."""
    end = logfile.size(path)
    start = max(0, end - WINDOW_BYTES)
    data = logfile.read_range(path, start, end - start)
    if start > 0:
        data = data[data.find(b"\n") + 1:] if b"\n" in data else b""
    return data, end


def _identity(path: Path) -> int | None:
    try:
        return os.stat(path).st_ino
    except FileNotFoundError:
        return None


async def json_logs(gw: Gateway, request: Request, path: Path) -> Response:
    if "offset" in request.query_params or "limit" in request.query_params:
        raise BadRequest("offset and limit go with format=text", param="offset")
    tail = _int(request, "tail", TAIL_DEFAULT, 0, TAIL_MAX)
    since = request.query_params.get("since")
    since_at = parse_since(since) if since else None
    follow = request.query_params.get("follow", "0").lower() in ("1", "true", "yes")
    timeout = _int(request, "timeout", FOLLOW_DEFAULT_S, 1, FOLLOW_MAX_S)
    if "timeout" in request.query_params and not follow:
        raise BadRequest("timeout goes with follow=1", param="timeout")

    ino = _identity(path)
    data, offset = await run_in_threadpool(_window, path)
    parser = LineParser()
    lines, pending = _lines(data)
    records = [parser.parse(line) for line in lines]
    if since_at is not None:
        records = [r for r in records if r.time is not None and r.time >= since_at]
    records = records[-tail:] if tail else []
    head = "".join(r.to_json() + "\n" for r in records)
    headers = {"x-log-size": str(offset)}
    if not follow:
        return Response(head, media_type=MEDIA_TYPE, headers=headers)

    async def stream() -> AsyncIterator[str]:
        nonlocal offset, ino, pending
        if head:
            yield head
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline and not gw.draining:
            now = _identity(path)
            if now != ino:  # rotated: the rest of the old file (now worker.log.1), then the new one
                if ino is not None:
                    old = path.with_name(path.name + ".1")
                    if _identity(old) == ino:
                        rest = await run_in_threadpool(logfile.read_range, old, offset, WINDOW_BYTES)
                        if rest:
                            yield _send(parser, rest, pending)
                            pending = b""
                ino, offset, pending = now, 0, b""
            size = logfile.size(path)
            if size < offset:  # truncated in place
                offset, pending = 0, b""
            if size > offset:
                data = await run_in_threadpool(logfile.read_range, path, offset, READ_BYTES)
                offset += len(data)
                lines, pending = _lines(pending + data)
                if lines:
                    yield "".join(parser.parse(line).to_json() + "\n" for line in lines)
                continue
            await asyncio.sleep(POLL_S)

    return StreamingResponse(stream(), media_type=MEDIA_TYPE, headers=headers)


def _send(parser: LineParser, data: bytes, pending: bytes) -> str:
    text = (pending + data).decode(errors="replace")
    return "".join(parser.parse(line).to_json() + "\n" for line in text.splitlines())

