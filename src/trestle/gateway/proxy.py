"""Relaying a replica's answer to the client, unbuffered.

`Relay` is an ASGI app (a starlette-style response): it sends the request through the replica's
transport (`trestle.deploy.transport`, which maps every upstream failure to `UpstreamError`) and
relays each chunk as it arrives. When the client goes away — while the worker is still working or
mid-stream — the exchange is cancelled and its body closed, so the worker sees `http.disconnect`
too. What is relayed is filtered here: hop-by-hop headers and the client's credentials, which
belong to the gateway, are never passed on to model code.

A stream that breaks upstream once the answer has started (the worker died, or stopped sending
for longer than its deployment's `runtime.request_timeout`) never ends as if complete: a
server-sent-events stream gets a last `data: {"error": {...}}` event, any other answer is cut
off without its final chunk (`StreamBroken`), so the client sees a broken response.
"""

from __future__ import annotations

import json
import logging

from starlette.types import Receive, Scope, Send

from trestle import requestid
from trestle.deploy.transport import Replica
from trestle.disconnect import race_disconnect
from trestle.errors import UpstreamError
from trestle.protocol.errors import error_body

log = logging.getLogger("trestle.gateway")

DROP_REQUEST = frozenset(
    {b"host", b"connection", b"keep-alive", b"transfer-encoding", b"te", b"trailer", b"upgrade",
     b"proxy-authorization", b"proxy-authenticate", b"authorization", b"x-api-key",
     b"content-length", requestid.HEADER.encode()}
)
DROP_RESPONSE = frozenset(
    {b"date", b"server", b"connection", b"keep-alive", b"transfer-encoding", b"te", b"trailer", b"upgrade"}
)


class StreamBroken(Exception):
    """Raised after the answer started, so that the server cuts the response off (no final chunk)."""


def sse_error_event(exc: UpstreamError) -> bytes:
    return b"data: " + json.dumps(error_body(exc)).encode() + b"\n\n"


class Relay:
    def __init__(self, replica: Replica, method: str, path: str, query: str,
                 headers: list[tuple[bytes, bytes]], body: bytes, request_id: str):
        self.replica = replica
        self.method = method
        self.path = path + (f"?{query}" if query else "")
        self.headers = [(k, v) for k, v in headers if k not in DROP_REQUEST]  # ASGI: lowercase
        self.headers.append((requestid.HEADER.encode(), request_id.encode()))  # the worker echoes it
        self.body = body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # An UpstreamError before the answer started reaches the gateway's error boundary.
        left, _ = await race_disconnect(receive, self._exchange(send))
        if left:
            log.info("client went away; closed the request to deployment %s",
                     self.replica.deployment_id)

    async def _exchange(self, send: Send) -> None:
        upstream = await self.replica.send(self.method, self.path, self.headers, self.body)
        headers = [(k.lower(), v) for k, v in upstream.headers if k.lower() not in DROP_RESPONSE]
        async with upstream:
            await send({"type": "http.response.start", "status": upstream.status, "headers": headers})
            try:
                async for chunk in upstream.chunks:
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
            except UpstreamError as exc:
                # the status is sent: say so in the stream's own format, or cut it off
                log.warning("deployment %s: the stream broke: %s", self.replica.deployment_id, exc.message)
                if not is_sse(headers):
                    raise StreamBroken(exc.message) from None
                await send({"type": "http.response.body", "body": sse_error_event(exc), "more_body": True})
            await send({"type": "http.response.body", "body": b""})


def query_of(scope: Scope) -> str:
    """The request's query string, as `Relay` takes it (without `?`)."""
    return scope.get("query_string", b"").decode("latin-1")


def is_sse(headers: list[tuple[bytes, bytes]]) -> bool:
    return any(k == b"content-type" and v.lower().startswith(b"text/event-stream") for k, v in headers)
