"""`Datastore`: what the datasets API and prompt endpoints call.

    datastore = Datastore(store.datasets, WorkerEmbedder(client))
    await datastore.prepare()                                 # once (PostgreSQL: pgvector tables)
    ds = await datastore.create_dataset("handbook")
    docs = await datastore.upload("handbook", [UploadedFile("faq.md", data, {"team": "hr"})],
                                  ChunkingOptions(size=800, overlap=100))
    results = await datastore.search("handbook", "how many vacation days?", top_k=3, alpha=0.5,
                                     filter={"team": "hr"})
    results[0].confidence, results[0].chunk.text, results[0].document.metadata["url"]
    results[0].wire(variable="context", query="how many vacation days?")   # the seed's fields
    rows = await datastore.rows("handbook", limit=100, after=0)
    await datastore.delete_document("handbook", docs[0].id)

Datasets are named by id or name (`ref`). Errors come from `trestle.errors`: NotFound for an
unknown dataset or document, BadRequest naming the field (`top_k`, `alpha`, `filter`, `files`,
`metadata`, `query`), PayloadTooLarge for uploads over a limit (`trestle.endpoints.ingest`),
Unavailable when the embeddings worker cannot be reached.

`search` embeds the query with the same model as the chunks, runs the hybrid search of
`trestle.endpoints.search` (the fusion formula is documented there) and sets `last_accessed`
of the chunks it returns. `search_vector` takes a ready query vector instead (for callers that
embed many queries at once).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np

from trestle.endpoints.chunking import ChunkingOptions
from trestle.endpoints.embedder import Embedder, Progress
from trestle.endpoints.ingest import UploadedFile, ingest
from trestle.endpoints.search import SearchIndex, check_query, search_index
from trestle.errors import BadRequest
from trestle.store.datasets import DatasetStore
from trestle.store.records import Chunk, Dataset, Document

MAX_QUERY_CHARS = 10_000


@dataclass(frozen=True)
class SearchResult:
    chunk: Chunk
    document: Document
    confidence: float  # 0..1, higher is better
    vector_score: float
    keyword_score: float
    last_accessed: datetime

    def wire(self, *, variable: str | None, query: str) -> dict[str, Any]:
        """The result as the prompt-endpoint response's `search_results` items carry it."""
        return {
            "data": self.chunk.data,
            "embedding": self.chunk.embedding,
            "image_paths": None,
            "confidence": self.confidence,
            "metadata": {
                "documentId": self.document.id,
                "rowId": self.chunk.id,
                "url": self.document.metadata.get("url"),
            },
            "variable": variable,
            "last_accessed": self.last_accessed.isoformat(),
            "query": query,
        }


class Datastore:
    def __init__(self, datasets: DatasetStore, embedder: Embedder,
                 index: SearchIndex | None = None):
        self.datasets = datasets
        self.embedder = embedder
        self.index = index or search_index(datasets)

    async def prepare(self) -> None:
        await self.index.prepare()

    # datasets

    async def create_dataset(self, name: str) -> Dataset:
        return await self.datasets.create_dataset(
            name, embedding_model=self.embedder.model, dimensions=self.embedder.dimensions
        )

    async def get_dataset(self, ref: str) -> Dataset:
        return await self.datasets.require_dataset(ref)

    async def list_datasets(self) -> list[Dataset]:
        return await self.datasets.list_datasets()

    async def delete_dataset(self, ref: str) -> Dataset:
        dataset = await self.get_dataset(ref)
        deleted = await self.datasets.delete_dataset(dataset.id)
        forget = getattr(self.index, "forget", None)
        if forget is not None:
            forget(dataset.id)
        return deleted

    # documents and rows

    async def upload(self, ref: str, files: list[UploadedFile],
                     chunking: ChunkingOptions | None = None,
                     progress: Progress | None = None) -> list[Document]:
        dataset = await self._usable(ref)
        return await ingest(self.datasets, self.index, self.embedder, dataset, files, chunking,
                            progress)

    async def documents(self, ref: str) -> list[Document]:
        return await self.datasets.list_documents((await self.get_dataset(ref)).id)

    async def rows(self, ref: str, *, limit: int = 100, after: int = 0,
                   document_id: str | None = None) -> list[Chunk]:
        dataset = await self.get_dataset(ref)
        return await self.datasets.list_rows(dataset.id, limit=limit, after=after,
                                             document_id=document_id)

    async def delete_document(self, ref: str, document_id: str) -> Document:
        dataset = await self.get_dataset(ref)
        document, change = await self.datasets.delete_document(dataset.id, document_id)
        self.index.apply(dataset.id, change)
        return document

    # search

    async def search(self, ref: str, query: str, *, top_k: int = 5, alpha: float = 0.5,
                     filter: dict[str, Any] | None = None) -> list[SearchResult]:
        if not isinstance(query, str) or not query.strip():
            raise BadRequest("query must be a non-empty string", param="query")
        if len(query) > MAX_QUERY_CHARS:
            raise BadRequest(f"query is longer than {MAX_QUERY_CHARS} characters", param="query")
        dataset = await self._usable(ref)
        check_query(top_k, alpha, filter)
        vector = (await self.embedder.embed([query]))[0]
        return await self.search_vector(dataset, vector, query, top_k=top_k, alpha=alpha,
                                        filter=filter)

    async def search_vector(self, dataset: Dataset, query_vector: np.ndarray, query_text: str, *,
                            top_k: int = 5, alpha: float = 0.5,
                            filter: dict[str, Any] | None = None) -> list[SearchResult]:
        filter = check_query(top_k, alpha, filter)
        hits = await self.index.search(dataset, query_vector, query_text, top_k=top_k,
                                       alpha=float(alpha), filter=filter)
        rows = await self.datasets.get_rows(h.chunk_id for h in hits)
        hits = [h for h in hits if h.chunk_id in rows]  # deleted since the index was read
        when = await self.datasets.touch(h.chunk_id for h in hits)
        return [
            SearchResult(rows[h.chunk_id][0], rows[h.chunk_id][1], h.confidence, h.vector_score,
                         h.keyword_score, when)
            for h in hits
        ]

    async def _usable(self, ref: str) -> Dataset:
        dataset = await self.get_dataset(ref)
        if dataset.embedding_model != self.embedder.model:
            raise BadRequest(
                f"dataset {dataset.name!r} holds vectors of {dataset.embedding_model}, not of "
                f"{self.embedder.model}",
                param="dataset",
            )
        return dataset
