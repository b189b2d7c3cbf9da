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

Datasets are named by id or name (`ref`). Errors come from `trestle.errors`: NotFound for an unknown
dataset or document, BadRequest naming the field (`top_k`, `alpha`, `filter`, `files`, `metadata`,
`query`), PayloadTooLarge for uploads over a limit (`trestle.endpoints.retrieval.ingest`),
Unavailable when the embeddings worker cannot be reached.

`search` embeds the query with the same model as the chunks (the last `QUERY_CACHE` query vectors
are kept), runs the hybrid search of `trestle.endpoints.retrieval.search` (the fusion formula is
documented there) and records `last_accessed` of the chunks it returns (written in batches by
`trestle.endpoints.access_log`; `close()` writes what is pending). `search_vector` takes a ready
query vector instead (for callers that embed many queries at once).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import json
import uuid
from collections import OrderedDict

import numpy as np

from trestle.endpoints.access_log import AccessLog
from trestle.endpoints.retrieval.chunking import ChunkingOptions
from trestle.endpoints.retrieval.embedder import Embedder, Progress
from trestle.endpoints.retrieval.ingest import UploadedFile, check_metadata, ingest
from trestle.endpoints.retrieval.search import SearchIndex, check_query, search_index
from trestle.errors import BadRequest
from trestle.store.datasets import DatasetStore, NewChunk, NewDocument, RowUpdate
from trestle.store.records import Chunk, Dataset, Document

MAX_QUERY_CHARS = 10_000
QUERY_CACHE = 256  # query embeddings kept (384 float32 each: 1.5 KiB)
MAX_ROW_TEXT = 20_000  # characters of an upserted row's text
MAX_ROW_DATA_BYTES = 64 * 1024  # an upserted row's `data`, as JSON


def check_row(i: int, row: dict[str, Any]) -> tuple[int | None, NewChunk, dict[str, Any]]:
    """An upserted row as (id or None, chunk, metadata); BadRequest naming `rows.{i}...`."""
    row_id, data, metadata = row.get("id"), row.get("data"), row.get("metadata")
    text = data.get("text") if isinstance(data, dict) else None
    if not isinstance(text, str) or not text.strip():
        raise BadRequest(f"rows.{i}.data.text must be a non-empty string", param=f"rows.{i}.data.text")
    if len(text) > MAX_ROW_TEXT:
        raise BadRequest(f"rows.{i}.data.text is longer than {MAX_ROW_TEXT} characters",
                         param=f"rows.{i}.data.text")
    try:
        encoded = json.dumps(data, allow_nan=False)
    except (TypeError, ValueError, RecursionError):
        raise BadRequest(f"rows.{i}.data is not JSON", param=f"rows.{i}.data") from None
    if len(encoded) > MAX_ROW_DATA_BYTES:
        raise BadRequest(f"rows.{i}.data is larger than {MAX_ROW_DATA_BYTES} bytes",
                         param=f"rows.{i}.data")
    if row_id is not None and metadata is not None:
        raise BadRequest(f"rows.{i}: metadata belongs to a row's document and is set when the "
                         "row is added; leave it out when replacing a row by id",
                         param=f"rows.{i}.metadata")
    metadata = metadata or {}
    check_metadata(f"rows.{i}", metadata)
    return row_id, NewChunk(text=text, data=data, embedding=text), metadata


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
        self.access = AccessLog(datasets)
        self._query_vectors: OrderedDict[str, np.ndarray] = OrderedDict()

    async def prepare(self) -> None:
        await self.index.prepare()

    async def close(self) -> None:
        """Write the pending `last_accessed` times (see `trestle.endpoints.access_log`) and stop
        the search index's background work."""
        await self.access.close()
        await self.index.close()

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
        await self.access.flush()  # rows show the last_accessed times searches answered with
        return await self.datasets.list_rows(dataset.id, limit=limit, after=after,
                                             document_id=document_id)

    async def upsert_rows(self, ref: str, rows: list[dict[str, Any]]) -> list[Chunk]:
        """Rows as `{"id"?, "data": {"text", ...}, "metadata"?}`: with `id`, that row gets the new
        data (re-embedded, same document and position); without, a new document of one row with
        the `metadata` (and a `url`). All or nothing; returns the rows in the order given."""
        dataset = await self._usable(ref)
        checked = [check_row(i, row) for i, row in enumerate(rows)]
        vectors = await self.embedder.embed([chunk.embedding for _, chunk, _ in checked])
        updates, documents = [], []
        for (row_id, chunk, metadata), vector in zip(checked, vectors, strict=True):
            if row_id is not None:
                updates.append(RowUpdate(row_id, chunk, vector))
            else:
                doc_id = str(uuid.uuid4())
                meta = {**metadata}
                meta.setdefault("url", f"/{doc_id}/row")
                documents.append(NewDocument("row", meta, [chunk], vector[None, :], id=doc_id))
        _, change, new_ids = await self.datasets.upsert_rows(dataset.id, documents, updates,
                                                             index=self.index.writer)
        self.index.apply(dataset.id, change)
        new = iter(new_ids)
        ids = [row_id if row_id is not None else next(new) for row_id, _, _ in checked]
        found = await self.datasets.get_rows(ids)
        return [found[i][0] for i in ids]

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
        vector = await self.query_vector(query)
        return await self.search_vector(dataset, vector, query, top_k=top_k, alpha=alpha,
                                        filter=filter)

    async def query_vector(self, query: str) -> np.ndarray:
        """The query's embedding; the last `QUERY_CACHE` queries' are kept (a prompt endpoint
        with several search bindings on one query, or a repeated question, embeds it once)."""
        vector = self._query_vectors.get(query)
        if vector is None:
            vector = (await self.embedder.embed([query]))[0]
            vector.setflags(write=False)
            self._query_vectors[query] = vector
            if len(self._query_vectors) > QUERY_CACHE:
                self._query_vectors.popitem(last=False)
        else:
            self._query_vectors.move_to_end(query)
        return vector

    async def search_vector(self, dataset: Dataset, query_vector: np.ndarray, query_text: str, *,
                            top_k: int = 5, alpha: float = 0.5,
                            filter: dict[str, Any] | None = None) -> list[SearchResult]:
        filter = check_query(top_k, alpha, filter)
        hits = await self.index.search(dataset, query_vector, query_text, top_k=top_k,
                                       alpha=float(alpha), filter=filter)
        rows = await self.datasets.get_rows((h.chunk_id for h in hits), dataset.id)
        hits = [h for h in hits if h.chunk_id in rows]  # deleted since the index was read
        when = self.access.record(h.chunk_id for h in hits)
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
