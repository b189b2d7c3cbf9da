"""The Anthropic Messages API, `POST /v1/messages`, translated onto the OpenAI chat path.

    MessagesRequest ──to_chat──► an OpenAI chat request ──► the replica's /v1/chat/completions
    Message         ◄─to_message── ChatCompletion
    events          ◄─Events────── chat.completion.chunk SSE   (message_start, content_block_start /
                                                               delta / stop, message_delta, message_stop)

The replica is found as `/v1/chat/completions` finds it: `model` is a Model API slug, or
`model: "baseten/MODEL_ID[/DEPLOYMENT_ID]"` (or a `baseten` field) names a deployment through the
bridge, which must have an OpenAI mode (an engine, or a Model with `chat_completions`).
`Messages` is the route and its error boundary: an error before the answer starts is answered in
Anthropic's envelope (`trestle.protocol.anthropic.error_response`), one during a stream as an
`event: error`. The client's `x-api-key` (like its `Authorization`) never reaches the model.

Stop sequences: an engine is asked to keep a matched stop string in its output
(`include_stop_str_in_output`); it arrives at the end of the last chunk, where it is taken out and
reported as `stop_sequence`. Other deployments get plain `stop` (their stop reads `end_turn`).
Usage is what the model reports; where it reports none the counts are 0 and a non-streamed answer
carries `x-trestle-usage: not-computed`.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import AsyncIterator
from typing import Any

from pydantic import ValidationError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from trestle import requestid
from trestle.deploy.routing import RoutingTable
from trestle.deploy.transport import Replica, Upstream
from trestle.disconnect import race_disconnect
from trestle.errors import BadRequest, TrestleError, Unavailable, UpstreamError
from trestle.gateway import auth
from trestle.gateway.bridge import RETRY_AFTER_S, RETRYABLE, Bridge, parse_body
from trestle.gateway.bridge_legacy import USAGE_HEADER
from trestle.gateway.proxy import DROP_REQUEST, is_sse
from trestle.protocol import anthropic as a
from trestle.protocol.bridge import target_of, without_routing
from trestle.protocol.openai.responses import ChatCompletion, ChatCompletionChunk, Usage
from trestle.protocol.validation import to_bad_request

log = logging.getLogger("trestle.gateway")

PATH = "/v1/messages"
CHAT = "/v1/chat/completions"
JSON = b"application/json"
DROP = DROP_REQUEST | {b"x-api-key", b"content-type"}
SSE_HEADERS = [(b"content-type", b"text/event-stream; charset=utf-8"), (b"cache-control", b"no-cache")]
MAX_EVENT_BYTES = 16 * 1024 * 1024  # one upstream event (or an error body) at most
STOP_REASONS = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use"}


class Messages:
    """The route's ASGI app: parse, translate, route, answer; every error in Anthropic's shape."""

    def __init__(self, routing: RoutingTable, bridge: Bridge):
        self.routing = routing
        self.bridge = bridge

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = False

        async def tracked(message: dict) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            if scope["method"] != "POST":
                raise HTTPException(405, f"method {scope['method']} is not allowed on {PATH}; POST a message",
                                    headers={"Allow": "POST"})
            answer = await self._answer(Request(scope, receive))
            await answer(scope, receive, tracked)
        except Exception as exc:
            if started:
                raise
            headers = None
            if isinstance(exc, Unavailable) and exc.code in RETRYABLE:
                headers = {"Retry-After": RETRY_AFTER_S}
            elif not isinstance(exc, (TrestleError, HTTPException)):
                log.exception("unhandled error on %s", PATH, exc_info=exc)
                exc = TrestleError("internal error in the gateway; see its log")
            await a.error_response(exc, headers)(scope, receive, tracked)

    async def _answer(self, request: Request) -> ASGIApp:
        payload = parse_body(await request.body())
        target = target_of(payload)
        try:
            req = a.MessagesRequest.model_validate(without_routing(payload))
        except ValidationError as exc:
            raise to_bad_request(exc, a.MessagesRequest) from None
        chat = to_chat(req)
        if target is None:
            if (model_id := self.routing.slug_model(req.model)) is not None:
                auth.require_model(request.scope, model_id)
            replica = self.routing.route(slug=req.model)
        else:
            replica, methods = await self.bridge.resolve(request, target, payload)
            if "chat_completions" not in methods:
                raise BadRequest(f"model {target.model_id} has no OpenAI mode (no `chat_completions` method), "
                                 f"which {PATH} is translated onto; call it through /v1/chat/completions",
                                 param="model")
        engine = (self.routing.deployments[replica.deployment_id].config or {}).get("engine") or {}
        if engine.get("slug"):
            chat["model"] = engine["slug"]
        stops = (req.stop_sequences or []) if engine else []
        if stops:
            chat["include_stop_str_in_output"] = True
        return Answer(replica, chat, req, stops, request.scope["headers"], request.state.request_id)


# -- request: Anthropic -> OpenAI chat --------------------------------------------------------------
def _parts(blocks: list[a.TextBlock]) -> list[dict[str, str]]:
    return [{"type": "text", "text": block.text} for block in blocks]


def _tool_result(block: a.ToolResultBlock) -> dict[str, Any]:
    content: str | list[dict[str, str]] = (block.content if isinstance(block.content, str)
                                           else _parts(block.content or []))
    if block.is_error:
        content = f"Error: {content}" if isinstance(content, str) else [{"type": "text", "text": "Error: "}, *content]
    return {"role": "tool", "tool_call_id": block.tool_use_id, "content": content}


def _turn(message: a.MessageParam) -> list[dict[str, Any]]:
    """One Anthropic message as OpenAI messages: a user turn's tool results become `tool` messages."""
    if isinstance(message.content, str):
        return [{"role": message.role, "content": message.content}]
    if message.role == "assistant":
        text = [b for b in message.content if isinstance(b, a.TextBlock)]
        calls = [{"id": b.id, "type": "function", "function": {"name": b.name, "arguments": json.dumps(b.input)}}
                 for b in message.content if isinstance(b, a.ToolUseBlock)]
        out: dict[str, Any] = {"role": "assistant", "content": _parts(text) if text or not calls else None}
        if calls:
            out["tool_calls"] = calls
        return [out]
    turns: list[dict[str, Any]] = []
    text: list[a.TextBlock] = []
    for block in message.content:
        if isinstance(block, a.ToolResultBlock):
            if text:
                turns.append({"role": "user", "content": _parts(text)})
                text = []
            turns.append(_tool_result(block))
        else:
            text.append(block)  # a user turn has no tool_use blocks (MessageParam checks)
    if text or not turns:
        turns.append({"role": "user", "content": _parts(text)})
    return turns


def _tool_choice(choice: Any) -> tuple[Any, bool]:
    """OpenAI's `tool_choice` and `parallel_tool_calls` for Anthropic's `tool_choice`."""
    parallel = not getattr(choice, "disable_parallel_tool_use", False)
    if isinstance(choice, a.ToolChoiceTool):
        return {"type": "function", "function": {"name": choice.name}}, parallel
    return {"auto": "auto", "any": "required", "none": "none"}[choice.type], parallel


def to_chat(req: a.MessagesRequest) -> dict[str, Any]:
    """The OpenAI chat request that asks what `req` asks."""
    messages: list[dict[str, Any]] = []
    if req.system:
        messages.append({"role": "system",
                         "content": req.system if isinstance(req.system, str) else _parts(req.system)})
    for message in req.messages:
        messages += _turn(message)
    chat: dict[str, Any] = {"model": req.model, "messages": messages, "max_tokens": req.max_tokens}
    if req.stream:
        chat |= {"stream": True, "stream_options": {"include_usage": True}}
    for name in ("temperature", "top_p", "top_k"):
        if (value := getattr(req, name)) is not None:
            chat[name] = value
    if req.stop_sequences:
        chat["stop"] = req.stop_sequences
    if req.tools:
        chat["tools"] = [{"type": "function", "function": {
            "name": t.name, "parameters": t.input_schema, **({"description": t.description} if t.description else {})}}
            for t in req.tools]
    if req.tool_choice is not None and req.tools:
        chat["tool_choice"], parallel = _tool_choice(req.tool_choice)
        if not parallel:
            chat["parallel_tool_calls"] = False
    if req.metadata is not None and req.metadata.user_id:
        chat["user"] = req.metadata.user_id
    return chat


# -- response: OpenAI chat -> Anthropic -------------------------------------------------------------
def stop_of(finish: str | None, text: str, stops: list[str]) -> tuple[str, str | None, str]:
    """(stop_reason, stop_sequence, text less the stop sequence) at the end of the answer."""
    if finish in ("stop", "length"):
        for stop in sorted(stops, key=len, reverse=True):  # of two that end it, the longer began first
            if text.endswith(stop):
                return "stop_sequence", stop, text[: len(text) - len(stop)]
    return STOP_REASONS.get(finish or "stop", "end_turn"), None, text


def tool_input(arguments: str, finish: str | None) -> dict[str, Any]:
    """A call's arguments as the tool_use `input`; a call cut off by max_tokens has `{}`."""
    try:
        value = json.loads(arguments or "{}")
    except ValueError:
        value = None
    if isinstance(value, dict):
        return value
    if finish == "length":
        return {}
    raise UpstreamError("the model made a tool call whose arguments are not a JSON object")


def usage_of(usage: Usage | None) -> a.MessageUsage:
    return a.MessageUsage(input_tokens=usage.prompt_tokens if usage else 0,
                          output_tokens=usage.completion_tokens if usage else 0)


def to_message(completion: ChatCompletion, model: str, stops: list[str]) -> a.Message:
    choice = completion.choices[0]
    reason, sequence, text = stop_of(choice.finish_reason, choice.message.content or "", stops)
    content: list[Any] = [a.TextContent(text=text)] if text else []
    content += [a.ToolUseContent(id=call.id, name=call.function.name,
                                 input=tool_input(call.function.arguments, choice.finish_reason))
                for call in choice.message.tool_calls or ()]
    return a.Message(model=model, content=content, stop_reason=reason, stop_sequence=sequence,
                     usage=usage_of(completion.usage))


class Events:
    """`chat.completion.chunk`s in, Anthropic's events out (each already framed as SSE)."""

    def __init__(self, model: str, stops: list[str]):
        self.model = model
        self.stops = stops
        self.index = -1  # of the open content block
        self.open: str | None = None  # its type
        self.calls: dict[int, int] = {}  # OpenAI tool-call index -> block index
        self.finish: str | None = None
        self.sequence: str | None = None
        self.usage: Usage | None = None

    def start(self) -> bytes:
        empty = a.Message(model=self.model, content=[], stop_reason=None, usage=usage_of(None))
        return a.sse(a.MessageStart(message=empty))

    def feed(self, chunk: ChatCompletionChunk) -> list[bytes]:
        out: list[bytes] = []
        self.usage = chunk.usage or self.usage
        for choice in chunk.choices[:1]:
            text = choice.delta.content or ""
            if choice.finish_reason:
                self.finish = choice.finish_reason
                _, self.sequence, text = stop_of(choice.finish_reason, text, self.stops)
            if text:
                if self.open != "text":
                    out += self._begin(a.TextContent(text=""))
                out.append(a.sse(a.ContentBlockDelta(index=self.index, delta=a.TextDelta(text=text))))
            for call in choice.delta.tool_calls or ():
                if call.index not in self.calls:
                    out += self._begin(a.ToolUseContent(id=call.id or f"toolu_{uuid.uuid4().hex[:24]}",
                                                        name=call.function.name or "", input={}))
                    self.calls[call.index] = self.index
                if call.function.arguments:
                    delta = a.InputJsonDelta(partial_json=call.function.arguments)
                    out.append(a.sse(a.ContentBlockDelta(index=self.calls[call.index], delta=delta)))
        return out

    def end(self) -> list[bytes]:
        reason = "stop_sequence" if self.sequence else STOP_REASONS.get(self.finish or "stop", "end_turn")
        stop = a.StopInfo(stop_reason=reason, stop_sequence=self.sequence)
        return [*self._close(), a.sse(a.MessageDelta(delta=stop, usage=usage_of(self.usage))),
                a.sse(a.MessageStop())]

    def _begin(self, block: a.TextContent | a.ToolUseContent) -> list[bytes]:
        out = self._close()
        self.index += 1
        self.open = block.type
        return [*out, a.sse(a.ContentBlockStart(index=self.index, content_block=block))]

    def _close(self) -> list[bytes]:
        if self.open is None:
            return []
        self.open = None
        return [a.sse(a.ContentBlockStop(index=self.index))]


def whole_as_events(message: a.Message) -> list[bytes]:
    """A whole answer as the events of a stream (for a deployment that did not stream)."""
    start = message.model_copy(update={"content": [], "stop_reason": None, "stop_sequence": None,
                                       "usage": usage_of(None)})
    out = [a.sse(a.MessageStart(message=start))]
    for i, block in enumerate(message.content):
        if isinstance(block, a.TextContent):
            empty, delta = a.TextContent(text=""), a.TextDelta(text=block.text)
        else:
            empty, delta = block.model_copy(update={"input": {}}), a.InputJsonDelta(partial_json=json.dumps(block.input))
        out += [a.sse(a.ContentBlockStart(index=i, content_block=empty)),
                a.sse(a.ContentBlockDelta(index=i, delta=delta)), a.sse(a.ContentBlockStop(index=i))]
    stop = a.StopInfo(stop_reason=message.stop_reason or "end_turn", stop_sequence=message.stop_sequence)
    return [*out, a.sse(a.MessageDelta(delta=stop, usage=message.usage)), a.sse(a.MessageStop())]


# -- the exchange with the replica --------------------------------------------------------------------
class Answer:
    """The ASGI answer: the chat request to the replica, its answer translated as it comes."""

    def __init__(self, replica: Replica, chat: dict[str, Any], req: a.MessagesRequest, stops: list[str],
                 headers: list[tuple[bytes, bytes]], request_id: str):
        self.replica = replica
        self.body = json.dumps(chat).encode()
        self.model = req.model
        self.stream = req.stream
        self.stops = stops
        self.headers = [(k, v) for k, v in headers if k not in DROP]
        self.headers += [(b"content-type", JSON), (requestid.HEADER.encode(), request_id.encode())]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        left, _ = await race_disconnect(receive, self._exchange(send))
        if left:
            log.info("client went away; closed the request to deployment %s", self.replica.deployment_id)

    async def _exchange(self, send: Send) -> None:
        upstream = await self.replica.send("POST", CHAT, self.headers, self.body)
        async with upstream:
            if upstream.status != 200:
                await _json(send, upstream.status, _upstream_error(upstream.status, await _bounded(upstream)))
            elif is_sse([(k.lower(), v) for k, v in upstream.headers]):
                if not self.stream:
                    raise UpstreamError(f"deployment {self.replica.deployment_id} streamed an answer that "
                                        "was not asked for as a stream")
                await self._events(upstream, send)
            else:
                message, reported = self._message(await _bounded(upstream))
                usage = [(USAGE_HEADER, b"model" if reported else b"not-computed")]
                if self.stream:
                    await _start_sse(send, usage)
                    for frame in whole_as_events(message):
                        await _body(send, frame)
                    await send({"type": "http.response.body", "body": b""})
                else:
                    await _json(send, 200, message.model_dump(mode="json"), usage)

    def _message(self, raw: bytes) -> tuple[a.Message, bool]:
        try:
            completion = ChatCompletion.model_validate_json(raw)
        except ValidationError:
            completion = None
        if completion is None or not completion.choices:
            raise UpstreamError(f"deployment {self.replica.deployment_id} answered {CHAT} with something "
                                "that is not a chat completion")
        return to_message(completion, self.model, self.stops), completion.usage is not None

    async def _events(self, upstream: Upstream, send: Send) -> None:
        events = Events(self.model, self.stops)
        await _start_sse(send)
        await _body(send, events.start())
        try:
            async for data in _sse_data(upstream):
                if isinstance(data, dict) and "error" in data:
                    raise UpstreamError(_message_of(data) or "the model failed while answering")
                for frame in events.feed(ChatCompletionChunk.model_validate(data)):
                    await _body(send, frame)
            if events.finish is None:
                raise UpstreamError("the answer ended before it was complete")
        except (UpstreamError, ValidationError, ValueError) as exc:
            message = exc.message if isinstance(exc, UpstreamError) else "the model sent an event that is not a chat chunk"
            log.warning("deployment %s: the stream broke: %s", self.replica.deployment_id, message)
            await _body(send, a.sse(a.error_of(502, message)))
            await send({"type": "http.response.body", "body": b""})
            return
        for frame in events.end():
            await _body(send, frame)
        await send({"type": "http.response.body", "body": b""})


async def _sse_data(upstream: Upstream) -> AsyncIterator[Any]:
    """The JSON `data` of each server-sent event, until `[DONE]` or the end of the stream."""
    buffer = b""
    async for chunk in upstream.chunks:
        buffer = (buffer + chunk).replace(b"\r\n", b"\n")
        *events, buffer = buffer.split(b"\n\n")
        if len(buffer) > MAX_EVENT_BYTES:
            raise UpstreamError("the model sent an event larger than the gateway accepts")
        for event in events:
            lines = [line[5:].removeprefix(b" ") for line in event.split(b"\n") if line.startswith(b"data:")]
            if not lines:
                continue
            data = b"\n".join(lines)
            if data.strip() == b"[DONE]":
                return
            yield json.loads(data)


async def _bounded(upstream: Upstream) -> bytes:
    body = b""
    async for chunk in upstream.chunks:
        body += chunk
        if len(body) > MAX_EVENT_BYTES:
            raise UpstreamError("the model's answer is larger than the gateway accepts")
    return body


def _message_of(envelope: Any) -> str | None:
    error = envelope.get("error") if isinstance(envelope, dict) else None
    if isinstance(error, dict) and isinstance(error.get("message"), str):
        return error["message"]
    return error if isinstance(error, str) else None


def _upstream_error(status: int, raw: bytes) -> dict:
    """The replica's error answer (the OpenAI envelope), with its status, in Anthropic's envelope."""
    try:
        message = _message_of(json.loads(raw))
    except ValueError:
        message = None
    if message is None:
        message = raw.decode("utf-8", "replace")[:500] or f"the model answered with status {status}"
    return a.error_of(status, message).model_dump()


async def _start_sse(send: Send, extra: list[tuple[bytes, bytes]] | None = None) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": [*SSE_HEADERS, *(extra or [])]})


async def _body(send: Send, frame: bytes) -> None:
    await send({"type": "http.response.body", "body": frame, "more_body": True})


async def _json(send: Send, status: int, value: Any, extra: list[tuple[bytes, bytes]] | None = None) -> None:
    await send({"type": "http.response.start", "status": status, "headers": [(b"content-type", JSON), *(extra or [])]})
    await send({"type": "http.response.body", "body": json.dumps(value, ensure_ascii=False).encode()})
