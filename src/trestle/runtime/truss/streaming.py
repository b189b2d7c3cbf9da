"""Streaming a generator to the client without tying the model to the client's pace.

A generator returned by the model is run to the end by a *producer* task that puts each encoded
chunk into a bounded buffer (`STREAM_BUFFER_CHUNKS` chunks); the response sends chunks from the
buffer as they arrive, with no other buffering. The concurrency slot the request holds is
released the moment the generator is exhausted (or fails, or is closed) — not when a slow
client has read the last byte. If a client reads so slowly that the buffer fills, the producer
waits (keeping its slot): that bounds the memory one stream can take.

When the client disconnects, the producer is cancelled and the generator is closed
(`aclose()` / `close()`), so the user's `finally:` blocks run. A sync generator is advanced in
a worker thread, one `next()` at a time; it is closed after its current `next()` returns.

Chunks: `bytes` are sent as is, `str` as UTF-8, anything else as one JSON document per line.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Executor, Future
from typing import Any

from starlette.types import Receive, Scope, Send

from trestle.disconnect import race_disconnect
from trestle.pydantic_compat import to_json

STREAM_BUFFER_CHUNKS = 1024

logger = logging.getLogger("trestle.runtime")

_END = object()


class _Failed:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


def chunk_kind(item: Any) -> str:
    if isinstance(item, bytes | bytearray | memoryview):
        return "bytes"
    return "text" if isinstance(item, str) else "json"


def encode_chunk(item: Any) -> bytes:
    kind = chunk_kind(item)
    if kind == "bytes":
        return bytes(item)
    if kind == "text":
        return item.encode("utf-8")
    return to_json(item) + b"\n"


class BufferedStream:
    """Runs a (sync or async) generator into a bounded buffer; see the module docstring."""

    def __init__(
        self,
        generator: Any,
        *,
        executor: Executor,
        on_done: Callable[[], None],
        on_error: Callable[[BaseException], None],
        buffer_chunks: int = STREAM_BUFFER_CHUNKS,
    ) -> None:
        self._gen = generator
        self._is_async = hasattr(generator, "__anext__")
        self._executor = executor
        self._on_done = on_done
        self._on_error = on_error
        self._queue: asyncio.Queue[Any] = asyncio.Queue(maxsize=buffer_chunks)
        self._pending: Future | None = None  # the sync generator's next() in flight
        self._head: Any = None
        self._task: asyncio.Task | None = None
        self.first_kind: str | None = None  # "bytes", "text" or "json", once a chunk is produced

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._produce())

    async def first(self) -> bytes | None:
        """Wait for the first chunk; raise the generator's error if it fails before producing one.

        Returns None for a generator that produced nothing. Waiting for the first chunk lets a
        generator that fails straight away (bad input, HTTPException) get a proper error status.
        """
        head = await self._queue.get()
        if isinstance(head, _Failed):
            raise head.exc
        self._head = head
        return None if head is _END else head

    async def chunks(self) -> AsyncIterator[bytes]:
        """The remaining chunks; raises the generator's error if it fails mid-stream."""
        item = self._head if self._head is not None else await self._queue.get()
        while item is not _END:
            if isinstance(item, _Failed):
                raise item.exc
            yield item
            item = await self._queue.get()

    async def aclose(self) -> None:
        """Stop producing (client gone) and close the generator; idempotent."""
        if self._task is not None and not self._task.done():
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass

    async def _next_sync(self) -> Any:
        ctx = contextvars.copy_context()
        self._pending = self._executor.submit(ctx.run, next, self._gen, _END)
        try:
            return await asyncio.wrap_future(self._pending)
        finally:
            if self._pending.done():
                self._pending = None

    async def _close_generator(self) -> None:
        if self._is_async:
            await self._gen.aclose()
            return
        if self._pending is not None:  # cancelled while next() runs: let it return first
            try:
                await asyncio.wrap_future(self._pending)
            except BaseException:
                pass
        ctx = contextvars.copy_context()
        await asyncio.wrap_future(self._executor.submit(ctx.run, self._gen.close))

    async def _put(self, item: Any) -> None:
        if self.first_kind is None:
            self.first_kind = chunk_kind(item)
        await self._queue.put(encode_chunk(item))

    async def _produce(self) -> None:
        outcome: Any = _END
        try:
            if self._is_async:
                async for item in self._gen:
                    await self._put(item)
            else:
                while (item := await self._next_sync()) is not _END:
                    await self._put(item)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._on_error(exc)
            outcome = _Failed(exc)
        finally:
            try:
                await self._close_generator()
            except Exception as exc:  # an error in the user's finally: log it, nothing to send
                self._on_error(exc)
            finally:
                self._on_done()  # free the concurrency slot before the client has read it all
        await self._queue.put(outcome)


class StreamResponse:
    """An ASGI response that sends a `BufferedStream` and stops it when the client leaves.

    An error after the first chunk cannot change the status any more: the error is logged and
    the response is ended without its final empty chunk, so the client sees a broken stream
    rather than a clean end.
    """

    def __init__(self, stream: BufferedStream, *, media_type: str, headers: dict[str, str] | None = None) -> None:
        self.stream = stream
        self.media_type = media_type
        self.headers = headers or {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = [(b"content-type", self.media_type.encode())]
        headers += [(k.lower().encode(), v.encode()) for k, v in self.headers.items()]

        async def send_all() -> None:
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            try:
                async for chunk in self.stream.chunks():
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
            except Exception:
                return  # already logged by the producer; leave the response incomplete
            await send({"type": "http.response.body", "body": b"", "more_body": False})

        try:
            left, _ = await race_disconnect(receive, send_all())
            if left:
                logger.info("client disconnected; closing the stream")
        finally:
            await self.stream.aclose()
