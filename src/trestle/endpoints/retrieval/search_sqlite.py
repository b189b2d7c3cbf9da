"""`SqliteSearch`: hybrid search on the SQLite store (see `trestle.endpoints.retrieval.search`).

Keyword scores: SQLite FTS5's `bm25()` over `chunks_fts` (created by the store's migrations and kept
in step with `chunks` by triggers); the query's words are OR-ed, each quoted. The dataset is named
inside FTS5 by rowid ranges (runs of its chunks' ids, known from the vector index), so only its own
matches are scored and no `chunks` row is read; the keyword query and the matrix product run at the
same time. From 20,000 chunks on, a `KeywordIndex` read from FTS5's index in a background task
(`trestle.endpoints.retrieval.keyword_index`) scores the query in memory instead, while it is as
current as the dataset; after a change, FTS5 again until it has been read anew.

Vectors: one `VectorIndex` per dataset in memory (`trestle.endpoints.retrieval.vector_index`): an
exact matrix product below 20,000 chunks, an inverted-file index (faiss) from there on, trained in a
background task while searches stay exact. It is loaded from the `chunks.vector` column on the first
search, follows this process's uploads and deletes (`apply`), and is reloaded when the dataset's
`version` in the store differs from its own (another process changed the dataset).
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable, Coroutine
from typing import Any

import numpy as np
import sqlalchemy as sa
from sqlalchemy import select

from trestle.endpoints.retrieval.keyword_index import (
    KEYWORD_MIN_ROWS, KeywordIndex, Tokenizer, read_keyword_index,
)
from trestle.endpoints.retrieval.search import CANDIDATES, Hit, fuse, query_words
from trestle.endpoints.retrieval.vector_index import (
    MAX_RANGES,
    VectorIndex,
    build_ivf,
    exact_nearest,
)
from trestle.store.datasets import Change, DatasetStore
from trestle.store.records import Dataset
from trestle.store.tables import ChunkRow, DocumentRow

log = logging.getLogger(__name__)
OFF_LOOP_ROWS = 20_000  # exact products this large run in a thread, off the event loop
_FTS = sa.table("chunks_fts", sa.column("rowid"))
_BM25 = sa.literal_column("bm25(chunks_fts)")  # negative: lower is better

def match_expression(words: list[str]) -> str:
    """An FTS5 query that matches any of the words (each quoted: no FTS5 syntax gets through)."""
    return " OR ".join('"' + w.replace('"', '""') + '"' for w in words)


class SqliteSearch:
    writer = None  # FTS5 entries are written by triggers; vectors live in `chunks`

    def __init__(self, datasets: DatasetStore):
        self.datasets = datasets
        self._indexes: dict[str, VectorIndex] = {}
        self._loading: dict[str, asyncio.Lock] = {}
        self._keywords: dict[str, KeywordIndex] = {}
        self._unreadable: dict[str, int] = {}  # dataset -> version whose keyword index failed
        self._tokenizer = Tokenizer()
        self._builds: dict[tuple[str, str], asyncio.Task] = {}  # (kind, dataset id) -> task

    async def prepare(self) -> None:
        return None

    async def close(self) -> None:
        """Stop index builds (a build already in its thread finishes there, unused)."""
        for task in self._builds.values():
            task.cancel()
        await asyncio.gather(*self._builds.values(), return_exceptions=True)
        self._builds.clear()
        self._tokenizer.close()

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
        """The dataset is deleted: drop its indexes and stop their builds (whose results would
        otherwise be kept for a dataset that is gone)."""
        self._indexes.pop(dataset_id, None)
        self._keywords.pop(dataset_id, None)
        self._unreadable.pop(dataset_id, None)
        for kind in ("vectors", "keywords"):
            task = self._builds.pop((kind, dataset_id), None)
            if task is not None:
                task.cancel()

    async def vector_index(self, dataset_id: str) -> VectorIndex:
        version = await self.datasets.version(dataset_id)
        index = self._indexes.get(dataset_id)
        if index is None or index.version != version:
            async with self._loading.setdefault(dataset_id, asyncio.Lock()):
                index = self._indexes.get(dataset_id)
                if index is None or index.version != version:
                    version, ids, matrix = await self.datasets.load_vectors(dataset_id)
                    index = VectorIndex(version, ids, matrix)
                    self._indexes[dataset_id] = index
        if index.wants_ivf():
            self._start("vectors", dataset_id, lambda: self._build(index))
        return index

    def keyword_index(self, dataset_id: str, index: VectorIndex) -> KeywordIndex | None:
        """The dataset's in-memory keyword index if it is as current as `index`; else None (an
        older one is dropped at once), and for a large dataset a new one is read in the
        background."""
        keywords = self._keywords.get(dataset_id)
        if keywords is not None:
            if keywords.version == index.version:
                return keywords
            del self._keywords[dataset_id]
        if (len(index.ids) >= KEYWORD_MIN_ROWS
                and self._unreadable.get(dataset_id) != index.version):
            self._start("keywords", dataset_id,
                        lambda: self._read_keywords(dataset_id, index.version))
        return None

    async def indexed(self, dataset_id: str) -> None:
        """Wait for the dataset's index builds, if any run (benchmarks and tests)."""
        self.keyword_index(dataset_id, await self.vector_index(dataset_id))
        for kind in ("vectors", "keywords"):
            task = self._builds.get((kind, dataset_id))
            if task is not None:
                await asyncio.shield(task)

    def _start(self, kind: str, dataset_id: str,
               build: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Run `build()` in a task unless one of this kind runs for the dataset."""
        key = (kind, dataset_id)
        if key in self._builds:
            return
        task = asyncio.create_task(build())
        self._builds[key] = task
        task.add_done_callback(lambda _: self._builds.pop(key, None) if self._builds.get(key)
                               is task else None)

    async def _build(self, index: VectorIndex) -> None:
        ids, matrix = index.snapshot()
        ivf = None
        try:
            ivf = await asyncio.to_thread(build_ivf, ids, matrix)
        except Exception:  # searches stay exact; the next search tries again
            log.exception("could not build a vector index of %d chunks", len(ids))
        finally:
            index.use(ivf, len(ids))

    async def _read_keywords(self, dataset_id: str, version: int) -> None:
        try:
            keywords = await asyncio.to_thread(
                read_keyword_index, self.datasets.engine.url.database, dataset_id
            )
        except Exception:  # searches go on with FTS5; the next version tries again
            log.exception("could not read the keyword index of dataset %s", dataset_id)
            self._unreadable[dataset_id] = version
            return
        if keywords is not None:
            self._keywords[dataset_id] = keywords

    async def search(
        self, dataset: Dataset, query_vector: np.ndarray, query_text: str, *, top_k: int,
        alpha: float, filter: dict[str, Any] | None,
    ) -> list[Hit]:
        index = await self.vector_index(dataset.id)
        if len(index.ids) == 0:
            return []
        allowed = None
        if filter:
            allowed = await self.datasets.filter_rows(dataset.id, filter)
            allowed = np.unique(allowed[np.isin(allowed, index.ids)])  # sorted, int64
            if not len(allowed):
                return []
        query = np.asarray(query_vector, dtype=np.float32)
        words = query_words(query_text)
        # The keyword query runs in the database's thread while the vector search runs here (or,
        # for a large exact product, in a thread of its own): both release the GIL. The keyword
        # query goes first, so that it is on its way before the vector search takes the loop.
        keyword, vector = await asyncio.gather(
            self._keyword(dataset.id, index, words, filter or {}, allowed) if words and alpha < 1
            else _nothing(),
            self._nearest(index, query, allowed),
        )
        if keyword:
            extra = np.array([i for i in keyword if i not in vector], dtype=np.int64)
            extra = extra[np.isin(extra, index.ids)]  # a chunk added since the index was read
            vector.update(zip(extra.tolist(), index.similarity(extra, query).tolist(),
                              strict=True))
        return fuse(vector, keyword, alpha, top_k)

    @staticmethod
    async def _nearest(index: VectorIndex, query: np.ndarray,
                       allowed: np.ndarray | None) -> dict[int, float]:
        if index.scans(allowed) >= OFF_LOOP_ROWS:  # (the arrays as they are now: see VectorIndex)
            return await asyncio.to_thread(exact_nearest, index.ids, index.matrix, query,
                                           CANDIDATES, allowed)
        return index.nearest(query, CANDIDATES, allowed)

    async def _keyword(self, dataset_id: str, index: VectorIndex, words: list[str],
                       filter: dict[str, Any], allowed: np.ndarray | None) -> dict[int, float]:
        """BM25 (as a positive number) of the best `CANDIDATES` matches.

        From the in-memory keyword index when it is current and every word is one term (a word
        FTS5 splits in two is a phrase, which only FTS5 can match). Otherwise from FTS5: the
        dataset is applied inside FTS5 as rowid ranges (its chunks' ids, from the vector index:
        one range per run of consecutive ids), so that only the dataset's matches are scored
        and no `chunks` row is read. A dataset whose ids are scattered over more than
        `MAX_RANGES` runs, or a metadata filter, joins `chunks` instead."""
        keywords = self.keyword_index(dataset_id, index)
        if keywords is not None:
            terms = self._tokenizer.terms(words)
            if all(len(t) <= 1 for t in terms):
                return await asyncio.to_thread(
                    keywords.best, [t for found in terms for t in found], CANDIDATES, allowed
                )
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
