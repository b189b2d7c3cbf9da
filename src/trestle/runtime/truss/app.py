"""The worker's ASGI app for a Truss-style model folder (config.yaml without `engine:`).

    GET  /health                    the worker health contract (`trestle.protocol.health`)
    POST /predict                   Model.predict (with preprocess / postprocess)
    POST /v1/chat/completions       Model.chat_completions
    POST /v1/completions            Model.completions
    POST /v1/embeddings             Model.embeddings
    POST /v1/messages               Model.messages (Anthropic-style)
    POST /v1/responses              Model.responses
    GET  /v1/models/model/schema    predict's input/output JSON schemas (pydantic annotations)

This module is the HTTP half: it reads and validates the body (JSON or msgpack:
`trestle.runtime.truss.bodies`), holds the request's concurrency slot, and turns what the model
returned into a response (JSON or msgpack, the user's own Response, a stream, or a stream
gathered into one JSON answer). Loading and calling the model is
`trestle.runtime.truss.host.LoadedModel`.

Loading starts in the background when the app starts (the server is already accepting
connections), so `/health` answers at once. Until the model is ready, every other path gets a
503 saying it is loading, or that it failed and why. Errors take Truss's shape on the Truss
routes and the envelope on the OpenAI ones (`trestle.protocol.errors.error_for`).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from trestle import pydantic_compat
from trestle.errors import BadRequest, NotFound, TrestleError, Unavailable
from trestle.protocol.errors import error_for, exception_handlers
from trestle.protocol.health import WorkerState
from trestle.runtime.secrets import Secrets
from trestle.runtime.truss import bodies
from trestle.runtime.truss.contract import Method
from trestle.runtime.truss.host import LoadedModel
from trestle.runtime.truss.streaming import BufferedStream, StreamResponse

if TYPE_CHECKING:
    from trestle.deploy.config import ModelConfig
    from trestle.runtime.config import WorkerConfig

logger = logging.getLogger("trestle.runtime")

HEALTH_PATH = "/health"
SCHEMA_PATH = "/v1/models/model/schema"
# Where each endpoint method is served (and so what a 404 names).
ENDPOINT_PATHS = {
    "predict": "/predict",
    "chat_completions": "/v1/chat/completions",
    "completions": "/v1/completions",
    "embeddings": "/v1/embeddings",
    "messages": "/v1/messages",
    "responses": "/v1/responses",
}
SSE_MEDIA_TYPE = "text/event-stream"
# A /predict stream's content type follows its first chunk.
STREAM_MEDIA_TYPES = {
    "text": "text/plain; charset=utf-8",
    "bytes": "application/octet-stream",
    "json": "application/x-ndjson",
}
CLIENT_CLOSED_REQUEST = 499  # nobody reads it: the client has gone (nginx's code for this)


def _validate(method: Method, value: Any) -> Any:
    assert method.input_model is not None
    try:
        return pydantic_compat.validate(method.input_model, value)
    except pydantic_compat.ValidationError as exc:
        errors = pydantic_compat.errors(exc)
        parts = []
        for err in errors:
            where = ".".join(str(p) for p in err["loc"]) or "body"
            parts.append(f"{where}: {err['msg']}")
        first = ".".join(str(p) for p in errors[0]["loc"]) or None
        raise BadRequest("invalid input: " + "; ".join(parts), param=first) from None


def _stream_media_type(method: str, first_kind: str | None) -> str:
    if method != "predict":
        return SSE_MEDIA_TYPE  # OpenAI-style endpoints stream server-sent events
    return STREAM_MEDIA_TYPES[first_kind or "text"]


async def call_endpoint(model: LoadedModel, name: str, request: Request) -> Response:
    """Serve POST for the endpoint method `name` (a key of `ENDPOINT_PATHS`)."""
    steps = model.steps(name)
    if steps is None:
        raise NotFound(
            f"this model does not implement {name}: define `{name}` on the Model class "
            f"to serve POST {ENDPOINT_PATHS[name]}"
        )
    first, method = steps
    value: Any = None
    if first.input_param is not None:
        value = bodies.read_input(request.headers.get("content-type", ""), await request.body())
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
            if name == "predict" and bodies.wants_gathered(request.headers.get("accept", "")):
                return await _gathered(model, stream, method.name)
            media_type = _stream_media_type(method.name, stream.first_kind)
            if first_chunk is None:
                return Response(b"", media_type=media_type)
            return StreamResponse(stream, media_type=media_type, headers={"cache-control": "no-cache"})
        if isinstance(result, Response):
            return result
        msgpack_out = name == "predict" and bodies.wants_msgpack(request.headers.get("accept", ""))
        return bodies.output_response(result, method.name, msgpack_out=msgpack_out)
    finally:
        if not slot.streaming:
            slot.release()


async def _gathered(model: LoadedModel, stream: BufferedStream, method: str) -> Response:
    """A predict stream asked for as JSON: the text it would have sent, as one JSON string."""
    try:
        text = b"".join([chunk async for chunk in stream.chunks()]).decode("utf-8", "replace")
    except (HTTPException, TrestleError):
        raise
    except Exception as exc:  # logged by the stream already
        raise model.user_error(exc, method, logged=True) from None
    finally:
        await stream.aclose()
    return Response(pydantic_compat.to_json(text), media_type=bodies.JSON)


async def schema(model: LoadedModel) -> Response:
    """`GET /v1/models/model/schema`: predict's input and output schemas, from its pydantic
    annotations, as Truss serves them; 404 when predict has no pydantic input annotation."""
    model.check_ready()
    method = model.spec.predict if model.spec is not None else None
    if method is None or method.input_model is None:
        missing = NotFound("No schema found")
        missing.truss_code = "600"  # what Truss sends with it
        raise missing
    output = None if method.streams or method.output_model is None else method.output_model
    body = {
        "input_schema": pydantic_compat.json_schema(method.input_model),
        "output_schema": pydantic_compat.json_schema(output) if output is not None else None,
        "supports_streaming": method.streams,
    }
    return Response(pydantic_compat.to_json(body), media_type=bodies.JSON)


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
                await error_for(scope["path"], exc, worker=True)(scope, receive, send)
                return
        await self.app(scope, receive, send)


def build_app(
    config: "ModelConfig | WorkerConfig",
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

    async def model_schema(request: Request) -> Response:
        return await schema(model)

    routes = [Route(HEALTH_PATH, health, methods=["GET"]),
              Route(SCHEMA_PATH, model_schema, methods=["GET"])]
    routes += [Route(path, endpoint(name), methods=["POST"]) for name, path in ENDPOINT_PATHS.items()]
    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers=exception_handlers("trestle worker", truss_routes=True),
    )
    app.add_middleware(ReadinessGate, model=model)
    return app
