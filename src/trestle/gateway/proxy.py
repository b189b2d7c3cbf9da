"""Forwarding a request to a replica and streaming its answer back, unbuffered.

`UpstreamResponse` is itself an ASGI app (a starlette-style response): it sends the request to
the replica over the replica's pooled session and relays each chunk as it arrives. When the client
goes away mid-stream, the upstream response is closed, which closes that connection to the worker,
so the worker sees `http.disconnect` too. Upstream connection errors are mapped to the error tree
here, in one place.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import aiohttp
from starlette.types import Receive, Scope, Send

from trestle.deploy.backend import Replica
from trestle.errors import UpstreamError
from trestle.gateway import requestid
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
    {b"date", b"server", b"connection", b"keep-alive", b"transfer-encoding", b"te", b"trailer", b"upgrade",
     requestid.HEADER.encode()}
)


@contextlib.contextmanager
def map_upstream_errors(deployment_id: str):
    try:
        yield
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
        self.headers.append((requestid.HEADER, request_id))
        self.body = body
        self.rid = request_id

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            with map_upstream_errors(self.replica.deployment_id):
                upstream = await self.replica.session.request(
                    self.method, self.url, data=self.body, headers=self.headers,
                    allow_redirects=False,
                )
        except UpstreamError as exc:
            await error_response(exc, {requestid.HEADER: self.rid})(scope, receive, send)
            return
        headers = [
            (k.lower(), v) for k, v in upstream.raw_headers if k.lower() not in DROP_RESPONSE
        ]
        headers.append((requestid.HEADER.encode(), self.rid.encode("latin-1")))
        try:
            await send({"type": "http.response.start", "status": upstream.status, "headers": headers})
            if upstream.content_length is not None and upstream.content_length <= 65536:
                # a small, complete answer: one read, no disconnect watcher
                body = await upstream.read()
                await send({"type": "http.response.body", "body": body})
            else:
                await self._stream(upstream, receive, send)
        finally:
            upstream.close()

    async def _stream(self, upstream: aiohttp.ClientResponse, receive: Receive, send: Send) -> None:
        async def relay() -> None:
            async for chunk in upstream.content.iter_any():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b""})

        async def client_gone() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass

        relay_task = asyncio.ensure_future(relay())
        gone_task = asyncio.ensure_future(client_gone())
        try:
            done, _ = await asyncio.wait({relay_task, gone_task}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (relay_task, gone_task):
                task.cancel()
            await asyncio.gather(relay_task, gone_task, return_exceptions=True)
        if gone_task in done and relay_task not in done:
            log.info("client disconnected mid-stream; closing the upstream stream")
            return
        exc = relay_task.exception() if relay_task in done and not relay_task.cancelled() else None
        if exc is not None:
            # headers are already sent: the best we can do is end the stream early
            log.warning("upstream stream broke: %r", exc)
