"""The engine worker's ASGI app: OpenAI chat/completions served by llama.cpp, no model code.

    build_app(config, model_dir) -> Starlette app

Routes: `GET /health` (the worker health contract, `trestle.protocol.health`, plus the
scheduler's counters once ready), `POST /v1/chat/completions`, `POST /v1/completions`, `GET /v1/models`.
The model loads in a background thread once the server runs (`trestle.runtime.engine_worker`);
until it is ready every route but /health answers a 503 envelope that says so.
"""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from trestle.deploy.config import ModelConfig
from trestle.engine.builtin import resolve_weights
from trestle.engine.chat.prompts import prepare_chat, prepare_completion, prepare_off_loop
from trestle.engine.openai import chat_response, completion_response
from trestle.protocol.openai.requests import ChatCompletionRequest, CompletionRequest
from trestle.protocol.validation import parse_body
from trestle.runtime.engine_worker import EngineWorker, engine_app

log = logging.getLogger("trestle.engine")


class EngineState(EngineWorker):
    """The llama.cpp model and its scheduler once ready."""

    scheduler = None

    def load(self) -> None:
        from trestle.engine.decoding.grammar import Grammars
        from trestle.engine.llama import LlamaModel
        from trestle.engine.scheduler import Scheduler

        e = self.engine
        path = resolve_weights(e.weights, self.model_dir)
        threads = e.threads or os.cpu_count() or 1
        self.model = LlamaModel.load(
            path, context_length=e.context_length, slots=e.max_batch, threads=threads,
            gpu_layers=e.gpu_layers,
        )
        Grammars.of(self.model)  # llguidance's tokenizer for structured outputs, once per model
        self.scheduler = Scheduler(self.model, max_batch=e.max_batch, max_queue=e.max_queue)
        self.scheduler.start()

    def counters(self) -> dict:
        return self.scheduler.stats()

    async def close(self) -> None:
        if self.scheduler is not None and await asyncio.to_thread(self.scheduler.shutdown):
            self.model.close()


def build_app(config: ModelConfig, model_dir: Path) -> Starlette:
    state = EngineState(config, model_dir)

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

    app = engine_app(state, [
        Route("/v1/chat/completions", chat, methods=["POST"]),
        Route("/v1/completions", completions, methods=["POST"]),
    ], name="engine", log=log)
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
