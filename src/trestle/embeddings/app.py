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
import logging
from pathlib import Path

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from trestle.deploy.config import ModelConfig
from trestle.errors import BadRequest, TooManyRequests
from trestle.protocol.openai.embeddings import (
    Embedding,
    EmbeddingRequest,
    EmbeddingResponse,
    EmbeddingUsage,
    encode_vector,
)
from trestle.protocol.validation import parse_body
from trestle.runtime.engine_worker import EngineWorker, engine_app

log = logging.getLogger("trestle.embeddings")


class EmbeddingsState(EngineWorker):
    """The sentence-transformers model once ready, and the queue of requests waiting for it."""

    def __init__(self, config: ModelConfig, model_dir: Path):
        super().__init__(config, model_dir)
        self.waiting = 0
        self.lock = asyncio.Lock()

    def load(self) -> None:
        from trestle.embeddings.model import EmbeddingModel

        e = self.engine
        self.model = EmbeddingModel.load(
            e.weights, self.model_dir, threads=e.threads, batch_size=e.max_batch
        )

    def counters(self) -> dict:
        return {"waiting": self.waiting}

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

    async def embeddings(request: Request) -> Response:
        state.require_ready()
        req = parse_body(EmbeddingRequest, await request.body())
        state.check_model(req.model)
        response = await state.embed(req)
        log.info("embeddings: %d input(s), %d tokens, %s", len(response.data),
                 response.usage.prompt_tokens, req.encoding_format)
        return JSONResponse(response.model_dump())

    app = engine_app(state, [Route("/v1/embeddings", embeddings, methods=["POST"])],
                     name="embeddings", log=log)
    app.state.embeddings = state
    return app
