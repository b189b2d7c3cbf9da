"""The embeddings worker's ASGI app: OpenAI `/v1/embeddings` served by sentence-transformers.

    build_app(config, model_dir) -> Starlette app      (config.engine.kind == "sentence_transformers")

Routes: `GET /health` (the worker health contract, `trestle.protocol.health`), `GET /v1/models`,
`POST /v1/embeddings`. The model loads in a background thread once the server runs (importing
torch takes seconds); until it is ready every route but /health answers a 503 envelope.

One encode runs at a time, in a thread (torch uses `engine.threads` cores for it); requests
wait their turn, at most `engine.max_queue` of them, after which the worker answers 429.
`engine.max_batch` is the number of texts encoded together. `dimensions` other than the model's
is a 400 (vectors are not shortened); `usage` counts every token of every input (see
`trestle.embeddings.model`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from trestle.deploy.config import ModelConfig
from trestle.errors import BadRequest, NotFound, TooManyRequests
from trestle.protocol.health import WorkerHealth, WorkerState, not_ready
from trestle.protocol.openai.embeddings import (
    Embedding,
    EmbeddingRequest,
    EmbeddingResponse,
    EmbeddingUsage,
    encode_vector,
)
from trestle.protocol.errors import exception_handlers
from trestle.protocol.openai.responses import ModelCard, ModelList
from trestle.protocol.validation import parse_body

log = logging.getLogger("trestle.embeddings")


class EmbeddingsState:
    """Loading, ready or failed; holds the model once ready."""

    def __init__(self, config: ModelConfig, model_dir: Path):
        if config.engine is None:
            raise BadRequest("config.yaml has no engine section", param="engine")
        self.engine = config.engine
        self.model_dir = Path(model_dir)
        self.status = WorkerState.LOADING
        self.error: str | None = None
        self.model = None
        self.waiting = 0
        self.lock = asyncio.Lock()

    def load(self) -> None:
        from trestle.embeddings.model import EmbeddingModel

        e = self.engine
        self.model = EmbeddingModel.load(
            e.weights, self.model_dir, threads=e.threads, batch_size=e.max_batch
        )

    def require_ready(self) -> None:
        if self.status is not WorkerState.READY:
            raise not_ready(self.status, self.error, model=f"the model {self.engine.slug}")

    def health(self) -> WorkerHealth:
        counters = {"waiting": self.waiting} if self.status is WorkerState.READY else {}
        return WorkerHealth(status=self.status, error=self.error, **counters)

    def check_model(self, name: str) -> None:
        if name != self.engine.slug:
            raise NotFound(
                f"model {name!r} is not served here; this worker serves {self.engine.slug!r}",
                param="model",
            )

    async def embed(self, req: EmbeddingRequest) -> EmbeddingResponse:
        model = self.model
        if req.dimensions is not None and req.dimensions != model.dimensions:
            raise BadRequest(
                f"dimensions {req.dimensions} is not supported: {self.engine.slug} makes "
                f"{model.dimensions}-dimensional vectors only",
                param="dimensions",
            )
        texts = req.texts
        if self.waiting >= self.engine.max_queue + 1:
            raise TooManyRequests("the embeddings queue is full; retry shortly", code="queue_full")
        self.waiting += 1
        try:
            async with self.lock:
                vectors, tokens = await asyncio.to_thread(
                    lambda: (model.encode(texts), model.count_tokens(texts))
                )
        finally:
            self.waiting -= 1
        total = sum(tokens)
        return EmbeddingResponse(
            data=[
                Embedding(index=i, embedding=encode_vector(v, req.encoding_format))
                for i, v in enumerate(vectors)
            ],
            model=self.engine.slug,
            usage=EmbeddingUsage(prompt_tokens=total, total_tokens=total),
        )


def build_app(config: ModelConfig, model_dir: Path) -> Starlette:
    state = EmbeddingsState(config, model_dir)

    async def load_in_background() -> None:
        try:
            await asyncio.to_thread(state.load)
            state.status = WorkerState.READY
            log.info("embeddings ready: %s (%d dimensions)", state.engine.slug, state.model.dimensions)
        except Exception as exc:  # reported on /health, not raised: the server stays up
            state.status, state.error = WorkerState.FAILED, str(getattr(exc, "message", exc))
            log.error("embeddings model failed to load: %s", state.error)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        task = asyncio.create_task(load_in_background())
        try:
            yield
        finally:
            task.cancel()

    async def health(request: Request) -> Response:
        health = state.health()
        return JSONResponse(health.body(), status_code=health.http_status)

    async def models(request: Request) -> Response:
        state.require_ready()
        return JSONResponse(ModelList(data=[ModelCard(id=state.engine.slug)]).model_dump())

    async def embeddings(request: Request) -> Response:
        state.require_ready()
        req = parse_body(EmbeddingRequest, await request.body())
        state.check_model(req.model)
        response = await state.embed(req)
        log.info("embeddings: %d input(s), %d tokens, %s", len(response.data),
                 response.usage.prompt_tokens, req.encoding_format)
        return JSONResponse(response.model_dump())

    app = Starlette(
        routes=[
            Route("/health", health, methods=["GET"]),
            Route("/v1/models", models, methods=["GET"]),
            Route("/v1/embeddings", embeddings, methods=["POST"]),
        ],
        exception_handlers=exception_handlers("embeddings worker"),
        lifespan=lifespan,
    )
    app.state.embeddings = state
    return app
