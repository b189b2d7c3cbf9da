"""The datasets API (`/api/datasets/...`): request and response bodies.

One definition per wire type, used by the gateway (`trestle.gateway.endpoints.datasets`), the CLI and the
tests. Search results are the items of the prompt-endpoint response's `search_results`
(`data`, `embedding`, `image_paths`, `confidence`, `metadata {documentId, rowId, url}`,
`variable`, `last_accessed`, `query`); `top_k`, `alpha` and `filter` are checked by
`trestle.endpoints.retrieval.search.check_query`, which names the field.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from trestle.protocol.endpoints import SearchResultOut
from trestle.store.records import Chunk, Dataset, Document

MAX_UPSERT_ROWS = 1000
MAX_ROW_TEXT = 20_000


class DatasetCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=255)


class DatasetOut(BaseModel):
    id: str
    name: str
    embedding_model: str
    dimensions: int
    created_at: datetime
    documents: int | None = None
    rows: int | None = None

    @classmethod
    def of(cls, dataset: Dataset, *, documents: int | None = None,
           rows: int | None = None) -> "DatasetOut":
        return cls(id=dataset.id, name=dataset.name, embedding_model=dataset.embedding_model,
                   dimensions=dataset.dimensions, created_at=dataset.created_at,
                   documents=documents, rows=rows)


class DatasetList(BaseModel):
    data: list[DatasetOut]


class DocumentOut(BaseModel):
    id: str
    name: str
    metadata: dict[str, Any]
    rows: int
    created_at: datetime

    @classmethod
    def of(cls, document: Document) -> "DocumentOut":
        return cls(id=document.id, name=document.name, metadata=document.metadata,
                   rows=document.chunks, created_at=document.created_at)


class DocumentList(BaseModel):
    data: list[DocumentOut]


class UploadOut(BaseModel):
    dataset_id: str
    documents: list[DocumentOut]


class RowOut(BaseModel):
    id: int  # the search results' `rowId`
    document_id: str
    position: int
    data: dict[str, Any]
    embedding: str
    last_accessed: datetime | None

    @classmethod
    def of(cls, chunk: Chunk) -> "RowOut":
        return cls(id=chunk.id, document_id=chunk.document_id, position=chunk.position,
                   data=chunk.data, embedding=chunk.embedding, last_accessed=chunk.last_accessed)


class RowPage(BaseModel):
    data: list[RowOut]
    next_after: int | None  # pass as `after` for the next page; null on the last page


class RowIn(BaseModel):
    """A row to upsert: with `id`, that row's data is replaced (and re-embedded); without, a new
    row in a new document of its own, with `metadata`."""

    model_config = ConfigDict(extra="forbid")

    id: int | None = Field(default=None, ge=1)
    data: dict[str, Any]
    metadata: dict[str, Any] | None = None


class RowUpsert(BaseModel):
    model_config = ConfigDict(extra="forbid")

    rows: list[RowIn] = Field(min_length=1, max_length=MAX_UPSERT_ROWS)


class RowUpsertOut(BaseModel):
    data: list[RowOut]


class SearchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    query: str
    top_k: Any = 5
    alpha: Any = 0.5
    filter: Any = None


class SearchResponse(BaseModel):
    query: str
    results: list[SearchResultOut]
