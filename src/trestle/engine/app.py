"""The engine worker's ASGI app: OpenAI chat/completions served by llama.cpp, no model code.

    build_app(config, model_dir) -> Starlette app

Routes: `GET /health` (the worker health contract, `trestle.protocol.health`, plus the
scheduler's counters once ready), `POST /v1/chat/completions`, `POST /v1/completions`, `GET /v1/models`.
The model loads in a background thread once the server runs; until it is ready every route
but /health answers a 503 envelope that says so.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from pathlib import Path

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from trestle.deploy.config import ModelConfig
from trestle.engine.builtin import resolve_weights
from trestle.engine.openai import chat_response, completion_response
from trestle.engine.prompts import prepare_chat, prepare_completion, prepare_off_loop
from trestle.errors import BadRequest, NotFound
from trestle.protocol.errors import exception_handlers
from trestle.protocol.health import WorkerHealth, WorkerState, not_ready
from trestle.protocol.openai.requests import ChatCompletionRequest, CompletionRequest
from trestle.protocol.openai.responses import ModelCard, ModelList
from trestle.protocol.validation import parse_body

log = logging.getLogger("trestle.engine")


class EngineState:
    """Loading, ready or failed; holds the model and the scheduler once ready."""

    def __init__(self, config: ModelConfig, model_dir: Path):
        if config.engine is None:
            raise BadRequest("config.yaml has no engine section", param="engine")
        self.engine = config.engine
        self.model_dir = Path(model_dir)
        self.status = WorkerState.LOADING
        self.error: str | None = None
        self.model = None
        self.scheduler = None

    def load(self) -> None:
        from trestle.engine.grammar import Grammars
        from trestle.engine.llama import LlamaModel
        from trestle.engine.scheduler import Scheduler

        e = self.engine
        path = resolve_weights(e.weights, self.model_dir)
        threads = e.threads or os.cpu_count() or 1
        self.model = LlamaModel.load(
            path, context_length=e.context_length, slots=e.max_batch, threads=threads
        )
        Grammars.of(self.model)  # llguidance's tokenizer for structured outputs, once per model
        self.scheduler = Scheduler(self.model, max_batch=e.max_batch, max_queue=e.max_queue)
        self.scheduler.start()

    def require_ready(self) -> None:
        if self.status is not WorkerState.READY:
            raise not_ready(self.status, self.error, model=f"the model {self.engine.slug}")

    def health(self) -> WorkerHealth:
        counters = self.scheduler.stats() if self.status is WorkerState.READY else {}
        return WorkerHealth(status=self.status, error=self.error, **counters)

    def check_model(self, name: str) -> None:
        if name != self.engine.slug:
            raise NotFound(
                f"model {name!r} is not served here; this engine serves {self.engine.slug!r}",
                param="model",
            )


def build_app(config: ModelConfig, model_dir: Path) -> Starlette:
    state = EngineState(config, model_dir)

    async def load_in_background() -> None:
        try:
            await asyncio.to_thread(state.load)
            state.status = WorkerState.READY
            log.info("engine ready: %s", state.engine.slug)
        except Exception as exc:  # reported on /health, not raised: the server stays up
            state.status, state.error = WorkerState.FAILED, str(getattr(exc, "message", exc))
            log.error("engine failed to load: %s", state.error)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        task = asyncio.create_task(load_in_background())
        try:
            yield
        finally:
            task.cancel()
            if state.scheduler is not None and await asyncio.to_thread(state.scheduler.shutdown):
                state.model.close()

    async def health(request: Request) -> Response:
        health = state.health()
        return JSONResponse(health.body(), status_code=health.http_status)

    async def models(request: Request) -> Response:
        state.require_ready()
        return JSONResponse(ModelList(data=[ModelCard(id=state.engine.slug)]).model_dump())

    def endpoint(kind: str, request_type, prepare, respond):
        async def handle(request: Request) -> Response:
            state.require_ready()
            req = parse_body(request_type, await request.body())
            state.check_model(req.model)
            prepared = await prepare_off_loop(request.receive, prepare, req, state.model)
            _log_request(kind, req, prepared)
            return await respond(request, state.scheduler, state.model, req, prepared)

        return handle

    chat = endpoint("chat", ChatCompletionRequest, prepare_chat, chat_response)
    completions = endpoint("completion", CompletionRequest, prepare_completion, completion_response)

    app = Starlette(
        routes=[
            Route("/health", health, methods=["GET"]),
            Route("/v1/models", models, methods=["GET"]),
            Route("/v1/chat/completions", chat, methods=["POST"]),
            Route("/v1/completions", completions, methods=["POST"]),
        ],
        exception_handlers=exception_handlers("engine worker"),
        lifespan=lifespan,
    )
    app.state.engine = state
    return app


def _log_request(kind: str, req, prepared) -> None:
    spec = prepared.spec
    ignored = []
    if getattr(req, "length_penalty", 1) != 1 or getattr(req, "early_stopping", False):
        ignored.append("length_penalty/early_stopping (no beam search)")
    if getattr(req, "disaggregated_params", None) is not None:
        ignored.append("disaggregated_params")
    log.info(
        "%s: %d prompt tokens, max_tokens %d, stream %s, user %s%s",
        kind, len(spec.prompt), spec.max_tokens, req.stream, prepared.user_hash or "-",
        f", accepted without effect: {', '.join(ignored)}" if ignored else "",
    )
