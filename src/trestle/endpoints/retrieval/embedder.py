"""The datastore's client of the embeddings worker: texts in, unit float32 vectors out.

    embedder = WorkerEmbedder(httpx.AsyncClient(base_url=WORKER_URL))   # or a UDS transport
    vectors = await embedder.embed(["some text", ...])                  # (n, 384) float32

`Embedder` is the interface the datastore needs (`model`, `dimensions`, `embed`); `WorkerEmbedder`
implements it over the worker's OpenAI `POST /v1/embeddings` (base64, `BATCH` texts a request), so
the gateway never loads torch. `routed_embedder(routing)` is the gateway's: its requests go through
the routing table to the deployment serving the slug (`ReplicaTransport`). Worker errors map to the error tree: unreachable or 503 →
`Unavailable`, 429 → `TooManyRequests`, anything else → `UpstreamError` with the worker's message.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import httpx
import numpy as np

from trestle.deploy.routing import RoutingTable
from trestle.errors import NotFound, TooManyRequests, Unavailable, UpstreamError
from trestle.protocol.openai.embeddings import EmbeddingRequest, EmbeddingResponse, decode_vectors

MINILM_SLUG = "sentence-transformers/all-MiniLM-L6-v2"
MINILM_DIMENSIONS = 384
BATCH = 64

Progress = Callable[[int, int], None]  # (texts embedded so far, total)


class Embedder(Protocol):
    model: str
    dimensions: int

    async def embed(self, texts: list[str], progress: Progress | None = None) -> np.ndarray: ...


class WorkerEmbedder:
    def __init__(self, client: httpx.AsyncClient, *, model: str = MINILM_SLUG,
                 dimensions: int = MINILM_DIMENSIONS, batch: int = BATCH):
        self.client = client
        self.model = model
        self.dimensions = dimensions
        self.batch = batch

    async def embed(self, texts: list[str], progress: Progress | None = None) -> np.ndarray:
        parts = []
        for start in range(0, len(texts), self.batch):
            parts.append(await self._request(texts[start:start + self.batch]))
            if progress is not None:
                progress(min(start + self.batch, len(texts)), len(texts))
        if not parts:
            return np.zeros((0, self.dimensions), np.float32)
        return np.concatenate(parts)

    async def _request(self, texts: list[str]) -> np.ndarray:
        body = EmbeddingRequest(input=texts, model=self.model, encoding_format="base64")
        try:
            res = await self.client.post("/v1/embeddings", json=body.model_dump(exclude_none=True))
        except httpx.TransportError as exc:
            raise Unavailable(
                f"the embeddings model {self.model} is not reachable ({type(exc).__name__})",
                code="embeddings_unavailable",
            ) from None
        if res.status_code != 200:
            try:
                message = res.json()["error"]["message"]
            except (ValueError, KeyError, TypeError):
                message = f"HTTP {res.status_code}"
            error = {503: Unavailable, 429: TooManyRequests}.get(res.status_code, UpstreamError)
            raise error(f"embeddings model {self.model}: {message}", code="embeddings_error")
        vectors = decode_vectors(EmbeddingResponse.model_validate_json(res.content))
        if vectors.shape != (len(texts), self.dimensions):
            raise UpstreamError(
                f"embeddings model {self.model} answered {vectors.shape} for {len(texts)} texts"
            )
        return vectors


class ReplicaTransport(httpx.AsyncBaseTransport):
    """An httpx transport that sends each request to a replica of the Model API `slug`, found in
    the routing table at the time of the request (`trestle.deploy.routing`): the gateway's
    `WorkerEmbedder` reaches the embeddings deployment the way `/v1/embeddings` does."""

    def __init__(self, routing: RoutingTable, slug: str = MINILM_SLUG):
        self.routing = routing
        self.slug = slug

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        try:
            replica = self.routing.route(slug=self.slug)
        except NotFound:
            raise Unavailable(
                f"the embeddings model {self.slug} is not deployed here (`trestle serve` deploys "
                "it unless started with --no-builtin or --no-builtin-embeddings)",
                code="embeddings_unavailable",
            ) from None
        body = await request.aread()
        upstream = await replica.send(request.method, request.url.raw_path.decode("ascii"),
                                      [(b"content-type", b"application/json")], body)
        content = await upstream.read()
        kept = [(k, v) for k, v in upstream.headers if k.lower() == b"content-type"]
        return httpx.Response(upstream.status, headers=kept, content=content)


def routed_embedder(routing: RoutingTable, slug: str = MINILM_SLUG) -> tuple[WorkerEmbedder, httpx.AsyncClient]:
    """A `WorkerEmbedder` over the routing table, and its client (close it with `aclose()`)."""
    client = httpx.AsyncClient(transport=ReplicaTransport(routing, slug), base_url="http://embeddings")
    return WorkerEmbedder(client, model=slug), client
