"""The Anthropic Messages API, `POST /v1/messages`, translated onto the OpenAI chat path.

    MessagesRequest ──to_chat──► an OpenAI chat request ──► the replica's /v1/chat/completions
    Message         ◄─to_message── ChatCompletion
    events          ◄─Events────── chat.completion.chunk SSE   (message_start, content_block_start /
                                                               delta / stop, message_delta, message_stop)

(the translation itself is `trestle.gateway.bridge.anthropic_translate`; this module routes and relays).

The replica is found as `/v1/chat/completions` finds it: `model` is a Model API slug, or
`model: "baseten/MODEL_ID[/DEPLOYMENT_ID]"` (or a `baseten` field) names a deployment through the
bridge, which must have an OpenAI mode (an engine, or a Model with `chat_completions`). A bridge
target whose Model defines `messages` itself gets the request as sent, its answer relayed as is.
`Messages` is the route and its error boundary: an error before the answer starts is answered in
Anthropic's envelope (`trestle.protocol.anthropic.error_response`), one during a stream as an
`event: error`. The client's `x-api-key` (like its `Authorization`) never reaches the model.

Stop sequences: an engine is asked to keep a matched stop string in its output
(`include_stop_str_in_output`); it arrives at the end of the last chunk, where it is taken out and
reported as `stop_sequence`. A Model's own `chat_completions` is not given them: the gateway
matches them in its answer (across chunks), ends the text before the first one, reports it as
`stop_sequence`, and stops reading the model's stream there.
Usage is what the model reports; where it reports none the counts are 0 and a non-streamed answer
carries `x-trestle-usage: not-computed`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from typing import Any

from pydantic import ValidationError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from trestle import requestid
from trestle.deploy.routing import RoutingTable
from trestle.deploy.transport import Replica, Upstream
from trestle.disconnect import race_disconnect
from trestle.errors import BadRequest, NotImplementedYet, TrestleError, Unavailable, UpstreamError
from trestle.gateway.access import auth
from trestle.gateway.bridge.openai import RETRY_AFTER_S, RETRYABLE, Bridge, parse_body
from trestle.gateway.bridge.legacy import USAGE_HEADER
from trestle.gateway.bridge.anthropic_translate import Events, to_chat, to_message, whole_as_events
from trestle.gateway.proxy import DROP_REQUEST, is_sse
from trestle.protocol import anthropic as a
from trestle.protocol.bridge import target_of, without_routing
from trestle.protocol.openai.responses import ChatCompletion, ChatCompletionChunk
from trestle.protocol.validation import to_bad_request

log = logging.getLogger("trestle.gateway")

PATH = "/v1/messages"
CHAT = "/v1/chat/completions"
JSON = b"application/json"
DROP = DROP_REQUEST | {b"content-type"}
SSE_HEADERS = [(b"content-type", b"text/event-stream; charset=utf-8"), (b"cache-control", b"no-cache")]
MAX_EVENT_BYTES = 16 * 1024 * 1024  # one upstream event (or an error body) at most


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
        body = await request.body()
        payload = parse_body(body)
        target = target_of(payload)
        if target is not None:
            replica, methods = await self.bridge.resolve(request, target, payload)
            if "messages" in methods:  # the Model speaks Messages itself: relayed as is
                return self.bridge.relay_to(request, PATH, body, payload, target, replica, methods)
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
            if "chat_completions" not in methods:
                raise BadRequest(f"model {target.model_id} has no OpenAI mode (no `chat_completions` method), "
                                 f"which {PATH} is translated onto, nor a `messages` method; call it "
                                 "through /v1/chat/completions",
                                 param="model")
        engine = (self.routing.deployments[replica.deployment_id].config or {}).get("engine") or {}
        if engine.get("slug"):
            chat["model"] = engine["slug"]
        stops = req.stop_sequences or []
        if stops and engine:
            chat["include_stop_str_in_output"] = True
        elif stops:  # a Model's own code: the stop sequences are matched here, exactly
            del chat["stop"]
        return Answer(replica, chat, req, stops, not engine, request.scope["headers"],
                      request.state.request_id)


async def count_tokens(request: Request) -> Response:
    """`/v1/messages/count_tokens` (the client's `messages.count_tokens`): not served, said so."""
    return a.error_response(NotImplementedYet("token counting (/v1/messages/count_tokens) is not served "
                                              "by trestle; a Message's `usage` has the counts of each request"))


# -- the exchange with the replica --------------------------------------------------------------------
class Answer:
    """The ASGI answer: the chat request to the replica, its answer translated as it comes."""

    def __init__(self, replica: Replica, chat: dict[str, Any], req: a.MessagesRequest, stops: list[str],
                 cut: bool, headers: list[tuple[bytes, bytes]], request_id: str):
        self.replica = replica
        self.body = json.dumps(chat).encode()
        self.model = req.model
        self.stream = req.stream
        self.stops = stops
        self.cut = cut  # the stop sequences are matched here (see `Events`)
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
        return to_message(completion, self.model, self.stops, self.cut), completion.usage is not None

    async def _events(self, upstream: Upstream, send: Send) -> None:
        events = Events(self.model, self.stops, self.cut)
        await _start_sse(send)
        await _body(send, events.start())
        try:
            async for data in _sse_data(upstream):
                if isinstance(data, dict) and "error" in data:
                    raise UpstreamError(_message_of(data) or "the model failed while answering")
                for frame in events.feed(ChatCompletionChunk.model_validate(data)):
                    await _body(send, frame)
                if events.done:  # a stop sequence: the rest of the model's stream is not wanted
                    break
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
