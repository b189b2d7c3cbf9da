"""The worker's ASGI app for a Truss-style model folder (config.yaml without `engine:`).

    GET  /health                the worker health contract (`trestle.protocol.health`)
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
import logging
from collections.abc import AsyncIterator
from pathlib import Path

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from trestle import errors
from trestle.deploy.config import ModelConfig
from trestle.protocol.errors import error_response, exception_handlers
from trestle.protocol.health import WorkerState
from trestle.runtime.host import ENDPOINT_PATHS, ModelHost
from trestle.runtime.secrets import Secrets

logger = logging.getLogger("trestle.runtime")

HEALTH_PATH = "/health"


class ReadinessGate:
    """Answers 503 on every path but /health until the model is ready."""

    def __init__(self, app: ASGIApp, host: ModelHost) -> None:
        self.app = app
        self.host = host

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] != HEALTH_PATH and self.host.state is not WorkerState.READY:
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
        health = host.health()
        return JSONResponse(health.body(), status_code=health.http_status)

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
        exception_handlers=exception_handlers("trestle worker"),
    )
    app.add_middleware(ReadinessGate, host=host)
    app.state.host = host
    return app
