"""Sending one request to one replica: the seam between the gateway and the workers.

    upstream = await replica.send("POST", "/predict?x=1", headers, body)
    upstream.status, upstream.headers          # the worker's status and raw headers
    async with upstream:                       # closes the exchange, however the block ends
        async for chunk in upstream.chunks: ...   # the body as the worker writes it (unbuffered)

A `Replica` is a running copy of a deployment; how it is reached is its `Transport`:

- `trestle.deploy.http1.HTTP1Transport`: HTTP/1.1 to trestle's own workers, pooled keep-alive
  connections (a Unix socket for local workers; TCP for Ray replicas). The request path's one.
- `HTTPTransport`: HTTP over a pooled aiohttp connector, for servers that are not ours.
- `ASGITransport`: the worker's ASGI app called in-process, as httpx's ASGI transport does (the
  in-process backend, for fast tests).
- `trestle.deploy.upstream.UpstreamTransport`: an `HTTPTransport` to an external OpenAI-compatible
  server (a deployment with `upstream:` in its config).

Every failure to reach a replica or to read its answer becomes an `UpstreamError` (502) here, in
one place, except a refused connection, which is `Unavailable` (503, retry: nothing was sent, the
replica is not running): callers never see an aiohttp or socket error. A replica that does not
start its answer, or stops sending it, for longer than `HTTPTransport`'s `read_timeout` (the
deployment's `runtime.request_timeout`) gives an `UpstreamTimeout` (504). Closing the exchange
early (the client left) closes the connection, so the worker sees `http.disconnect` too.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol
from urllib.parse import unquote

import aiohttp
import yarl
from starlette.types import ASGIApp, Message

from trestle.errors import TrestleError, Unavailable, UpstreamError, UpstreamTimeout

log = logging.getLogger("trestle.deploy")

Headers = list[tuple[bytes, bytes]]
STOP_GRACE_S = 10.0


@dataclass
class Upstream:
    """A replica's answer: status and headers at once, the body as it comes."""

    status: int
    headers: Headers
    chunks: AsyncGenerator[bytes, None]
    release: Callable[[], None]  # ends the exchange (idempotent)

    async def close(self) -> None:
        await self.chunks.aclose()
        self.release()

    async def __aenter__(self) -> "Upstream":
        return self

    async def __aexit__(self, *exc_info) -> None:
        await self.close()

    async def read(self) -> bytes:
        """The whole body (for small answers such as `/health`)."""
        async with self:
            return b"".join([chunk async for chunk in self.chunks])


class Transport(Protocol):
    async def send(self, method: str, path: str, headers: Headers, body: bytes) -> Upstream:
        """Send a request (`path` may carry `?query`); raise `UpstreamError` when it cannot."""

    async def close(self) -> None:
        """Release connections (idempotent)."""


class Sender(Protocol):
    """What a request is sent through: one `Replica`, or a deployment's set of them
    (`trestle.deploy.replicas.ReplicaSet`, which picks one per request)."""

    deployment_id: str

    async def send(self, method: str, path: str, headers: Headers, body: bytes) -> Upstream: ...


@dataclass
class Replica:
    """A running copy of a deployment: `await replica.send(method, path, headers, body)`."""

    deployment_id: str
    index: int
    transport: Transport
    send: Callable[[str, str, Headers, bytes], Awaitable[Upstream]] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.send = self.transport.send  # the transport's own method: no extra frame per request

    async def close(self) -> None:
        await self.transport.close()


# The one map from transport errors to the error tree: these become `UpstreamError`; anything
# else is a bug of ours.
TRANSPORT_ERRORS = (aiohttp.ClientError, OSError, asyncio.TimeoutError)


def upstream_error(what: str, exc: BaseException, timeout: float | None = None,
                   setting: str = "runtime.request_timeout") -> UpstreamError:
    log.warning("%s: upstream error: %r", what, exc)
    if isinstance(exc, asyncio.TimeoutError) and timeout is not None:  # aiohttp's are TimeoutErrors
        return UpstreamTimeout(f"{what} sent nothing for {timeout:g}s (its {setting})")
    return UpstreamError(f"{what} did not answer: {type(exc).__name__}")


def refused(name: str) -> TrestleError:
    """The error for a connection that could not be made. Nothing was sent: a local replica is not
    listening (it died and its backend has not noticed yet). That is "no running replica"
    (retry), not a bad answer from one."""
    return Unavailable(f"{name} refused the connection: no running replica right now; retry shortly")


def stopped(name: str) -> TrestleError:
    """The error for a replica routed to just before its backend saw it exit and closed its
    transport: nothing is sent, so this is "no running replica" (retry) as well."""
    return Unavailable(f"{name} has stopped: no running replica right now; retry shortly")


class HTTPTransport:
    """HTTP/1.1 to one replica over a pooled keep-alive connector."""

    timeout_setting = "runtime.request_timeout"  # the config key of `read_timeout`, in errors

    def __init__(self, connector: aiohttp.BaseConnector, base_url: str, name: str,
                 read_timeout: float | None = None):
        self.base_url = base_url
        self.name = name  # "deployment d123 replica 0", in errors and logs
        self.read_timeout = read_timeout  # longest wait for the answer to start, then between chunks
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=read_timeout),
            auto_decompress=False,
            # no Content-Type of aiohttp's own (octet-stream for bytes): the client's, or none
            # (a worker reads application/octet-stream as msgpack)
            skip_auto_headers=("User-Agent", "Accept-Encoding", "Content-Type"),
        )

    @classmethod
    def unix(cls, socket_path: str, name: str, read_timeout: float | None = None) -> "HTTPTransport":
        # below the worker's own keep-alive (trestle.runtime.server.KEEP_ALIVE_S): we close first
        connector = aiohttp.UnixConnector(path=socket_path, limit=0, keepalive_timeout=60)
        return cls(connector, "http://worker", name, read_timeout)

    async def send(self, method: str, path: str, headers: Headers, body: bytes) -> Upstream:
        if self._session.closed:
            raise stopped(self.name)
        try:
            resp = await self._session.request(
                # `encoded`: the path goes as the client sent it (the gateway re-encoded it)
                method, yarl.URL(self.base_url + path, encoded=True), data=body, allow_redirects=False,
                headers=[(k.decode("latin-1"), v.decode("latin-1")) for k, v in headers],
            )
        except aiohttp.ClientConnectorError as exc:
            log.warning("%s: cannot connect: %r", self.name, exc)
            raise self.refused() from None
        except TRANSPORT_ERRORS as exc:
            raise upstream_error(self.name, exc, self.read_timeout, self.timeout_setting) from None
        return Upstream(resp.status, list(resp.raw_headers), self._chunks(resp), resp.close)

    def refused(self) -> TrestleError:
        """The error for a connection that could not be made (`refused`, by default)."""
        return refused(self.name)

    async def _chunks(self, resp: aiohttp.ClientResponse) -> AsyncGenerator[bytes, None]:
        try:
            async for chunk in resp.content.iter_any():
                yield chunk
        except TRANSPORT_ERRORS as exc:
            raise upstream_error(self.name, exc, self.read_timeout, self.timeout_setting) from None

    async def close(self) -> None:
        await self._session.close()


class ASGITransport:
    """The worker's ASGI app called in this process: no socket, same messages.

    The app runs in its own task; its `http.response.*` messages are relayed through a queue.
    Closing the body early sends the app `http.disconnect` and waits for it to end.
    """

    def __init__(self, app: ASGIApp, name: str):
        self.app = app
        self.name = name
        self._tasks: set[asyncio.Task] = set()
        self._closed = False

    async def send(self, method: str, path: str, headers: Headers, body: bytes) -> Upstream:
        if self._closed:  # as a socket nobody listens on any more
            raise UpstreamError(f"{self.name} did not answer: it is stopped")
        path, _, query = path.partition("?")
        scope = {
            "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method,
            "scheme": "http", "path": unquote(path), "raw_path": path.encode(), "root_path": "",
            "query_string": query.encode("latin-1"),
            "headers": [(k.lower(), v) for k, v in headers] + [(b"host", b"worker")],
            "client": ("127.0.0.1", 0), "server": ("worker", 80),
        }
        messages: asyncio.Queue[Message | BaseException | None] = asyncio.Queue()
        left = asyncio.Event()
        body_sent = False

        async def receive() -> Message:
            nonlocal body_sent
            if not body_sent:
                body_sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            await left.wait()
            return {"type": "http.disconnect"}

        async def send(message: Message) -> None:
            if left.is_set():
                raise OSError("the client went away")
            await messages.put(message)

        async def run() -> None:
            try:
                await self.app(scope, receive, send)
                await messages.put(None)
            except BaseException as exc:  # relayed to the reader, who maps it
                await messages.put(exc)
                if isinstance(exc, asyncio.CancelledError):
                    raise

        task = asyncio.create_task(run())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

        def stop() -> None:
            # the app sees `http.disconnect`; one that ignores it is cancelled after a grace
            left.set()
            if not task.done():
                asyncio.get_running_loop().call_later(STOP_GRACE_S, task.cancel)

        try:
            start = await self._next(messages)
            if start is None or start["type"] != "http.response.start":
                raise UpstreamError(f"{self.name} ended without an answer")
        except BaseException:
            stop()
            raise
        return Upstream(start["status"], list(start.get("headers", [])),
                        self._chunks(messages), stop)

    async def _next(self, messages: asyncio.Queue) -> Message | None:
        item = await messages.get()
        if isinstance(item, BaseException):
            if isinstance(item, asyncio.CancelledError):
                raise UpstreamError(f"{self.name} was stopped")
            log.warning("%s: the app raised %r", self.name, item)
            raise UpstreamError(f"{self.name} did not answer: {type(item).__name__}")
        return item

    async def _chunks(self, messages: asyncio.Queue) -> AsyncGenerator[bytes, None]:
        while True:
            message = await self._next(messages)
            if message is None:
                return
            if message.get("body"):
                yield message["body"]
            if not message.get("more_body", False):
                return

    async def close(self) -> None:
        self._closed = True
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
