"""The bridge between the engine thread and asyncio: one submitted request and its answer.

    outputs = Generation(scheduler, model, prepared)   # submitted now: a full queue is a 429 here
    async for out in outputs: ...                       # Outputs as the engine produces them
    results = await collect(request, outputs)           # all of them, unless the client leaves

The sequence's outputs arrive through `loop.call_soon_threadsafe` on a per-request queue
(merged when several are waiting), and leaving the iterator early (the client went away, the
task was cancelled) cancels the sequence so its slot is freed at the next engine step.

`answer(request, scheduler, model, prepared, rendering)` runs a request and puts it on the wire
through a `Rendering` - one object per protocol and route (engine/openai.py). Non-streaming
answers race the generation against `http.disconnect` (`trestle.disconnect`); streaming ones
rely on Starlette's `StreamingResponse`, which cancels the body iterator on disconnect.
"""

from __future__ import annotations

import asyncio
from typing import AsyncIterator, Protocol

from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from trestle.disconnect import race_disconnect
from trestle.engine.chat.prompts import Prepared
from trestle.engine.model import EngineModel
from trestle.engine.scheduler import Scheduler
from trestle.engine.sequence import Output, Sequence, merge
from trestle.errors import TrestleError

SSE_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}


class Generation:
    """One submitted request. Submitting happens at construction, so that a full queue is a
    429 before any response (even a stream) has started; iterate it for the outputs."""

    def __init__(self, scheduler: Scheduler, model: EngineModel, prepared: Prepared):
        loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue[Output] = asyncio.Queue()
        self._scheduler = scheduler
        self.seq = Sequence(prepared.spec, model, loop, self._queue.put_nowait)
        scheduler.submit(self.seq)  # TooManyRequests when the queue is full

    async def __aiter__(self) -> AsyncIterator[Output]:
        try:
            while True:
                pending = [await self._queue.get()]
                while not self._queue.empty():  # the reader fell behind: send what is there at once
                    pending.append(self._queue.get_nowait())
                out = merge(pending)
                if out.finish_reason == "error":
                    raise TrestleError(f"generation failed: {out.error}")
                yield out
                if out.finish_reason is not None:
                    return
        finally:
            if not self.seq.finished:
                self._scheduler.cancel(self.seq)


async def collect(request: Request, outputs: AsyncIterator[Output]) -> list[Output]:
    """All outputs of a non-streaming request; cancels generation if the client leaves."""

    async def run() -> list[Output]:
        return [out async for out in outputs]

    left, result = await race_disconnect(request.receive, run())
    if left:  # the generator's finally has freed the sequence
        raise asyncio.CancelledError
    return result


class Rendering(Protocol):
    """How one protocol puts a generation on the wire (e.g. `engine.openai.ChatRendering`)."""

    stream: bool  # answer with `chunks` (an event stream) rather than `whole`

    def whole(self, results: list[Output]) -> BaseModel:
        """The response body once generation has ended."""
        ...

    def chunks(self, outputs: AsyncIterator[Output]) -> AsyncIterator[bytes]:
        """The streamed body, framing included (errors midway and the end of the stream too)."""
        ...


async def answer(
    request: Request, scheduler: Scheduler, model: EngineModel, prepared: Prepared, rendering: Rendering
) -> Response:
    """Submit the request, then stream it or answer it whole, as `rendering` says."""
    outputs = Generation(scheduler, model, prepared)
    if rendering.stream:
        return StreamingResponse(
            rendering.chunks(outputs), media_type="text/event-stream", headers=SSE_HEADERS
        )
    results = await collect(request, outputs)
    return JSONResponse(rendering.whole(results).model_dump())
