"""`SqliteSearch`: hybrid search on the SQLite store (see `trestle.endpoints.search`).

Keyword scores: SQLite FTS5's `bm25()` over `chunks_fts` (created by the store's migrations and
kept in step with `chunks` by triggers); the query's words are OR-ed, each quoted.

Vectors: one `VectorIndex` per dataset in memory, a float32 matrix of unit vectors searched
exactly (one matrix product and a partial sort: 100,000 chunks in a few milliseconds, recall 1;
bench/retrieval.py measures it). It is loaded from the `chunks.vector` column on the first search,
follows this process's uploads and deletes (`apply`), and is reloaded when the dataset's
`version` in the store differs from its own (another process changed the dataset).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import numpy as np
import sqlalchemy as sa
from sqlalchemy import select
from threadpoolctl import ThreadpoolController

from trestle.endpoints.search import CANDIDATES, Hit, fuse, query_words
from trestle.store.datasets import Change, DatasetStore
from trestle.store.records import Dataset
from trestle.store.tables import ChunkRow, DocumentRow

OFF_LOOP_ROWS = 20_000  # matrices this large are multiplied in a thread, off the event loop
# One BLAS thread per product: a matrix-vector product is memory-bound, and on a busy machine
# waking BLAS threads cost 30 ms where the product itself takes 0.2 ms (2,000 rows; 10k: 32 → 6).
_BLAS = ThreadpoolController()
_FTS = sa.table("chunks_fts", sa.column("rowid"))
_BM25 = sa.literal_column("bm25(chunks_fts)")  # negative: lower is better


@dataclass
class VectorIndex:
    version: int
    ids: np.ndarray  # int64, ascending
    matrix: np.ndarray  # (len(ids), dimensions) float32

    def similarities(self, query: np.ndarray) -> np.ndarray:
        with _BLAS.limit(limits=1, user_api="blas"):
            return self.matrix @ query

    def rows_of(self, chunk_ids: np.ndarray) -> np.ndarray:
        """Row numbers of these chunk ids (which must be in the index)."""
        return np.searchsorted(self.ids, chunk_ids)

    def added(self, change: Change) -> None:
        """New rows, or rows whose vector was replaced (an upsert: their old entry goes)."""
        if len(self.ids) and len(change.chunk_ids) and change.chunk_ids.min() <= self.ids[-1]:
            keep = ~np.isin(self.ids, change.chunk_ids)
            self.ids, self.matrix = self.ids[keep], self.matrix[keep]
        self.ids = np.concatenate([self.ids, change.chunk_ids])
        self.matrix = np.concatenate([self.matrix, change.vectors.astype(np.float32)])
        if len(self.ids) > 1 and not np.all(self.ids[1:] > self.ids[:-1]):
            order = np.argsort(self.ids, kind="stable")
            self.ids, self.matrix = self.ids[order], self.matrix[order]
        self.version = change.version

    def removed(self, change: Change) -> None:
        keep = ~np.isin(self.ids, change.chunk_ids)
        self.ids, self.matrix = self.ids[keep], self.matrix[keep]
        self.version = change.version


def match_expression(words: list[str]) -> str:
    """An FTS5 query that matches any of the words (each quoted: no FTS5 syntax gets through)."""
    return " OR ".join('"' + w.replace('"', '""') + '"' for w in words)


class SqliteSearch:
    writer = None  # FTS5 entries are written by triggers; vectors live in `chunks`

    def __init__(self, datasets: DatasetStore):
        self.datasets = datasets
        self._indexes: dict[str, VectorIndex] = {}
        self._loading: dict[str, asyncio.Lock] = {}

    async def prepare(self) -> None:
        return None

    def apply(self, dataset_id: str, change: Change) -> None:
        index = self._indexes.get(dataset_id)
        if index is None:
            return
        if index.version != change.version - 1:
            del self._indexes[dataset_id]  # something else changed it too: reload when needed
        elif change.vectors is not None:
            index.added(change)
        else:
            index.removed(change)

    def forget(self, dataset_id: str) -> None:
        self._indexes.pop(dataset_id, None)

    async def vector_index(self, dataset_id: str) -> VectorIndex:
        version = await self.datasets.version(dataset_id)
        index = self._indexes.get(dataset_id)
        if index is not None and index.version == version:
            return index
        async with self._loading.setdefault(dataset_id, asyncio.Lock()):
            index = self._indexes.get(dataset_id)
            if index is None or index.version != version:
                version, ids, matrix = await self.datasets.load_vectors(dataset_id)
                index = VectorIndex(version, ids, matrix)
                self._indexes[dataset_id] = index
        return index

    async def search(
        self, dataset: Dataset, query_vector: np.ndarray, query_text: str, *, top_k: int,
        alpha: float, filter: dict[str, Any] | None,
    ) -> list[Hit]:
        index = await self.vector_index(dataset.id)
        if len(index.ids) == 0:
            return []
        allowed = None
        if filter:
            allowed = np.isin(index.ids, await self.datasets.filter_rows(dataset.id, filter))
            if not allowed.any():
                return []
        query = np.asarray(query_vector, dtype=np.float32)
        if len(index.ids) >= OFF_LOOP_ROWS:
            sims = await asyncio.to_thread(index.similarities, query)
        else:
            sims = index.similarities(query)
        if allowed is not None:
            sims = np.where(allowed, sims, -np.inf)
        n = min(CANDIDATES, len(sims))
        rows = np.argpartition(-sims, n - 1)[:n]
        rows = rows[np.isfinite(sims[rows])]
        vector = {int(index.ids[r]): float(sims[r]) for r in rows}

        keyword: dict[int, float] = {}
        words = query_words(query_text)
        if words and alpha < 1:
            keyword = await self._keyword(dataset.id, words, filter or {})
            extra = np.array([i for i in keyword if i not in vector], dtype=np.int64)
            extra = extra[np.isin(extra, index.ids)]  # a chunk added since the index was read
            for chunk_id, row in zip(extra, index.rows_of(extra), strict=True):
                vector[int(chunk_id)] = float(sims[row])
        return fuse(vector, keyword, alpha, top_k)

    async def _keyword(self, dataset_id: str, words: list[str],
                       filter: dict[str, Any]) -> dict[int, float]:
        """BM25 (as a positive number) of the best `CANDIDATES` matches."""
        match = sa.text("chunks_fts MATCH :match").bindparams(match=match_expression(words))
        joined = _FTS.join(ChunkRow, ChunkRow.id == _FTS.c.rowid)
        if filter:
            joined = joined.join(DocumentRow, DocumentRow.id == ChunkRow.document_id)
        best = (
            select(ChunkRow.id, _BM25)
            .select_from(joined)
            .where(match, ChunkRow.dataset_id == dataset_id,
                   *self.datasets.filter_clauses(filter))
            .order_by(_BM25)
            .limit(CANDIDATES)
        )
        async with self.datasets.engine.connect() as conn:
            rows = await conn.execute(best)
            return {chunk_id: -float(bm25) for chunk_id, bm25 in rows if bm25 < 0}
