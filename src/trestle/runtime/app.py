"""The worker's ASGI app for a Truss-style model folder (config.yaml without `engine:`).

    GET  /health                the worker health contract (`trestle.protocol.health`)
    POST /predict               Model.predict (with preprocess / postprocess)
    POST /v1/chat/completions   Model.chat_completions
    POST /v1/completions        Model.completions

This module is the HTTP half: it reads and validates the JSON body, holds the request's
concurrency slot, and turns what the model returned into a response (JSON, the user's own
Response, or a stream). Loading and calling the model is `trestle.runtime.host.LoadedModel`.

Loading starts in the background when the app starts (the server is already accepting
connections), so `/health` answers at once. Until the model is ready, every other path gets a
503 error envelope saying it is loading, or that it failed and why. Every error is the envelope
of `trestle.protocol.errors`.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pydantic_core
from pydantic import BaseModel, ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from trestle.deploy.config import ModelConfig
from trestle.errors import BadRequest, NotFound, TrestleError, Unavailable
from trestle.protocol.errors import error_response, exception_handlers
from trestle.protocol.health import WorkerState
from trestle.runtime.contract import Method
from trestle.runtime.host import LoadedModel
from trestle.runtime.secrets import Secrets
from trestle.runtime.streaming import StreamResponse

logger = logging.getLogger("trestle.runtime")

HEALTH_PATH = "/health"
# Where each endpoint method is served (and so what a 404 names).
ENDPOINT_PATHS = {"predict": "/predict", "chat_completions": "/v1/chat/completions", "completions": "/v1/completions"}
SSE_MEDIA_TYPE = "text/event-stream"
# A /predict stream's content type follows its first chunk.
STREAM_MEDIA_TYPES = {
    "text": "text/plain; charset=utf-8",
    "bytes": "application/octet-stream",
    "json": "application/x-ndjson",
}
CLIENT_CLOSED_REQUEST = 499  # nobody reads it: the client has gone (nginx's code for this)


def _json_body(body: bytes) -> Any:
    """The request body as JSON; an empty body counts as `{}`."""
    if not body.strip():
        return {}
    try:
        return json.loads(body)
    except ValueError as exc:
        raise BadRequest(f"request body is not valid JSON: {exc}", code="invalid_json") from None
    except RecursionError:
        raise BadRequest("request body is nested too deeply", code="invalid_json") from None


def _validate(method: Method, value: Any) -> Any:
    assert method.input_model is not None
    try:
        return method.input_model.model_validate(value)
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        parts = []
        for err in errors:
            where = ".".join(str(p) for p in err["loc"]) or "body"
            parts.append(f"{where}: {err['msg']}")
        first = ".".join(str(p) for p in errors[0]["loc"]) or None
        raise BadRequest("invalid input: " + "; ".join(parts), param=first) from None


def _json_response(value: Any, method: str) -> Response:
    if isinstance(value, BaseModel):
        value = value.model_dump(mode="json")
    try:
        body = pydantic_core.to_json(value, inf_nan_mode="null")
    except pydantic_core.PydanticSerializationError:
        raise TrestleError(
            f"Model.{method} returned a {type(value).__name__}, which cannot be sent as JSON; return a dict, "
            "list, str, number, pydantic model or a starlette Response"
        ) from None
    return Response(body, media_type="application/json")


def _stream_media_type(method: str, first_kind: str | None) -> str:
    if method != "predict":
        return SSE_MEDIA_TYPE  # OpenAI-style endpoints stream server-sent events
    return STREAM_MEDIA_TYPES[first_kind or "text"]


async def call_endpoint(model: LoadedModel, name: str, request: Request) -> Response:
    """Serve POST for the endpoint method `name` (predict, chat_completions, completions)."""
    steps = model.steps(name)
    if steps is None:
        raise NotFound(
            f"this model does not implement {name}: define `{name}` on the Model class "
            f"to serve POST {ENDPOINT_PATHS[name]}"
        )
    first, method = steps
    value: Any = None
    if first.input_param is not None:
        value = _json_body(await request.body())
        if first.input_model is not None:
            value = _validate(first, value)

    slot = model.slot()
    await slot.acquire()
    # A client that left while waiting for a slot has nobody to answer: don't run the model.
    # (Only once the body is read: is_disconnected() could swallow unread body messages.)
    if first.input_param is not None and await request.is_disconnected():
        slot.release()
        logger.info("client left while waiting for a slot; %s not run", name)
        return Response(status_code=CLIENT_CLOSED_REQUEST)
    try:
        result = await model.run(name, first, method, value, request)
        if inspect.isgenerator(result) or inspect.isasyncgen(result):
            stream, first_chunk = await model.open_stream(result, method.name, slot)  # it frees the slot
            media_type = _stream_media_type(method.name, stream.first_kind)
            if first_chunk is None:
                return Response(b"", media_type=media_type)
            return StreamResponse(stream, media_type=media_type, headers={"cache-control": "no-cache"})
        if isinstance(result, Response):
            return result
        return _json_response(result, method.name)
    finally:
        if not slot.streaming:
            slot.release()


class ReadinessGate:
    """Answers 503 on every path but /health until the model is ready."""

    def __init__(self, app: ASGIApp, model: LoadedModel) -> None:
        self.app = app
        self.model = model

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] != HEALTH_PATH and self.model.state is not WorkerState.READY \
                and self.model.state is not WorkerState.UNHEALTHY:
            try:
                self.model.check_ready()
            except Unavailable as exc:
                await error_response(exc)(scope, receive, send)
                return
        await self.app(scope, receive, send)


def build_app(
    config: ModelConfig,
    model_dir: Path,
    *,
    secrets: Secrets | None = None,
    environment: dict[str, str] | None = None,
) -> Starlette:
    """The ASGI app serving the Model class of `model_dir`; loads it when the app starts."""
    model = LoadedModel(config, model_dir, secrets=secrets, environment=environment)

    async def health(request: Request) -> Response:
        health = model.health()
        return JSONResponse(health.body(), status_code=health.http_status)

    def endpoint(name: str):
        async def serve(request: Request) -> Response:
            return await call_endpoint(model, name, request)

        serve.__name__ = name
        return serve

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        task = asyncio.get_running_loop().create_task(model.load())
        try:
            yield
        finally:
            task.cancel()
            model.close()

    routes = [Route(HEALTH_PATH, health, methods=["GET"])]
    routes += [Route(path, endpoint(name), methods=["POST"]) for name, path in ENDPOINT_PATHS.items()]
    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers=exception_handlers("trestle worker"),
    )
    app.add_middleware(ReadinessGate, model=model)
    return app
