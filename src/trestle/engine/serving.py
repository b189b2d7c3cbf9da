"""Run a prepared request through the scheduler and answer in the OpenAI format.

`Generation` is the bridge between the engine thread and asyncio: the sequence's outputs arrive
through `loop.call_soon_threadsafe` on a per-request queue (merged when several are waiting),
and leaving the iterator early (the client went away, the task was cancelled) cancels the
sequence so its slot is freed at the next engine step. Non-streaming answers watch for
`http.disconnect` while they wait; streaming ones rely on Starlette's `StreamingResponse`,
which cancels the body iterator on disconnect.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import AsyncIterator, Callable

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from trestle.disconnect import race_disconnect
from trestle.engine import tools
from trestle.engine.prompts import Prepared
from trestle.engine.sequence import Output, Sequence, TokenOut, merge
from trestle.errors import TrestleError
from trestle.protocol.errors import error_body
from trestle.protocol import openai_responses as r

log = logging.getLogger(__name__)

SSE_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}


class Generation:
    """One submitted request. Submitting happens at construction, so that a full queue is a
    429 before any response (even a stream) has started; iterate it for the outputs."""

    def __init__(self, scheduler, model, prepared: Prepared):
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


def _usage(last: Output) -> r.Usage:
    return r.Usage(
        prompt_tokens=last.prompt_tokens,
        completion_tokens=last.completion_tokens,
        total_tokens=last.prompt_tokens + last.completion_tokens,
    )


def _token_text(model, t: int) -> str:
    return model.piece(t, special=True).decode("utf-8", "replace")


def _chat_logprobs(model, tokens: list[TokenOut]) -> list[r.ChatCompletionTokenLogprob]:
    out = []
    for t in tokens:
        top = [
            r.TopLogprob(
                token=_token_text(model, tid), logprob=lp, bytes=list(model.piece(tid, special=True))
            )
            for tid, lp in (t.top or [])
        ]
        out.append(
            r.ChatCompletionTokenLogprob(
                token=t.text.decode("utf-8", "replace"),
                logprob=t.logprob,
                bytes=list(t.text),
                top_logprobs=top,
            )
        )
    return out


def _sse(payload) -> bytes:
    if hasattr(payload, "model_dump_json"):
        return b"data: " + payload.model_dump_json().encode() + b"\n\n"
    return b"data: " + json.dumps(payload).encode() + b"\n\n"


DONE = b"data: [DONE]\n\n"


async def _sse_stream(body: Callable[[], AsyncIterator[bytes]]) -> AsyncIterator[bytes]:
    """Frames from `body`, an error frame if generation fails midway, then `[DONE]`."""
    try:
        async for frame in body():
            yield frame
    except TrestleError as exc:
        log.warning("stream ended with an error: %s", exc.message)
        yield _sse(error_body(exc))
    yield DONE


# -- chat --------------------------------------------------------------------------------------
async def _respond(request, scheduler, model, req, prepared: Prepared, chunks, whole) -> Response:
    """Submit the request; stream `chunks(...)` as SSE, or answer `whole(text, tokens, last)`."""
    outputs = Generation(scheduler, model, prepared)
    want_lp = prepared.spec.sampling.logprobs
    if req.stream:
        return StreamingResponse(
            _sse_stream(lambda: chunks(model, req, prepared, outputs, want_lp)),
            media_type="text/event-stream",
            headers=SSE_HEADERS,
        )
    results = await collect(request, outputs)
    text = prepared.echo + "".join(o.text for o in results)
    tokens = [t for o in results for t in o.tokens]
    body = whole(text, tokens, results[-1], want_lp)
    return JSONResponse(body.model_dump())


def _finish(reason: str | None, called: bool) -> str | None:
    """A generation that ended normally after calling tools ends with "tool_calls"."""
    return "tool_calls" if called and reason == "stop" else reason


def _chat_message(text: str, prepared: Prepared) -> r.ChatMessage:
    """The assistant message: tool calls read out of the text when the request allows them."""
    if not prepared.tool_calls:
        return r.ChatMessage(content=text)
    parsed = tools.parse(text)
    if not parsed.calls:
        return r.ChatMessage(content=parsed.content)
    calls = [
        r.ToolCall(id=c.id, function=r.FunctionCall(name=c.name, arguments=c.arguments))
        for c in parsed.calls
    ]
    return r.ChatMessage(content=parsed.content or None, tool_calls=calls)


def _tool_delta(events: list) -> r.ChatDelta:
    """One chunk's delta from the tool-call parser's events (content, call starts, arguments)."""
    content = "".join(e for e in events if isinstance(e, str))
    calls = []
    for e in events:
        if isinstance(e, tools.CallStart):
            fn = r.FunctionCallDelta(name=e.name, arguments="")
            calls.append(r.ToolCallDelta(index=e.index, id=e.id, type="function", function=fn))
        elif isinstance(e, tools.ArgsDelta):
            calls.append(r.ToolCallDelta(index=e.index, function=r.FunctionCallDelta(arguments=e.text)))
    return r.ChatDelta(content=content or None, tool_calls=calls or None)


async def chat_response(request, scheduler, model, req, prepared: Prepared) -> Response:
    def whole(text, tokens, last, want_lp) -> r.ChatCompletion:
        message = _chat_message(text, prepared)
        return r.ChatCompletion(
            model=req.model,
            choices=[
                r.ChatCompletionChoice(
                    message=message,
                    finish_reason=_finish(last.finish_reason, bool(message.tool_calls)),
                    logprobs=r.ChoiceLogprobs(content=_chat_logprobs(model, tokens)) if want_lp else None,
                )
            ],
            usage=_usage(last),
        )

    return await _respond(request, scheduler, model, req, prepared, _chat_chunks, whole)


async def _chat_chunks(model, req, prepared, outputs, want_lp) -> AsyncIterator[bytes]:
    cid, created = r.chat_completion_id(), r.now()

    def chunk(delta: r.ChatDelta, finish=None, logprobs=None) -> bytes:
        return _sse(
            r.ChatCompletionChunk(
                id=cid, created=created, model=req.model,
                choices=[r.ChatCompletionChunkChoice(delta=delta, finish_reason=finish, logprobs=logprobs)],
            )
        )

    parser = tools.ToolCallParser() if prepared.tool_calls else None
    yield chunk(r.ChatDelta(role="assistant", content=""))
    if prepared.echo:
        yield chunk(r.ChatDelta(content=prepared.echo))
    async for out in outputs:
        lp = r.ChoiceLogprobs(content=_chat_logprobs(model, out.tokens)) if want_lp and out.tokens else None
        if parser is not None:
            events = parser.feed(out.text) + (parser.finish() if out.finish_reason else [])
            delta = _tool_delta(events)
            finish = _finish(out.finish_reason, bool(parser.parsed.calls))
            if delta.content or delta.tool_calls or lp is not None or finish:
                yield chunk(delta, finish, lp)
        elif out.text or lp is not None or out.finish_reason:
            yield chunk(r.ChatDelta(content=out.text or None), out.finish_reason, lp)
        if out.finish_reason and req.stream_options and req.stream_options.include_usage:
            yield _sse(
                r.ChatCompletionChunk(id=cid, created=created, model=req.model, choices=[], usage=_usage(out))
            )


# -- text completions --------------------------------------------------------------------------
class _CompletionLogprobs:
    def __init__(self, model, offset: int):
        self.model = model
        self.offset = offset

    def build(self, tokens: list[TokenOut], text_before: int) -> r.CompletionLogprobs:
        lp = r.CompletionLogprobs()
        pos = self.offset + text_before
        for t in tokens:
            s = t.text.decode("utf-8", "replace")
            lp.tokens.append(s)
            lp.token_logprobs.append(t.logprob)
            lp.top_logprobs.append(
                {_token_text(self.model, tid): v for tid, v in t.top} if t.top else None
            )
            lp.text_offset.append(pos)
            pos += len(s)
        return lp


async def completion_response(request, scheduler, model, req, prepared: Prepared) -> Response:
    def whole(text, tokens, last, want_lp) -> r.Completion:
        logprobs = _CompletionLogprobs(model, len(prepared.echo)).build(tokens, 0) if want_lp else None
        return r.Completion(
            model=req.model,
            choices=[r.CompletionChoice(text=text, finish_reason=last.finish_reason, logprobs=logprobs)],
            usage=_usage(last),
        )

    return await _respond(request, scheduler, model, req, prepared, _completion_chunks, whole)


async def _completion_chunks(model, req, prepared, outputs, want_lp) -> AsyncIterator[bytes]:
    cid, created = r.completion_id(), r.now()
    lpb = _CompletionLogprobs(model, len(prepared.echo))
    sent = 0

    def chunk(text: str, finish=None, logprobs=None) -> bytes:
        return _sse(
            r.Completion(
                id=cid, created=created, model=req.model,
                choices=[r.CompletionChoice(text=text, finish_reason=finish, logprobs=logprobs)],
            )
        )

    if prepared.echo:
        yield chunk(prepared.echo)
    async for out in outputs:
        lp = lpb.build(out.tokens, sent) if want_lp and out.tokens else None
        if out.text or lp is not None or out.finish_reason:
            yield chunk(out.text, out.finish_reason, lp)
        sent += len(out.text)
        if out.finish_reason and req.stream_options and req.stream_options.include_usage:
            yield _sse(r.Completion(id=cid, created=created, model=req.model, choices=[], usage=_usage(out)))
