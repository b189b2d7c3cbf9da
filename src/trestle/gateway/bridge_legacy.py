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

Usage is only what the model reports; where it reports none, `usage` is left out and the
response carries `x-trestle-usage: not-computed` (never a made-up zero). When the client asks
for a stream and the model returns a whole value, the value is sent as one streamed delta.
An error answer of the worker keeps its status; its body becomes the envelope (predict answers
errors in Truss's shape).
"""

from __future__ import annotations

import codecs
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

from starlette.types import Receive, Scope, Send

from trestle import requestid
from trestle.deploy.transport import Replica, Upstream
from trestle.disconnect import race_disconnect
from trestle.errors import UpstreamError
from trestle.gateway.proxy import DROP_REQUEST, DROP_RESPONSE, sse_error_event
from trestle.protocol.errors import envelope_from_truss
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


def split_result(result: Any) -> tuple[str, Usage | None, str]:
    """(content, reported usage or None, finish_reason) of a whole predict result."""
    if isinstance(result, dict) and "output" in result and "usage" in result:
        return content_of(result["output"]), usage_of(result["usage"]), finish_of(result.get("finish_reason"))
    return content_of(result), None, "stop"


class LegacyAnswer:
    """The ASGI answer: calls predict, wraps its result (`method`: chat_completions | completions)."""

    def __init__(self, replica: Replica, method: str, payload: dict[str, Any], model: str,
                 headers: list[tuple[bytes, bytes]], request_id: str):
        self.replica = replica
        self.chat = method == "chat_completions"
        self.payload = payload
        self.model = model
        self.stream = payload.get("stream") is True
        options = payload.get("stream_options")
        self.include_usage = isinstance(options, dict) and options.get("include_usage") is True
        self.headers = [(k, v) for k, v in headers if k not in DROP_REQUEST and k != b"content-type"]
        self.headers += [(b"content-type", JSON), (requestid.HEADER.encode(), request_id.encode())]
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
                await self._stream(pieces(upstream, ctype), send)
            else:
                text = "".join([p async for p in pieces(upstream, ctype)])
                await self._json(self._completion(text, None, "stop"), send, usage=None)

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
            async def one() -> AsyncIterator[str]:
                yield content
            await self._stream(one(), send, usage=usage, finish=finish)
        else:
            await self._json(self._completion(content, usage, finish), send, usage=usage)

    def _completion(self, content: str, usage: Usage | None, finish: str) -> dict:
        if self.chat:
            answer: Any = ChatCompletion(
                id=self.id, created=self.created, model=self.model, usage=usage,
                choices=[ChatCompletionChoice(message=ChatMessage(content=content), finish_reason=finish)])
        else:
            answer = Completion(id=self.id, created=self.created, model=self.model, usage=usage,
                                choices=[CompletionChoice(text=content, finish_reason=finish)])
        return answer.model_dump(mode="json", exclude_none=True)

    async def _json(self, value: Any, send: Send, *, usage: Usage | None, passthrough: bool = False) -> None:
        headers = [(b"content-type", JSON)]
        if not passthrough:
            headers.append((USAGE_HEADER, b"model" if usage else b"not-computed"))
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

    async def _stream(self, texts: AsyncIterator[str], send: Send, *, usage: Usage | None = None,
                      finish: str = "stop") -> None:
        headers = [*SSE_HEADERS, (USAGE_HEADER, b"model" if usage else b"not-computed")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})

        async def event(value: dict) -> None:
            data = b"data: " + json.dumps(value, ensure_ascii=False).encode() + b"\n\n"
            await send({"type": "http.response.body", "body": data, "more_body": True})

        if self.chat:
            await event(self._chunk(None, role=True))
        try:
            async for text in texts:
                if text:
                    await event(self._chunk(text))
        except UpstreamError as exc:
            log.warning("deployment %s: the stream broke: %s", self.replica.deployment_id, exc.message)
            await send({"type": "http.response.body", "body": sse_error_event(exc), "more_body": True})
            await send({"type": "http.response.body", "body": b""})
            return
        await event(self._chunk(None, finish=finish))
        if usage is not None and self.include_usage:
            await event(self._usage_chunk(usage))
        await send({"type": "http.response.body", "body": b"data: [DONE]\n\n"})


async def pieces(upstream: Upstream, ctype: bytes) -> AsyncIterator[str]:
    """The text of a streamed predict, piece by piece as it arrives (NDJSON: one value a line)."""
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
                yield content_of(json.loads(line))
    buffer += decoder.decode(b"", final=True)
    if buffer.strip():
        yield content_of(json.loads(buffer))
