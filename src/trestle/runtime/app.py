"""The worker's ASGI app for a Truss-style model folder (config.yaml without `engine:`).

    GET  /health                200 {"status": "ready"} | 503 {"status": "loading"}
                                | 503 {"status": "failed", "error": "..."}
    POST /predict               Model.predict (with preprocess / postprocess)
    POST /v1/chat/completions   Model.chat_completions
    POST /v1/completions        Model.completions

Loading starts in the background when the app starts (the server is already accepting
connections), so `/health` answers at once. Until the model is ready, every other path gets a
503 error envelope saying it is loading, or that it failed and why. Every error is the envelope
of `trestle.protocol.errors`.
"""

from __future__ import annotations

import asyncio
import contextlib
import http
import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from trestle import errors
from trestle.deploy.config import ModelConfig
from trestle.protocol.errors import ErrorBody, ErrorResponse, error_response
from trestle.runtime.host import ENDPOINT_PATHS, ModelHost, State
from trestle.runtime.secrets import Secrets

logger = logging.getLogger("trestle.runtime")

HEALTH_PATH = "/health"
# The error type for a status, from the one error tree (e.g. 404 -> not_found_error).
_TYPE_BY_STATUS = {cls.status_code: cls.type for cls in errors.TrestleError.__subclasses__()}


def http_exception_response(request: Request, exc: Exception) -> Response:
    """An `HTTPException` (ours, starlette's 404/405, or the user's) as the error envelope."""
    assert isinstance(exc, HTTPException)
    detail = exc.detail if isinstance(exc.detail, str) else json.dumps(exc.detail, default=str)
    default_type = "invalid_request_error" if exc.status_code < 500 else "server_error"
    body = ErrorResponse(
        error=ErrorBody(
            message=detail or http.HTTPStatus(exc.status_code).phrase,
            type=_TYPE_BY_STATUS.get(exc.status_code, default_type),
        )
    )
    return JSONResponse(body.model_dump(), status_code=exc.status_code, headers=exc.headers)


def trestle_error_response(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, errors.TrestleError)
    return error_response(exc)


def unexpected_error_response(request: Request, exc: Exception) -> Response:
    # A bug of ours (user code errors are mapped before this): the traceback goes to the log.
    return error_response(errors.TrestleError("internal error in the trestle worker"))


class ReadinessGate:
    """Answers 503 on every path but /health until the model is ready."""

    def __init__(self, app: ASGIApp, host: ModelHost) -> None:
        self.app = app
        self.host = host

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] != HEALTH_PATH and self.host.state is not State.READY:
            try:
                self.host.check_ready()
            except errors.Unavailable as exc:
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
    host = ModelHost(config, model_dir, secrets=secrets, environment=environment)

    async def health(request: Request) -> Response:
        if host.state is State.READY:
            return JSONResponse({"status": "ready"})
        if host.state is State.LOADING:
            return JSONResponse({"status": "loading"}, status_code=503)
        return JSONResponse({"status": "failed", "error": host.error}, status_code=503)

    def endpoint(name: str):
        async def serve(request: Request) -> Response:
            return await host.call_endpoint(name, request)

        serve.__name__ = name
        return serve

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        task = asyncio.get_running_loop().create_task(host.load())
        try:
            yield
        finally:
            task.cancel()
            host.close()

    routes = [Route(HEALTH_PATH, health, methods=["GET"])]
    routes += [Route(path, endpoint(name), methods=["POST"]) for name, path in ENDPOINT_PATHS.items()]
    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={
            HTTPException: http_exception_response,
            errors.TrestleError: trestle_error_response,
            Exception: unexpected_error_response,
        },
    )
    app.add_middleware(ReadinessGate, host=host)
    app.state.host = host
    return app
