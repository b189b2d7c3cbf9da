"""Hybrid search over a dataset: one small interface, two implementations.

    index = search_index(store.datasets)          # SqliteSearch or PostgresSearch, by the store's URL
    await index.prepare()
    hits = await index.search(dataset, query_vector, query_text, top_k=5, alpha=0.5, filter=None)
    # [Hit(chunk_id=17, confidence=0.83, vector_score=0.71, keyword_score=1.0), ...]

`SearchIndex` is the interface: `prepare()` once and `close()` at the end, `writer` (called by
`DatasetStore.add_documents` inside an upload's transaction, for implementations with their own
tables), `apply(dataset_id, change)` after an upload or delete commits, and `search(...)`.
Implementations:

- `trestle.endpoints.retrieval.search_sqlite.SqliteSearch`: keyword scores from SQLite FTS5's
  `bm25()` (from 20,000 chunks, the same formula over FTS5's index read into memory:
  `trestle.endpoints.retrieval.keyword_index`); vectors from an in-memory index per dataset
  (`trestle.endpoints.retrieval.vector_index`: exact below 20,000 chunks, an inverted file from
  faiss above), loaded from the vectors stored durably in SQLite and kept up to date on upload and
  delete (reloaded when another process changed the dataset: the dataset's `version` says so).
- `trestle.endpoints.retrieval.search_postgres.PostgresSearch`: pgvector's HNSW index (cosine) and
  PostgreSQL full text search (`ts_rank_cd`).

How scores are fused (the same for both): the candidates are the `CANDIDATES` best chunks by
vector similarity and the `CANDIDATES` best by keyword score; each candidate gets both scores
(a chunk outside the keyword list counts 0 for keywords: its keyword score is at most the
100th best's, and computing it exactly would cost a keyword query per chunk):

    vector_score  = max(0, cosine(query_vector, chunk_vector))                  in [0, 1]
    keyword_score = keyword(chunk) / max(keyword(c) for c in candidates)        in [0, 1]
                    (BM25 on SQLite, ts_rank_cd on PostgreSQL, over the query's words
                    without English stopwords; 0 if no query word matches)
    confidence    = alpha * vector_score + (1 - alpha) * keyword_score

`alpha` = 1 is pure vector search, 0 pure keyword search. The keyword score is normalised by
the best match of this query because BM25 scores have no fixed scale; the best keyword match
of a query therefore scores 1. Results are the `top_k` candidates by confidence (ties: lower
chunk id first), only chunks with confidence > 0.

`filter` keeps chunks whose document `metadata` or own `data` (e.g. a CSV row's columns) has,
for every key, the value given or one of the values of a list: `{"category": "hr"}`,
`{"year": [2023, 2024]}`. Keys are 1-64 letters, digits, `_`, `.`, `-`; values are strings,
numbers or booleans (compared by JSON type: "2024" is not 2024).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from trestle.errors import BadRequest
from trestle.store.datasets import Change, DatasetStore, IndexWriter
from trestle.store.records import Dataset

CANDIDATES = 100
MAX_TOP_K = 50
MAX_FILTER_KEYS = 16
MAX_FILTER_VALUES = 100
MAX_QUERY_WORDS = 64
FILTER_KEY = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]{0,63}")
_WORD = re.compile(r"\w+")
# Left out of keyword queries: they match nearly every chunk, and since keyword scores are
# normalised per query, a chunk matching only these would otherwise score 1.
STOPWORDS = frozenset("""
a about above after again all also am an and any are as at be because been before being below
between both but by can could did do does doing down during each few for from further had has
have having he her here hers him his how i if in into is it its itself just me more most my no
nor not of off on once only or other our ours out over own same she should so some such than
that the their theirs them then there these they this those through to too under until up very
was we were what when where which while who whom why will with would you your yours
""".split())


@dataclass(frozen=True)
class Hit:
    chunk_id: int
    confidence: float
    vector_score: float
    keyword_score: float


class SearchIndex(Protocol):
    writer: IndexWriter | None

    async def prepare(self) -> None: ...

    async def close(self) -> None: ...

    def apply(self, dataset_id: str, change: Change) -> None: ...

    async def search(
        self, dataset: Dataset, query_vector: np.ndarray, query_text: str, *, top_k: int,
        alpha: float, filter: dict[str, Any] | None,
    ) -> list[Hit]: ...


def search_index(datasets: DatasetStore) -> SearchIndex:
    """The implementation for the store's database."""
    if datasets.dialect == "postgresql":
        from trestle.endpoints.retrieval.search_postgres import PostgresSearch

        return PostgresSearch(datasets)
    from trestle.endpoints.retrieval.search_sqlite import SqliteSearch

    return SqliteSearch(datasets)


def check_query(top_k: Any, alpha: Any, filter: Any) -> dict[str, Any]:
    """Validate the search options (BadRequest naming the field); returns the filter, `{}` if none."""
    if isinstance(top_k, bool) or not isinstance(top_k, int) or not 1 <= top_k <= MAX_TOP_K:
        raise BadRequest(f"top_k must be an integer from 1 to {MAX_TOP_K}", param="top_k")
    if isinstance(alpha, bool) or not isinstance(alpha, int | float) or not 0 <= alpha <= 1:
        raise BadRequest("alpha must be a number from 0 to 1", param="alpha")
    if filter is None:
        return {}
    if not isinstance(filter, dict) or len(filter) > MAX_FILTER_KEYS:
        raise BadRequest(f"filter must be an object of at most {MAX_FILTER_KEYS} keys",
                         param="filter")
    for key, value in filter.items():
        if not isinstance(key, str) or not FILTER_KEY.fullmatch(key):
            raise BadRequest(
                f"filter key {key!r} must be 1-64 letters, digits, '_', '.' or '-'", param="filter"
            )
        values = value if isinstance(value, list) else [value]
        if not values or len(values) > MAX_FILTER_VALUES or not all(
            isinstance(v, str | int | float | bool) for v in values
        ):
            raise BadRequest(
                f"filter.{key} must be a string, number or boolean, or a list of 1 to "
                f"{MAX_FILTER_VALUES} of them",
                param=f"filter.{key}",
            )
    return filter


def query_words(text: str) -> list[str]:
    """The words of a query for keyword search (letters and digits), lowercased, deduplicated,
    without English stopwords (`STOPWORDS`)."""
    seen: dict[str, None] = {}
    for word in _WORD.findall(text.lower()):
        if word not in STOPWORDS:
            seen.setdefault(word, None)
    return list(seen)[:MAX_QUERY_WORDS]


def fuse(vector: dict[int, float], keyword: dict[int, float], alpha: float,
         top_k: int) -> list[Hit]:
    """Combine per-candidate cosine similarities and raw keyword scores (see the module doc)."""
    best = max(keyword.values(), default=0.0)
    hits = []
    for chunk_id in vector.keys() | keyword.keys():
        v = max(0.0, min(1.0, vector.get(chunk_id, 0.0)))
        k = keyword.get(chunk_id, 0.0) / best if best > 0 else 0.0
        confidence = alpha * v + (1 - alpha) * k
        if confidence > 0:
            hits.append(Hit(chunk_id, float(confidence), float(v), float(k)))
    hits.sort(key=lambda h: (-h.confidence, h.chunk_id))
    return hits[:top_k]
