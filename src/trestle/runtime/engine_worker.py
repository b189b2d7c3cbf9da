"""What every engine worker shares (llama.cpp, sentence-transformers): a model that loads in a
background thread once the server runs, the health it reports meanwhile, and the common routes.

    class MyState(EngineWorker):          load() runs in a thread; counters() go on /health once
        def load(self): ...               ready; close() runs at shutdown
    engine_app(state, routes, name=...) -> Starlette with GET /health and GET /v1/models added

Until the model is ready every route but /health answers the 503 envelope of the worker health
contract (`trestle.protocol.health`); a model that fails to load is reported there, and the
server stays up so the supervisor can read why.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from trestle.deploy.config import ModelConfig
from trestle.errors import BadRequest, NotFound
from trestle.protocol.errors import exception_handlers
from trestle.protocol.health import WorkerHealth, WorkerState, not_ready
from trestle.protocol.openai.responses import ModelCard, ModelList


class EngineWorker:
    """Loading, ready or failed; subclasses load their model and report their counters."""

    def __init__(self, config: ModelConfig, model_dir: Path):
        if config.engine is None:
            raise BadRequest("config.yaml has no engine section", param="engine")
        self.engine = config.engine
        self.model_dir = Path(model_dir)
        self.status = WorkerState.LOADING
        self.error: str | None = None
        self.model = None

    def load(self) -> None:
        """Load the model (runs in a thread)."""
        raise NotImplementedError

    def counters(self) -> dict:
        """Extra keys for /health once ready."""
        return {}

    async def close(self) -> None:
        """Release the model at shutdown (after loading was cancelled or finished)."""

    def require_ready(self) -> None:
        if self.status is not WorkerState.READY:
            raise not_ready(self.status, self.error, model=f"the model {self.engine.slug}")

    def health(self) -> WorkerHealth:
        counters = self.counters() if self.status is WorkerState.READY else {}
        return WorkerHealth(status=self.status, error=self.error, **counters)

    def check_model(self, name: str) -> None:
        if name != self.engine.slug:
            raise NotFound(
                f"model {name!r} is not served here; this worker serves {self.engine.slug!r}",
                param="model",
            )


def engine_app(state: EngineWorker, routes: list[BaseRoute], *, name: str,
               log: logging.Logger) -> Starlette:
    """The worker app: `routes` plus /health and /v1/models, loading `state` in the background."""

    async def load_in_background() -> None:
        try:
            await asyncio.to_thread(state.load)
            state.status = WorkerState.READY
            log.info("%s ready: %s", name, state.engine.slug)
        except Exception as exc:  # reported on /health, not raised: the server stays up
            state.status, state.error = WorkerState.FAILED, str(getattr(exc, "message", exc))
            log.error("%s failed to load: %s", name, state.error)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        task = asyncio.create_task(load_in_background())
        try:
            yield
        finally:
            task.cancel()
            await state.close()

    async def health(request: Request) -> Response:
        health = state.health()
        return JSONResponse(health.body(), status_code=health.http_status)

    async def models(request: Request) -> Response:
        state.require_ready()
        return JSONResponse(ModelList(data=[ModelCard(id=state.engine.slug)]).model_dump())

    common = [Route("/health", health, methods=["GET"]), Route("/v1/models", models, methods=["GET"])]
    return Starlette(routes=common + routes, exception_handlers=exception_handlers(f"{name} worker"),
                     lifespan=lifespan)
