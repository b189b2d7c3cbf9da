"""HTTP/1.1 to a replica's worker: httptools parses, asyncio carries, one request per connection
at a time, idle connections kept for the next one.

    transport = HTTP1Transport.unix("/run/w.sock", "deployment d123")   # or .tcp(host, port, ...)
    upstream = await transport.send("POST", "/predict", headers, body)  # a `transport.Upstream`

This is the transport to trestle's own workers (local processes over a Unix socket, Ray replicas
over TCP): plain HTTP/1.1 to a server we wrote, with a `Content-Length` body. It exists because
a general client costs more than the gateway's whole budget on this path: aiohttp's request
machinery took ~0.6 ms of gateway CPU per request where this takes ~0.2 ms (bench/gateway.py).
The parsing (status line, headers, chunked or sized bodies) is httptools', the parser uvicorn
uses; what is here is the framing of the request, the pool and the flow of the body. External
servers (TLS, redirects, proxies, DNS) stay on `transport.HTTPTransport` (aiohttp).

Semantics are `HTTPTransport`'s: a refused or missing socket is `Unavailable` (nothing was sent),
any other failure to reach the worker or read its answer is an `UpstreamError`, no byte for
`read_timeout` seconds (before the answer starts, or between chunks) is an `UpstreamTimeout`.
Closing an exchange before its body was read closes the connection, so the worker sees
`http.disconnect`. The body is read as it comes with back-pressure: reading from the socket
pauses while more than `HIGH_WATER` bytes wait for the consumer.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import AsyncGenerator

import httptools

from trestle.deploy.transport import Headers, Upstream, refused, stopped, upstream_error
from trestle.errors import UpstreamError

log = logging.getLogger("trestle.deploy")

CONNECT_TIMEOUT_S = 10.0
# below the worker's own keep-alive (trestle.runtime.server.KEEP_ALIVE_S): we drop ours first
IDLE_S = 60.0
HIGH_WATER = 256 * 1024  # bytes received but not yet taken by the consumer


class _Exchange:
    """One request's answer, as the connection's parser delivers it."""

    __slots__ = ("head", "chunks", "buffered", "waiter", "complete", "error", "keep_alive")

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self.head: asyncio.Future = loop.create_future()  # (status, headers)
        self.chunks: collections.deque[bytes] = collections.deque()
        self.buffered = 0
        self.waiter: asyncio.Future | None = None  # the consumer, waiting for a chunk or the end
        self.complete = False
        self.error: BaseException | None = None
        self.keep_alive = False

    def wake(self) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    def fail(self, exc: BaseException) -> None:
        if self.complete or self.error is not None:
            return
        self.error = exc
        if not self.head.done():
            self.head.set_exception(exc)
        self.wake()


class _Connection(asyncio.Protocol):
    """A keep-alive connection to one worker; the parser's callbacks feed the current exchange."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.exchange: _Exchange | None = None
        self.closed = False
        self.idle_since = 0.0
        self._headers: Headers = []
        self._paused = False

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self.exchange is None:  # a worker does not speak unasked; nothing sane to do but close
            self.close()
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self.exchange.fail(ConnectionError(f"unreadable answer ({exc})"))
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.exchange is not None:
            self.exchange.fail(exc or ConnectionResetError("the worker closed the connection"))

    # httptools callbacks
    def on_message_begin(self) -> None:
        self._headers = []

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        ex = self.exchange
        ex.keep_alive = self.parser.should_keep_alive()
        ex.head.set_result((self.parser.get_status_code(), self._headers))

    def on_body(self, body: bytes) -> None:
        ex = self.exchange
        ex.chunks.append(body)
        ex.buffered += len(body)
        if ex.buffered > HIGH_WATER and not self._paused:
            self._paused = True
            self.transport.pause_reading()
        ex.wake()

    def on_message_complete(self) -> None:
        self.exchange.complete = True
        self.exchange.wake()

    # ours
    def taken(self, ex: _Exchange) -> None:
        """The consumer took `ex`'s buffered chunks: read on."""
        ex.buffered = 0
        if self._paused and not self.closed:
            self._paused = False
            self.transport.resume_reading()

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


class HTTP1Transport:
    """HTTP/1.1 to one worker over a Unix socket or TCP, with a pool of idle connections."""

    timeout_setting = "runtime.request_timeout"  # the config key of `read_timeout`, in errors

    def __init__(self, name: str, host: str, read_timeout: float | None = None, *,
                 path: str | None = None, port: int | None = None):
        self.name = name  # "deployment d123", in errors and logs
        self.read_timeout = read_timeout  # longest wait for the answer to start, then between chunks
        self._path, self._host, self._port = path, host, port
        self._host_header = (host if port is None else f"{host}:{port}").encode()
        self._idle: list[_Connection] = []
        self._open: set[_Connection] = set()
        self._closed = False

    @classmethod
    def unix(cls, socket_path: str, name: str, read_timeout: float | None = None) -> "HTTP1Transport":
        return cls(name, "worker", read_timeout, path=socket_path)

    @classmethod
    def tcp(cls, host: str, port: int, name: str, read_timeout: float | None = None) -> "HTTP1Transport":
        return cls(name, host, read_timeout, port=port)

    async def send(self, method: str, path: str, headers: Headers, body: bytes) -> Upstream:
        if self._closed:
            raise stopped(self.name)
        conn = self._idle_connection() or await self._connect()
        loop = asyncio.get_running_loop()
        ex = conn.exchange = _Exchange(loop)
        conn.transport.write(self._request(method, path, headers, body))
        try:
            status, raw_headers = await self._wait(ex.head)
        except BaseException as exc:
            conn.exchange = None
            conn.close()
            if isinstance(exc, (ConnectionError, OSError, asyncio.TimeoutError)):
                raise upstream_error(self.name, exc, self.read_timeout, self.timeout_setting) from None
            raise
        if method == "HEAD":  # the parser would wait for a body that never comes: end it here
            ex.complete, ex.keep_alive = True, False
        return Upstream(status, raw_headers, self._chunks(conn, ex), lambda: self._release(conn, ex))

    def _request(self, method: str, path: str, headers: Headers, body: bytes) -> bytes:
        lines = [f"{method} {path} HTTP/1.1\r\nhost: ".encode("latin-1"), self._host_header,
                 b"\r\ncontent-length: ", str(len(body)).encode(), b"\r\n"]
        for name, value in headers:
            lines += (name, b": ", value, b"\r\n")
        head = b"".join(lines)
        # one request per line: a CR or LF inside a name, value or the path would forge another
        if head.count(b"\n") != len(headers) + 3 or b"\r" in head.replace(b"\r\n", b""):
            raise UpstreamError(f"{self.name}: a header or the path holds a line break; not sent")
        return head + b"\r\n" + body

    async def _chunks(self, conn: _Connection, ex: _Exchange) -> AsyncGenerator[bytes, None]:
        loop = asyncio.get_running_loop()
        while True:
            if ex.chunks:
                data = b"".join(ex.chunks) if len(ex.chunks) > 1 else ex.chunks[0]
                ex.chunks.clear()
                conn.taken(ex)
                yield data
                continue
            if ex.complete:
                return
            if ex.error is not None:
                raise upstream_error(self.name, ex.error, self.read_timeout, self.timeout_setting)
            ex.waiter = loop.create_future()
            try:
                await self._wait(ex.waiter)
            except asyncio.TimeoutError as exc:
                raise upstream_error(self.name, exc, self.read_timeout, self.timeout_setting) from None
            finally:
                ex.waiter = None

    async def _wait(self, fut: asyncio.Future):
        if self.read_timeout is None:
            return await fut
        timer = asyncio.get_running_loop().call_later(self.read_timeout, _expire, fut)
        try:
            return await fut
        finally:
            timer.cancel()

    def _release(self, conn: _Connection, ex: _Exchange) -> None:
        """End the exchange (idempotent): a connection whose answer was read whole goes back to
        the pool; one left mid-answer is closed (the worker sees the client leave)."""
        if conn.exchange is not ex:
            return
        conn.exchange = None
        if ex.complete and ex.keep_alive and not conn.closed and not self._closed:
            conn.idle_since = time.monotonic()
            self._idle.append(conn)
        else:
            self._forget(conn)

    def _idle_connection(self) -> _Connection | None:
        now = time.monotonic()
        while self._idle:
            conn = self._idle.pop()
            if not conn.closed and now - conn.idle_since < IDLE_S:
                return conn
            self._forget(conn)
        return None

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        try:
            if self._path is not None:
                connecting = loop.create_unix_connection(_Connection, self._path)
            else:
                connecting = loop.create_connection(_Connection, self._host, self._port)
            _, conn = await asyncio.wait_for(connecting, CONNECT_TIMEOUT_S)
        except (ConnectionRefusedError, FileNotFoundError) as exc:
            log.warning("%s: cannot connect: %r", self.name, exc)
            raise refused(self.name) from None
        except (OSError, asyncio.TimeoutError) as exc:
            raise upstream_error(self.name, exc) from None
        self._open.add(conn)
        return conn

    def _forget(self, conn: _Connection) -> None:
        conn.close()
        self._open.discard(conn)

    async def close(self) -> None:
        self._closed = True
        for conn in list(self._open):
            self._forget(conn)
        self._idle.clear()


def _expire(fut: asyncio.Future) -> None:
    if not fut.done():
        fut.set_exception(asyncio.TimeoutError())
