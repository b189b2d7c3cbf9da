"""The legacy OpenAI bridge: a predict-only model answers in the OpenAI shapes.

The request body, less `baseten`, goes to the worker's `/predict` as is (`messages`,
`max_tokens`, `stream` and any extra field reach the model). What predict returns becomes:

    a string                      the assistant's content (the completion's text)
    a dict with `choices`         passed through untouched (the model already speaks OpenAI)
    {"output": X, "usage": {...}} X is the content (a string, else its JSON text); usage reported
    any other JSON value          its JSON text is the content
    a stream of text (yield)      `chat.completion.chunk`s (`text_completion` chunks): a role
                                  delta, a content delta per piece as produced, a last chunk with
                                  `finish_reason`, then `data: [DONE]`
    a stream of JSON values       the same; a value `{"text": ...}` is a piece of text, and
                                  `{"usage": {...}, "finish_reason"?: ...}` (usually last) is the
                                  model's report, not content; any other value is its JSON text

Usage is what the model reports; else, when the deployment's config names a tokenizer
(`bridge.tokenizer`, `trestle.tokencount`), what it counts; else `usage` is left out (never a
made-up zero). The `x-trestle-usage` header says which: `model`, `tokenizer`, `not-computed`
(a stream sends it before the model's report can come: `tokenizer` when one is configured, else
`not-computed`; a report at the end of the stream is sent in the usage chunk either way).
When the client asks for a stream and the model returns a whole value, the value is sent as one
streamed delta. An error answer of the worker keeps its status; its body becomes the envelope (predict
answers errors in Truss's shape).
"""

from __future__ import annotations

import asyncio
import codecs
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from starlette.types import Receive, Scope, Send

from trestle import requestid
from trestle.deploy.transport import Replica, Upstream
from trestle.disconnect import race_disconnect
from trestle.errors import UpstreamError
from trestle.gateway.proxy import DROP_REQUEST, DROP_RESPONSE, sse_error_event
from trestle.protocol.errors import envelope_from_truss
from trestle.tokencount import TokenCounter
from trestle.protocol.openai.responses import (
    ChatCompletion, ChatCompletionChoice, ChatCompletionChunk, ChatCompletionChunkChoice, ChatDelta,
    ChatMessage, Completion, CompletionChoice, Usage, chat_completion_id, completion_id, now,
)

MAX_ERROR_BYTES = 64 * 1024  # a predict error body read whole to turn it into the envelope

log = logging.getLogger("trestle.gateway")

USAGE_HEADER = b"x-trestle-usage"
JSON = b"application/json"
SSE_HEADERS = [(b"content-type", b"text/event-stream; charset=utf-8"), (b"cache-control", b"no-cache")]


def content_of(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def usage_of(value: Any) -> Usage | None:
    if not isinstance(value, dict):
        return None
    prompt, completion = value.get("prompt_tokens"), value.get("completion_tokens")
    if not isinstance(prompt, int) or not isinstance(completion, int):
        return None
    return Usage(prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion)


def finish_of(value: Any) -> str:
    return value if value in ("stop", "length") else "stop"


@dataclass(frozen=True)
class Report:
    """What a streaming predict reports besides its text: `{"usage": ..., "finish_reason": ...}`."""

    usage: Usage | None
    finish_reason: str | None


REPORT_KEYS = frozenset({"text", "usage", "finish_reason"})


def split_result(result: Any) -> tuple[str, Usage | None, str]:
    """(content, reported usage or None, finish_reason) of a whole predict result."""
    if isinstance(result, dict) and "output" in result and "usage" in result:
        return content_of(result["output"]), usage_of(result["usage"]), finish_of(result.get("finish_reason"))
    return content_of(result), None, "stop"


class LegacyAnswer:
    """The ASGI answer: calls predict, wraps its result (`method`: chat_completions | completions)."""

    def __init__(self, replica: Replica, method: str, payload: dict[str, Any], model: str,
                 headers: list[tuple[bytes, bytes]], request_id: str,
                 counter: TokenCounter | None = None):
        self.replica = replica
        self.counter = counter  # the deployment's `bridge.tokenizer`, if any
        self.chat = method == "chat_completions"
        self.payload = payload
        self.model = model
        self.stream = payload.get("stream") is True
        options = payload.get("stream_options")
        self.include_usage = isinstance(options, dict) and options.get("include_usage") is True
        # The bridge reads predict's answer as it comes, a stream included: the client's Accept
        # (application/json from OpenAI clients) would have the worker gather a stream into one
        # JSON value.
        self.headers = [(k, v) for k, v in headers
                        if k not in DROP_REQUEST and k not in (b"content-type", b"accept")]
        self.headers += [(b"content-type", JSON), (b"accept", b"*/*"),
                         (requestid.HEADER.encode(), request_id.encode())]
        self.id = chat_completion_id() if self.chat else completion_id()
        self.created = now()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        left, _ = await race_disconnect(receive, self._exchange(send))
        if left:
            log.info("client went away; closed the request to deployment %s", self.replica.deployment_id)

    async def _exchange(self, send: Send) -> None:
        body = json.dumps(self.payload).encode()
        upstream = await self.replica.send("POST", "/predict", self.headers, body)
        async with upstream:
            ctype = dict((k.lower(), v) for k, v in upstream.headers).get(b"content-type", b"")
            if upstream.status != 200:
                await self._relay(upstream, send)
            elif ctype.startswith(JSON):
                raw = b"".join([c async for c in upstream.chunks])
                try:
                    result = json.loads(raw) if raw else None
                except ValueError:
                    raise UpstreamError(f"deployment {self.replica.deployment_id} answered predict with "
                                        "invalid JSON") from None
                await self._whole(result, send)
            elif self.stream:
                await self._stream(pieces(upstream, ctype), send, counted=True)
            else:
                texts, report = [], Report(None, None)
                async for piece in pieces(upstream, ctype):
                    if isinstance(piece, Report):
                        report = Report(piece.usage or report.usage, piece.finish_reason or report.finish_reason)
                    else:
                        texts.append(piece)
                text = "".join(texts)
                usage, source = await self._usage(report.usage, text)
                await self._json(self._completion(text, usage, finish_of(report.finish_reason)), send,
                                 usage=source)

    async def _relay(self, upstream: Upstream, send: Send) -> None:
        """An error of predict, in the envelope (predict answers errors in Truss's shape)."""
        headers = [(k.lower(), v) for k, v in upstream.headers if k.lower() not in DROP_RESPONSE]
        body, rest = b"", upstream.chunks.__aiter__()
        async for chunk in rest:
            body += chunk
            if len(body) > MAX_ERROR_BYTES:  # not an error message: relay it as it comes
                break
        envelope = envelope_from_truss(upstream.status, body) if len(body) <= MAX_ERROR_BYTES else None
        if envelope is not None:
            body = envelope
            headers = [(k, v) for k, v in headers if k not in (b"content-length", b"content-type")]
            headers += [(b"content-type", b"application/json"),
                        (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": upstream.status, "headers": headers})
        await send({"type": "http.response.body", "body": body, "more_body": True})
        async for chunk in rest:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b""})

    async def _whole(self, result: Any, send: Send) -> None:
        if isinstance(result, dict) and "choices" in result:
            await self._json(result, send, usage=None, passthrough=True)
            return
        content, usage, finish = split_result(result)
        if self.stream:
            async def one() -> AsyncIterator[str | Report]:
                yield content
                yield Report(usage, finish)
            await self._stream(one(), send, counted=usage is None)
        else:
            usage, source = await self._usage(usage, content)
            await self._json(self._completion(content, usage, finish), send, usage=source)

    async def _usage(self, reported: Usage | None, completion: str) -> tuple[Usage | None, bytes]:
        """The usage to send and the `x-trestle-usage` value: the model's, else the tokenizer's."""
        if reported is not None:
            return reported, b"model"
        if self.counter is None:
            return None, b"not-computed"
        try:
            usage = await asyncio.to_thread(self.counter.usage, self.payload, completion, chat=self.chat)
        except Exception:  # a tokenizer that fails on this text: say so rather than fail the answer
            log.exception("deployment %s: counting tokens failed", self.replica.deployment_id)
            return None, b"not-computed"
        return usage, b"tokenizer"

    def _completion(self, content: str, usage: Usage | None, finish: str) -> dict:
        if self.chat:
            answer: Any = ChatCompletion(
                id=self.id, created=self.created, model=self.model, usage=usage,
                choices=[ChatCompletionChoice(message=ChatMessage(content=content), finish_reason=finish)])
        else:
            answer = Completion(id=self.id, created=self.created, model=self.model, usage=usage,
                                choices=[CompletionChoice(text=content, finish_reason=finish)])
        return answer.model_dump(mode="json", exclude_none=True)

    async def _json(self, value: Any, send: Send, *, usage: bytes | None, passthrough: bool = False) -> None:
        headers = [(b"content-type", JSON)]
        if not passthrough:
            headers.append((USAGE_HEADER, usage or b"not-computed"))
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": json.dumps(value, ensure_ascii=False).encode()})

    def _chunk(self, text: str | None, *, role: bool = False, finish: str | None = None) -> dict:
        if self.chat:
            delta = ChatDelta(role="assistant" if role else None, content=text)
            chunk: Any = ChatCompletionChunk(id=self.id, created=self.created, model=self.model,
                                             choices=[ChatCompletionChunkChoice(delta=delta, finish_reason=finish)])
        else:
            chunk = Completion(id=self.id, created=self.created, model=self.model,
                               choices=[CompletionChoice(text=text or "", finish_reason=finish)])
        out = chunk.model_dump(mode="json", exclude_none=True)
        if self.chat:  # `finish_reason: null` is part of every OpenAI chunk
            out["choices"][0]["finish_reason"] = finish
        return out

    def _usage_chunk(self, usage: Usage) -> dict:
        cls = ChatCompletionChunk if self.chat else Completion
        return cls(id=self.id, created=self.created, model=self.model, choices=[],
                   usage=usage).model_dump(mode="json", exclude_none=True)

    async def _stream(self, texts: AsyncIterator[str | Report], send: Send, *, counted: bool) -> None:
        """`texts`: the pieces, and `Report`s; `counted`: the tokenizer may stand in for a missing
        report (False when the model's usage is known before the stream starts)."""
        if not counted:
            source = b"model"
        else:
            source = b"tokenizer" if self.counter is not None else b"not-computed"
        headers = [*SSE_HEADERS, (USAGE_HEADER, source)]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        usage, finish, sent = None, "stop", []
        keep = counted and self.include_usage and self.counter is not None  # the text, to count

        async def event(value: dict) -> None:
            data = b"data: " + json.dumps(value, ensure_ascii=False).encode() + b"\n\n"
            await send({"type": "http.response.body", "body": data, "more_body": True})

        if self.chat:
            await event(self._chunk(None, role=True))
        try:
            async for text in texts:
                if isinstance(text, Report):
                    usage, finish = text.usage or usage, finish_of(text.finish_reason or finish)
                elif text:
                    if keep:
                        sent.append(text)
                    await event(self._chunk(text))
        except UpstreamError as exc:
            log.warning("deployment %s: the stream broke: %s", self.replica.deployment_id, exc.message)
            await send({"type": "http.response.body", "body": sse_error_event(exc), "more_body": True})
            await send({"type": "http.response.body", "body": b""})
            return
        await event(self._chunk(None, finish=finish))
        if self.include_usage:
            if usage is None and keep:
                usage, _ = await self._usage(None, "".join(sent))
            if usage is not None:
                await event(self._usage_chunk(usage))
        await send({"type": "http.response.body", "body": b"data: [DONE]\n\n"})


async def pieces(upstream: Upstream, ctype: bytes) -> AsyncIterator[str | Report]:
    """The text of a streamed predict, piece by piece as it arrives, and the model's `Report`s
    (NDJSON: one value a line)."""
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    if not ctype.startswith(b"application/x-ndjson"):
        async for chunk in upstream.chunks:
            yield decoder.decode(chunk)
        yield decoder.decode(b"", final=True)
        return
    buffer = ""
    async for chunk in upstream.chunks:
        buffer += decoder.decode(chunk)
        *lines, buffer = buffer.split("\n")
        for line in lines:
            if line.strip():
                for part in parts_of(_json_line(line)):
                    yield part
    buffer += decoder.decode(b"", final=True)
    if buffer.strip():
        for part in parts_of(_json_line(buffer)):
            yield part


def _json_line(line: str) -> Any:
    try:
        return json.loads(line)
    except (ValueError, RecursionError):
        raise UpstreamError("the model streamed a line that is not JSON") from None


def parts_of(value: Any) -> list[str | Report]:
    """One streamed JSON value: `{"text", "usage", "finish_reason"}` (any of them) is text and a
    report; any other value is its JSON text."""
    if not (isinstance(value, dict) and value and value.keys() <= REPORT_KEYS
            and isinstance(value.get("text", ""), str)):
        return [content_of(value)]
    out: list[str | Report] = [value["text"]] if value.get("text") else []
    if "usage" in value or "finish_reason" in value:
        finish = value.get("finish_reason")
        out.append(Report(usage_of(value.get("usage")), finish if finish in ("stop", "length") else None))
    return out
