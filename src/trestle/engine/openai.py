"""The OpenAI rendering of a generation: Chat Completions and Completions, whole or as SSE.

One object per route, built per request, in the manner of LitServe's `specs/openai.py`:

    rendering = ChatRendering(model, req, prepared)
    rendering.whole(results) -> ChatCompletion          # non-streaming body
    rendering.chunks(outputs) -> SSE frames             # `data: {chunk}` ..., `data: [DONE]`

`engine/generation.py` runs the request and calls one or the other; another protocol's
rendering (e.g. Anthropic Messages) sits beside this module with the same two methods.
`chat_response` / `completion_response` are the route handlers' entry points. The response
types are `trestle.protocol.openai.responses`.

When the request allows tool calls, the chat rendering reads them out of the text with
`trestle.engine.chat.tools.ToolCallParser` - the same parser for the whole body and for the chunks,
so streamed `content` and argument fragments, concatenated, equal the whole answer.
"""

from __future__ import annotations

import json
import logging
from typing import AsyncIterator

from starlette.requests import Request
from starlette.responses import Response

from trestle.engine.chat import tools
from trestle.engine.chat.prompts import Prepared
from trestle.engine.generation import answer
from trestle.engine.model import EngineModel
from trestle.engine.scheduler import Scheduler
from trestle.engine.sequence import Output, TokenOut
from trestle.errors import TrestleError
from trestle.protocol.errors import error_body
from trestle.protocol.openai import responses as r
from trestle.protocol.openai.requests import ChatCompletionRequest, CompletionRequest

log = logging.getLogger(__name__)

DONE = b"data: [DONE]\n\n"


def sse(payload) -> bytes:
    """One server-sent event carrying `payload` (a pydantic model or plain JSON data)."""
    if hasattr(payload, "model_dump_json"):
        return b"data: " + payload.model_dump_json().encode() + b"\n\n"
    return b"data: " + json.dumps(payload).encode() + b"\n\n"


def _usage(last: Output) -> r.Usage:
    return r.Usage(
        prompt_tokens=last.prompt_tokens,
        completion_tokens=last.completion_tokens,
        total_tokens=last.prompt_tokens + last.completion_tokens,
    )


def _token_text(model: EngineModel, t: int) -> str:
    return model.piece(t, special=True).decode("utf-8", "replace")


class _OpenAIRendering:
    """What chat and completions share: the request, logprobs and usage options, SSE framing."""

    def __init__(self, model: EngineModel, req: ChatCompletionRequest | CompletionRequest, prepared: Prepared):
        self.model = model
        self.req = req
        self.prepared = prepared
        self.stream = bool(req.stream)
        self.want_logprobs = prepared.spec.sampling.logprobs
        self.include_usage = bool(req.stream_options and req.stream_options.include_usage)
        self.continuous_usage = bool(req.stream_options and req.stream_options.continuous_usage_stats)
        self.fingerprint = model.info.fingerprint or None  # on every response and chunk

    def usage_so_far(self, out: Output) -> r.Usage | None:
        """The usage for every chunk of a stream that asked for `continuous_usage_stats`."""
        return _usage(out) if self.continuous_usage else None

    def text(self, results: list[Output]) -> str:
        return self.prepared.echo + "".join(o.text for o in results)

    async def chunks(self, outputs: AsyncIterator[Output]) -> AsyncIterator[bytes]:
        """The frames of `frames(outputs)`, an error frame if generation fails midway, `[DONE]`."""
        try:
            async for frame in self.frames(outputs):
                yield frame
        except TrestleError as exc:
            log.warning("stream ended with an error: %s", exc.message)
            yield sse(error_body(exc))
        yield DONE

    def frames(self, outputs: AsyncIterator[Output]) -> AsyncIterator[bytes]:
        raise NotImplementedError


# -- chat ------------------------------------------------------------------------------------
def _finish(reason: str | None, called: bool) -> str | None:
    """A generation that ended normally after calling tools ends with "tool_calls"."""
    return "tool_calls" if called and reason == "stop" else reason


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


class ChatRendering(_OpenAIRendering):
    req: ChatCompletionRequest

    def logprobs(self, tokens: list[TokenOut]) -> r.ChoiceLogprobs:
        content = []
        for t in tokens:
            top = [
                r.TopLogprob(
                    token=_token_text(self.model, tid), logprob=lp,
                    bytes=list(self.model.piece(tid, special=True)),
                )
                for tid, lp in (t.top or [])
            ]
            content.append(
                r.ChatCompletionTokenLogprob(
                    token=t.text.decode("utf-8", "replace"),
                    logprob=t.logprob,
                    bytes=list(t.text),
                    top_logprobs=top,
                )
            )
        return r.ChoiceLogprobs(content=content)

    def message(self, text: str) -> r.ChatMessage:
        """The assistant message: tool calls read out of the text when the request allows them."""
        if not self.prepared.tool_calls:
            return r.ChatMessage(content=text)
        parsed = tools.parse(text, calls_first=self.prepared.calls_first)
        if not parsed.calls:
            return r.ChatMessage(content=parsed.content)
        calls = [
            r.ToolCall(id=c.id, function=r.FunctionCall(name=c.name, arguments=c.arguments))
            for c in parsed.calls
        ]
        return r.ChatMessage(content=parsed.content or None, tool_calls=calls)

    def whole(self, results: list[Output]) -> r.ChatCompletion:
        last = results[-1]
        tokens = [t for o in results for t in o.tokens]
        message = self.message(self.text(results))
        return r.ChatCompletion(
            model=self.req.model,
            system_fingerprint=self.fingerprint,
            choices=[
                r.ChatCompletionChoice(
                    message=message,
                    finish_reason=_finish(last.finish_reason, bool(message.tool_calls)),
                    logprobs=self.logprobs(tokens) if self.want_logprobs else None,
                )
            ],
            usage=_usage(last),
        )

    async def frames(self, outputs: AsyncIterator[Output]) -> AsyncIterator[bytes]:
        cid, created, model = r.chat_completion_id(), r.now(), self.req.model

        def chunk(delta: r.ChatDelta, finish=None, logprobs=None, usage=None) -> bytes:
            return sse(
                r.ChatCompletionChunk(
                    id=cid, created=created, model=model, system_fingerprint=self.fingerprint,
                    choices=[r.ChatCompletionChunkChoice(delta=delta, finish_reason=finish, logprobs=logprobs)],
                    usage=usage,
                )
            )

        parser = None
        if self.prepared.tool_calls:
            parser = tools.ToolCallParser(calls_first=self.prepared.calls_first)
        yield chunk(r.ChatDelta(role="assistant", content=""))
        if self.prepared.echo:
            yield chunk(r.ChatDelta(content=self.prepared.echo))
        async for out in outputs:
            lp = self.logprobs(out.tokens) if self.want_logprobs and out.tokens else None
            if parser is not None:
                events = parser.feed(out.text) + (parser.finish() if out.finish_reason else [])
                delta = _tool_delta(events)
                finish = _finish(out.finish_reason, bool(parser.parsed.calls))
                if delta.content or delta.tool_calls or lp is not None or finish:
                    yield chunk(delta, finish, lp, self.usage_so_far(out))
            elif out.text or lp is not None or out.finish_reason:
                yield chunk(r.ChatDelta(content=out.text or None), out.finish_reason, lp, self.usage_so_far(out))
            if out.finish_reason and self.include_usage:
                yield sse(r.ChatCompletionChunk(
                    id=cid, created=created, model=model, system_fingerprint=self.fingerprint,
                    choices=[], usage=_usage(out),
                ))


# -- text completions ------------------------------------------------------------------------
class CompletionRendering(_OpenAIRendering):
    req: CompletionRequest

    def logprobs(self, tokens: list[TokenOut], text_before: int) -> r.CompletionLogprobs:
        """Logprobs of `tokens`, whose text starts `text_before` characters into the output."""
        lp = r.CompletionLogprobs()
        pos = len(self.prepared.echo) + text_before
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

    def whole(self, results: list[Output]) -> r.Completion:
        last = results[-1]
        tokens = [t for o in results for t in o.tokens]
        logprobs = self.logprobs(tokens, 0) if self.want_logprobs else None
        return r.Completion(
            model=self.req.model,
            system_fingerprint=self.fingerprint,
            choices=[r.CompletionChoice(text=self.text(results), finish_reason=last.finish_reason, logprobs=logprobs)],
            usage=_usage(last),
        )

    async def frames(self, outputs: AsyncIterator[Output]) -> AsyncIterator[bytes]:
        cid, created, model = r.completion_id(), r.now(), self.req.model
        sent = 0

        def chunk(text: str, finish=None, logprobs=None, usage=None) -> bytes:
            return sse(
                r.Completion(
                    id=cid, created=created, model=model, system_fingerprint=self.fingerprint,
                    choices=[r.CompletionChoice(text=text, finish_reason=finish, logprobs=logprobs)],
                    usage=usage,
                )
            )

        if self.prepared.echo:
            yield chunk(self.prepared.echo)
        async for out in outputs:
            lp = self.logprobs(out.tokens, sent) if self.want_logprobs and out.tokens else None
            if out.text or lp is not None or out.finish_reason:
                yield chunk(out.text, out.finish_reason, lp, self.usage_so_far(out))
            sent += len(out.text)
            if out.finish_reason and self.include_usage:
                yield sse(r.Completion(
                    id=cid, created=created, model=model, system_fingerprint=self.fingerprint,
                    choices=[], usage=_usage(out),
                ))


# -- the routes' entry points ----------------------------------------------------------------
async def chat_response(
    request: Request, scheduler: Scheduler, model: EngineModel, req: ChatCompletionRequest, prepared: Prepared
) -> Response:
    return await answer(request, scheduler, model, prepared, ChatRendering(model, req, prepared))


async def completion_response(
    request: Request, scheduler: Scheduler, model: EngineModel, req: CompletionRequest, prepared: Prepared
) -> Response:
    return await answer(request, scheduler, model, prepared, CompletionRendering(model, req, prepared))
