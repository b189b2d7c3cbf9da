"""`POST /api/endpoints/{endpoint_id}/completions`: one call of a prompt endpoint.

    endpoint (store) -> body (CompletionCall) -> prepare (values, searches, templates:
    trestle.endpoints.prompt) -> the model's replica (a Model API slug through the routing
    table, `baseten/...` through the bridge) -> the OpenAI request, sent through the replica's
    transport (no HTTP loopback) -> the answer in the endpoint's format -> a usage record

The answer (`trestle.protocol.endpoints.EndpointCompletion`) is a `text_completion` whatever
the model's route (chat or completions), with `usage` as the model counted it, the search
results, the costs (`trestle.endpoints.costs`) and the model's name (`model_name`, and
`baseplate_model_name` for clients written against that API).

Streamed (`stream: true`), it is server-sent events:

    event: search_results          the results, before any text (most SDKs stop at [DONE])
    data: {... "choices": [{"text": ""...}], "search_results": [...]}

    data: {"id": "cmpl-...", "object": "text_completion", "choices": [{"text": "Hel", ...}]}
    ...
    data: {... "choices": [{"text": "", "finish_reason": "length", ...}], "usage": {...},
           "prompt_cost": ..., "completion_cost": ..., "model_name": ...}
    data: [DONE]
    data: {... "choices": [{"text": ""...}], "search_results": [...]}   the results again

Every `data:` object has `choices[0].text`, so a client that reads
`json.choices[0].delta?.content || json.choices[0].text` on every event works unchanged.

Every call of an existing endpoint is recorded (`trestle.store.endpoints`): status `ok`,
`error` (with the message), or `client_closed` when the client left before the end (with the
tokens generated until then: engine deployments report their counts on every chunk).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from trestle import requestid
from trestle.deploy.routing import RoutingTable
from trestle.deploy.transport import Replica, Upstream
from trestle.disconnect import race_disconnect
from trestle.endpoints.costs import Costs
from trestle.endpoints.prompt import CHAT_PATH, Definition, Search, prepare
from trestle.errors import (
    BadRequest, TooManyRequests, TrestleError, Unavailable, UpstreamError, UpstreamTimeout,
)
from trestle.gateway.access import auth
from trestle.gateway.bridge.openai import Bridge
from trestle.gateway.context import Gateway
from trestle.protocol.bridge import target_of
from trestle.protocol.endpoints import CompletionCall, SearchBinding
from trestle.protocol.errors import error_body
from trestle.protocol.validation import parse_body
from trestle.store.endpoints import EndpointStore
from trestle.store.records import Endpoint, Price, UsageRecord

log = logging.getLogger("trestle.gateway")

SSE_HEADERS = [(b"content-type", b"text/event-stream; charset=utf-8"), (b"cache-control", b"no-cache"),
               (b"x-accel-buffering", b"no")]
JSON_HEADERS = [(b"content-type", b"application/json")]
MAX_UPSTREAM_JSON = 64 * 1024 * 1024


class Recorder:
    """What the usage record of one call will say; `save` writes it once."""

    def __init__(self, store: EndpointStore, endpoint: Endpoint, key_id: str | None):
        self.store = store
        self.endpoint = endpoint
        self.key_id = key_id
        self.started = time.monotonic()
        self.id = str(uuid.uuid4())
        self.user: str | None = None
        self.stream = False
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.costs = Costs(0.0, 0.0)
        self.saved = False

    def count(self, usage: Any, price: Price | None) -> None:
        if isinstance(usage, dict) and isinstance(usage.get("prompt_tokens"), int) \
                and isinstance(usage.get("completion_tokens"), int):
            self.prompt_tokens, self.completion_tokens = usage["prompt_tokens"], usage["completion_tokens"]
            self.costs = Costs.of(price, self.model, prompt_tokens=self.prompt_tokens,
                                  completion_tokens=self.completion_tokens)

    @property
    def model(self) -> str:
        return str(self.endpoint.spec.get("model", ""))

    async def save(self, status: str, error: str | None = None) -> None:
        if self.saved:
            return
        self.saved = True
        record = UsageRecord(
            id=self.id, created_at=datetime.now(UTC), endpoint_id=self.endpoint.id,
            endpoint_version=self.endpoint.version, key_id=self.key_id, user=self.user,
            model=self.model, prompt_tokens=self.prompt_tokens,
            completion_tokens=self.completion_tokens, prompt_cost=self.costs.prompt,
            completion_cost=self.costs.completion,
            latency_ms=(time.monotonic() - self.started) * 1000, status=status, error=error,
            stream=self.stream,
        )
        try:  # shielded: a client that leaves does not lose the record
            await asyncio.shield(self.store.record_usage(record))
        except Exception:
            log.exception("could not record the usage of endpoint %s", self.endpoint.id)


def searcher(gw: Gateway) -> Search:
    """The gateway datastore's search, as prompt endpoints call it."""

    async def search(binding: SearchBinding, query: str) -> list[tuple[dict[str, Any], dict[str, Any]]]:
        datastore = await gw.datastore()
        results = await datastore.search(binding.dataset, query, top_k=binding.top_k,
                                         alpha=binding.alpha, filter=binding.filter)
        return [(r.wire(variable=binding.variable, query=query), {
            "text": r.chunk.text, "data": r.chunk.data, "confidence": r.confidence,
            "document_id": r.document.id, "url": r.document.metadata.get("url"),
            "metadata": r.document.metadata,
        }) for r in results]

    return search


async def resolve(routing: RoutingTable, bridge: Bridge, model: str, path: str) -> tuple[Replica, str | None]:
    """The replica that serves the endpoint's model, and the model name its engine serves
    (None: a Model class with its own OpenAI mode, which gets the endpoint's `model` as is)."""
    target = target_of({"model": model})
    if target is not None:
        return await bridge.openai_replica(target, path)
    return routing.route(slug=model), model


def upstream_failure(status: int, raw: bytes, model: str) -> TrestleError:
    """The error of a model that answered `status`, in the error tree (its message kept)."""
    try:
        err = json.loads(raw)["error"]
        message, param = str(err["message"]), err.get("param")
    except (ValueError, KeyError, TypeError):
        message, param = raw[:300].decode("utf-8", "replace") or f"status {status}", None
    text = f"model {model}: {message}"
    if status in (400, 422):
        return BadRequest(text, param=param if isinstance(param, str) else None)
    if status == 429:
        return TooManyRequests(text, retry_after=1)
    if status == 503:
        return Unavailable(text)
    if status == 504:
        return UpstreamTimeout(text)
    return UpstreamError(f"model {model} answered {status}: {message}")


def sse_events(buffer: bytearray, chunk: bytes) -> list[str]:
    """The `data` of each complete server-sent event now in `buffer` (after adding `chunk`)."""
    buffer += chunk.replace(b"\r\n", b"\n")
    out = []
    while (end := buffer.find(b"\n\n")) >= 0:
        event, rest = bytes(buffer[:end]), buffer[end + 2:]
        buffer[:] = rest
        lines = [line[5:].removeprefix(b" ") for line in event.split(b"\n") if line.startswith(b"data:")]
        if lines:
            out.append(b"\n".join(lines).decode("utf-8", "replace"))
    return out


class Answer:
    """The ASGI answer of one call: sends the model request, answers whole or streamed, records."""

    def __init__(self, recorder: Recorder, replica: Replica, path: str, body: dict[str, Any],
                 search_results: list[dict[str, Any]], price: Price | None, request_id: str):
        self.rec = recorder
        self.replica = replica
        self.path = path
        self.chat = path == CHAT_PATH
        self.body = body
        self.search_results = search_results
        self.price = price
        self.request_id = request_id
        self.id = f"cmpl-{uuid.uuid4().hex}"
        self.created = int(time.time())
        self.model = recorder.model
        self.outcome: tuple[str, str | None] = ("error", "the answer did not complete")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            left, _ = await race_disconnect(receive, self._exchange(send))
        except TrestleError as exc:
            await self.rec.save("error", exc.message)
            raise
        except BaseException:
            await self.rec.save("error", "internal error in the gateway")
            raise
        if left:
            log.info("client went away; endpoint %s closed its model request", self.rec.endpoint.id)
            await self.rec.save("client_closed")
        else:
            await self.rec.save(*self.outcome)

    async def _exchange(self, send: Send) -> None:
        headers = [*JSON_HEADERS, (requestid.HEADER.encode(), self.request_id.encode())]
        upstream = await self.replica.send("POST", self.path, headers, json.dumps(self.body).encode())
        async with upstream:
            if upstream.status != 200:
                raw = await _read(upstream, self.replica)
                raise upstream_failure(upstream.status, raw, self.model)
            if self.rec.stream:
                await self._stream(upstream, send)
            else:
                await self._whole(upstream, send)

    # -- whole ----------------------------------------------------------------------------
    async def _whole(self, upstream: Upstream, send: Send) -> None:
        raw = await _read(upstream, self.replica)
        try:
            answer = json.loads(raw)
            choice = answer["choices"][0]
            text = (choice.get("message") or {}).get("content") if self.chat else choice.get("text")
            finish = choice.get("finish_reason")
        except (ValueError, KeyError, IndexError, TypeError, AttributeError):
            raise UpstreamError(f"model {self.model} answered with a body that is not an OpenAI "
                                f"{'chat completion' if self.chat else 'completion'}") from None
        usage = answer.get("usage")
        self.rec.count(usage, self.price)
        body = {
            **self._head(),
            "choices": [self._choice(text or "", finish)],
            "usage": self._usage() if isinstance(usage, dict) else None,
            "search_results": self.search_results,
            **self._costs(usage),
        }
        await send({"type": "http.response.start", "status": 200, "headers": JSON_HEADERS})
        await send({"type": "http.response.body", "body": json.dumps(body, ensure_ascii=False).encode()})
        self.outcome = ("ok", None)

    # -- streamed -------------------------------------------------------------------------
    async def _stream(self, upstream: Upstream, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": SSE_HEADERS})

        async def event(value: Any, name: str | None = None) -> None:
            data = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
            frame = (f"event: {name}\n" if name else "") + f"data: {data}\n\n"
            await send({"type": "http.response.body", "body": frame.encode(), "more_body": True})

        await event(self._results_chunk(), "search_results")
        buffer = bytearray()
        finish: str | None = None
        usage: Any = None
        try:
            async for chunk in upstream.chunks:
                for data in sse_events(buffer, chunk):
                    if data.strip() == "[DONE]":
                        continue
                    try:
                        obj = json.loads(data)
                    except ValueError:
                        raise UpstreamError(f"model {self.model} streamed an event that is not JSON") from None
                    if not isinstance(obj, dict):
                        continue
                    if "error" in obj:
                        err = obj["error"] if isinstance(obj["error"], dict) else {}
                        raise UpstreamError(f"model {self.model}: {err.get('message', 'the stream failed')}")
                    if isinstance(obj.get("usage"), dict):
                        usage = obj["usage"]
                        self.rec.count(usage, self.price)
                    text, done = self._piece(obj)
                    finish = done or finish
                    if text:
                        await event({**self._head(), "choices": [self._choice(text, None)]})
        except UpstreamError as exc:
            log.warning("endpoint %s: the model's stream broke: %s", self.rec.endpoint.id, exc.message)
            await event(error_body(exc))
            await send({"type": "http.response.body", "body": b""})
            self.outcome = ("error", exc.message)
            return
        last = {**self._head(), "choices": [self._choice("", finish or "stop")],
                "usage": self._usage() if usage is not None else None, **self._costs(usage)}
        await event(last)
        await event("[DONE]")
        await send({"type": "http.response.body", "body": f"data: {json.dumps(self._results_chunk())}\n\n".encode()})
        self.outcome = ("ok", None)

    def _piece(self, obj: dict[str, Any]) -> tuple[str, str | None]:
        """(text, finish_reason) of an upstream chunk."""
        choices = obj.get("choices")
        if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
            return "", None
        choice = choices[0]
        if self.chat:
            delta = choice.get("delta")
            text = delta.get("content") if isinstance(delta, dict) else None
        else:
            text = choice.get("text")
        return (text if isinstance(text, str) else ""), choice.get("finish_reason")

    # -- pieces of the answer -------------------------------------------------------------
    def _head(self) -> dict[str, Any]:
        return {"id": self.id, "object": "text_completion", "created": self.created, "model": self.model}

    def _choice(self, text: str, finish: str | None) -> dict[str, Any]:
        return {"text": text, "index": 0, "logprobs": None, "finish_reason": finish, "usage_id": self.rec.id}

    def _usage(self) -> dict[str, int]:
        return {"prompt_tokens": self.rec.prompt_tokens, "completion_tokens": self.rec.completion_tokens,
                "total_tokens": self.rec.prompt_tokens + self.rec.completion_tokens}

    def _costs(self, usage: Any) -> dict[str, Any]:
        note = self.rec.costs.note if usage is not None else (
            f"model {self.model} reported no token usage: costs are 0")
        return {"prompt_cost": self.rec.costs.prompt, "completion_cost": self.rec.costs.completion,
                "model_name": self.model, "baseplate_model_name": self.model, "cost_note": note}

    def _results_chunk(self) -> dict[str, Any]:
        return {**self._head(), "choices": [self._choice("", None)], "search_results": self.search_results}


async def _read(upstream: Upstream, replica: Replica) -> bytes:
    out = bytearray()
    async for chunk in upstream.chunks:
        out += chunk
        if len(out) > MAX_UPSTREAM_JSON:
            raise UpstreamError(f"deployment {replica.deployment_id} answered with more than "
                                f"{MAX_UPSTREAM_JSON} bytes")
    return bytes(out)


async def completions(gw: Gateway, bridge: Bridge, request: Request) -> ASGIApp:
    endpoint = await gw.store.endpoints.get(request.path_params["endpoint_id"])
    key = auth.calling_key(request.scope)
    rec = Recorder(gw.store.endpoints, endpoint, key.id if key else None)
    try:
        call = parse_body(CompletionCall, await request.body())
        rec.user, rec.stream = call.user, call.stream
        definition = Definition.of(endpoint)
        prepared = await prepare(definition, call, searcher(gw))
        replica, served = await resolve(gw.routing, bridge, definition.spec.model, prepared.path)
        price = await gw.store.endpoints.get_price(definition.spec.model)
    except TrestleError as exc:
        await rec.save("error", exc.message)
        raise
    body: dict[str, Any] = {**prepared.body, "model": served or definition.spec.model, "stream": call.stream}
    if call.stream:  # engines count tokens on every chunk: a client that leaves is still counted
        body["stream_options"] = {"include_usage": True, **({"continuous_usage_stats": True} if served else {})}
    return Answer(rec, replica, prepared.path, body, prepared.search_results, price,
                  request.state.request_id)
