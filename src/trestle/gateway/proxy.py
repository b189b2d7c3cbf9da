"""Forwarding a request to a replica and streaming its answer back, unbuffered.

`UpstreamResponse` is itself an ASGI app (a starlette-style response): it sends the request to
the replica over the replica's pooled session and relays each chunk as it arrives. When the client
goes away — while the worker is still working or mid-stream — the exchange with the worker is
cancelled, which closes that connection, so the worker sees `http.disconnect` too. Upstream
connection errors are mapped to the error tree here, in one place: a replica that cannot be
reached is a 503 (nothing was sent; retry), one that fails mid-exchange a 502.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import aiohttp
from starlette.types import Receive, Scope, Send

from trestle.deploy.backend import Replica
from trestle.disconnect import race_disconnect
from trestle.errors import Unavailable, UpstreamError
from trestle import requestid
from trestle.protocol.errors import error_response

log = logging.getLogger("trestle.gateway")

# Headers that describe one hop, not the message, plus the client's credentials, which belong to
# the gateway and are never passed to model code.
DROP_REQUEST = frozenset(
    {"host", "connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade",
     "proxy-authorization", "proxy-authenticate", "authorization", "content-length",
     requestid.HEADER}
)
DROP_RESPONSE = frozenset(
    {b"date", b"server", b"connection", b"keep-alive", b"transfer-encoding", b"te", b"trailer", b"upgrade"}
)


@contextlib.contextmanager
def map_upstream_errors(deployment_id: str):
    try:
        yield
    except aiohttp.ClientConnectorError as exc:
        # Nothing was sent: the replica is not listening (it died, and the backend has not
        # noticed yet). That is "no running replica" (retry), not a bad answer from one.
        log.warning("deployment %s: cannot connect to the replica: %r", deployment_id, exc)
        raise Unavailable(f"deployment {deployment_id} has no running replica right now; "
                          "retry shortly") from None
    except (aiohttp.ClientError, OSError, asyncio.TimeoutError) as exc:
        log.warning("deployment %s: upstream error: %r", deployment_id, exc)
        raise UpstreamError(f"deployment {deployment_id} did not answer: {type(exc).__name__}") from None


class UpstreamResponse:
    def __init__(self, replica: Replica, method: str, path: str, query: str,
                 headers: list[tuple[bytes, bytes]], body: bytes, request_id: str):
        self.replica = replica
        self.method = method
        self.url = replica.base_url + path + (f"?{query}" if query else "")
        self.headers = [
            (k.decode("latin-1"), v.decode("latin-1"))
            for k, v in headers if k.decode("latin-1") not in DROP_REQUEST
        ]
        self.headers.append((requestid.HEADER, request_id))  # the worker echoes it back
        self.body = body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # The client may leave at any time: while the worker is still working (a long
        # non-streaming completion) or mid-stream. Either way the exchange with the worker is
        # cancelled, which closes that connection, so the worker sees `http.disconnect` too.
        left, _ = await race_disconnect(receive, self._exchange(scope, receive, send))
        if left:
            log.info("client went away; closed the request to deployment %s",
                     self.replica.deployment_id)

    async def _exchange(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            with map_upstream_errors(self.replica.deployment_id):
                upstream = await self.replica.session.request(
                    self.method, self.url, data=self.body, headers=self.headers,
                    allow_redirects=False,
                )
        except (UpstreamError, Unavailable) as exc:
            await error_response(exc)(scope, receive, send)
            return
        headers = [
            (k.lower(), v) for k, v in upstream.raw_headers if k.lower() not in DROP_RESPONSE
        ]
        try:
            await send({"type": "http.response.start", "status": upstream.status, "headers": headers})
            try:
                async for chunk in upstream.content.iter_any():
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
            except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                # headers are already sent: the best we can do is end the stream early
                log.warning("deployment %s: stream broke: %r", self.replica.deployment_id, exc)
            await send({"type": "http.response.body", "body": b""})
        finally:
            upstream.close()
