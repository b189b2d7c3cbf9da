"""`SqliteSearch`: hybrid search on the SQLite store (see `trestle.endpoints.search`).

Keyword scores: SQLite FTS5's `bm25()` over `chunks_fts` (created by the store's migrations and
kept in step with `chunks` by triggers); the query's words are OR-ed, each quoted. The dataset
is named inside FTS5 by rowid ranges (runs of its chunks' ids, known from the vector index), so
only its own matches are scored and no `chunks` row is read; the keyword query and the matrix
product run at the same time.

Vectors: one `VectorIndex` per dataset in memory, a float32 matrix of unit vectors searched
exactly (one matrix product and a partial sort: 100,000 chunks in a few milliseconds, recall 1;
bench/retrieval.py measures it). It is loaded from the `chunks.vector` column on the first search,
follows this process's uploads and deletes (`apply`), and is reloaded when the dataset's
`version` in the store differs from its own (another process changed the dataset).
"""

from __future__ import annotations

import asyncio
import functools
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import sqlalchemy as sa
from sqlalchemy import select
from threadpoolctl import ThreadpoolController

from trestle.endpoints.search import CANDIDATES, Hit, fuse, query_words
from trestle.store.datasets import Change, DatasetStore
from trestle.store.records import Dataset
from trestle.store.tables import ChunkRow, DocumentRow

MAX_RANGES = 16  # runs of consecutive chunk ids that the keyword query names (else: a join)
OFF_LOOP_ROWS = 20_000  # matrices this large are multiplied in a thread, off the event loop
# One BLAS thread per product: a matrix-vector product is memory-bound, and on a busy machine
# waking BLAS threads cost 30 ms where the product itself takes 0.2 ms (2,000 rows; 10k: 32 → 6).
_BLAS = ThreadpoolController()
_FTS = sa.table("chunks_fts", sa.column("rowid"))
_BM25 = sa.literal_column("bm25(chunks_fts)")  # negative: lower is better
_NOT_YET: Any = object()


@dataclass
class VectorIndex:
    version: int
    ids: np.ndarray  # int64, ascending
    matrix: np.ndarray  # (len(ids), dimensions) float32
    _ranges: list[tuple[int, int]] | None = field(default=_NOT_YET, init=False, repr=False,
                                                  compare=False)

    def similarities(self, query: np.ndarray) -> np.ndarray:
        with _BLAS.limit(limits=1, user_api="blas"):
            return self.matrix @ query

    def ranges(self) -> list[tuple[int, int]] | None:
        """The ids as (first, last) runs of consecutive ids, or None past `MAX_RANGES` runs.
        Every id of a run belongs to this dataset (ids are unique across datasets)."""
        if self._ranges is _NOT_YET:
            breaks = np.flatnonzero(np.diff(self.ids) != 1)
            if len(breaks) >= MAX_RANGES:
                self._ranges = None
            else:
                starts = [self.ids[0], *self.ids[breaks + 1]] if len(self.ids) else []
                ends = [*self.ids[breaks], self.ids[-1]] if len(self.ids) else []
                self._ranges = [(int(a), int(b)) for a, b in zip(starts, ends, strict=True)]
        return self._ranges

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
        self._ranges = _NOT_YET

    def removed(self, change: Change) -> None:
        keep = ~np.isin(self.ids, change.chunk_ids)
        self.ids, self.matrix = self.ids[keep], self.matrix[keep]
        self.version = change.version
        self._ranges = _NOT_YET


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
        words = query_words(query_text)
        # The keyword query (in the database's thread) and the matrix product (in a thread of
        # its own when large) run at the same time: both release the GIL.
        sims, keyword = await asyncio.gather(
            self._similarities(index, query_vector),
            self._keyword(dataset.id, index, words, filter or {}) if words and alpha < 1
            else _nothing(),
        )
        if allowed is not None:
            sims = np.where(allowed, sims, -np.inf)
        n = min(CANDIDATES, len(sims))
        rows = np.argpartition(-sims, n - 1)[:n]
        rows = rows[np.isfinite(sims[rows])]
        vector = dict(zip(index.ids[rows].tolist(), sims[rows].tolist(), strict=True))
        if keyword:
            extra = np.array([i for i in keyword if i not in vector], dtype=np.int64)
            extra = extra[np.isin(extra, index.ids)]  # a chunk added since the index was read
            vector.update(zip(extra.tolist(), sims[index.rows_of(extra)].tolist(), strict=True))
        return fuse(vector, keyword, alpha, top_k)

    @staticmethod
    async def _similarities(index: VectorIndex, query_vector: np.ndarray) -> np.ndarray:
        query = np.asarray(query_vector, dtype=np.float32)
        if len(index.ids) >= OFF_LOOP_ROWS:
            return await asyncio.to_thread(index.similarities, query)
        return index.similarities(query)

    async def _keyword(self, dataset_id: str, index: VectorIndex, words: list[str],
                       filter: dict[str, Any]) -> dict[int, float]:
        """BM25 (as a positive number) of the best `CANDIDATES` matches.

        The dataset is applied inside FTS5 as rowid ranges (its chunks' ids, from the vector
        index: one range per run of consecutive ids), so that only the dataset's matches are
        scored and no `chunks` row is read. A dataset whose ids are scattered over more than
        `MAX_RANGES` runs, or a metadata filter, joins `chunks` instead."""
        match = match_expression(words)
        ranges = index.ranges()
        if not filter and ranges is not None:
            best = _in_ranges(len(ranges))
            params: dict[str, Any] = {"match": match}
            for i, (lo, hi) in enumerate(ranges):
                params[f"lo{i}"], params[f"hi{i}"] = lo, hi
        else:
            joined = _FTS.join(ChunkRow, ChunkRow.id == _FTS.c.rowid)
            if filter:
                joined = joined.join(DocumentRow, DocumentRow.id == ChunkRow.document_id)
            best = (
                select(ChunkRow.id, _BM25)
                .select_from(joined)
                .where(sa.text("chunks_fts MATCH :match"), ChunkRow.dataset_id == dataset_id,
                       *self.datasets.filter_clauses(filter))
                .order_by(_BM25)
                .limit(CANDIDATES)
            )
            params = {"match": match}
        async with self.datasets.engine.connect() as conn:
            rows = await conn.execute(best, params)
            return {chunk_id: -float(bm25) for chunk_id, bm25 in rows if bm25 < 0}


@functools.lru_cache(maxsize=MAX_RANGES)
def _in_ranges(n: int) -> sa.Select:
    """The keyword query over `n` rowid ranges (`:lo0`..`:hi{n-1}`), built once per `n`: building
    a union of 16 selects costs milliseconds, more than SQLite's own work for a search."""
    parts = [
        select(_FTS.c.rowid.label("id"), _BM25.label("score"))
        .where(sa.text("chunks_fts MATCH :match"),
               _FTS.c.rowid.between(sa.bindparam(f"lo{i}"), sa.bindparam(f"hi{i}")))
        .order_by(_BM25).limit(CANDIDATES)
        for i in range(n)
    ]
    if n == 1:
        return parts[0]
    union = sa.union_all(*(p.subquery().select() for p in parts)).subquery()
    return select(union.c.id, union.c.score).order_by(union.c.score).limit(CANDIDATES)


async def _nothing() -> dict[int, float]:
    return {}
