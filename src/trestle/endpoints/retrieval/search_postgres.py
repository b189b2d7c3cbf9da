"""`PostgresSearch`: hybrid search on the PostgreSQL store (see
`trestle.endpoints.retrieval.search`).

Vectors: pgvector. `prepare()` creates the extension (it must be installed on the server:
scripts/install-pgvector builds it on Debian 12), a table `chunk_vectors (chunk_id, dataset_id,
embedding vector(384))` whose rows go away with their chunk (foreign key, ON DELETE CASCADE), an
HNSW index (cosine), and copies in the vectors of chunks stored before it existed. Uploads write
their rows in the upload's transaction (`writer`). Searches use `hnsw.ef_search = EF_SEARCH` and
pgvector's iterative index scan, so that dataset and metadata filters still find `top_k` rows.

Keywords: PostgreSQL full text search, `ts_rank_cd` of `to_tsvector('english', text)` (a GIN
expression index) against the query's words OR-ed (`websearch_to_tsquery`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import sqlalchemy as sa
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.types import UserDefinedType

from trestle.endpoints.retrieval.search import CANDIDATES, Hit, fuse, query_words
from trestle.errors import Unavailable
from trestle.store.datasets import Change, DatasetStore
from trestle.store.records import Dataset
from trestle.store.tables import ChunkRow, DocumentRow

DIMENSIONS = 384
EF_SEARCH = 100
PREPARE_LOCK = 0x7472657374_7663  # advisory lock: one process creates the tables
TS_CONFIG = "english"

_DDL = [
    f"""CREATE TABLE IF NOT EXISTS chunk_vectors (
          chunk_id integer PRIMARY KEY REFERENCES chunks(id) ON DELETE CASCADE,
          dataset_id varchar(16) NOT NULL,
          embedding vector({DIMENSIONS}) NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS ix_chunk_vectors_dataset_id ON chunk_vectors (dataset_id)",
    """CREATE INDEX IF NOT EXISTS ix_chunk_vectors_hnsw ON chunk_vectors
          USING hnsw (embedding vector_cosine_ops) WITH (m = 16, ef_construction = 64)""",
    f"CREATE INDEX IF NOT EXISTS ix_chunks_tsv ON chunks USING gin (to_tsvector('{TS_CONFIG}', text))",
]
_VECTORS = sa.table(
    "chunk_vectors", sa.column("chunk_id"), sa.column("dataset_id"), sa.column("embedding")
)
_TSV = sa.literal_column(f"to_tsvector('{TS_CONFIG}', chunks.text)")


def vector_literal(vector: np.ndarray) -> str:
    """pgvector's text form, `[0.1,0.2,...]` (sent as text and cast: no client codec needed)."""
    return "[" + ",".join(repr(float(x)) for x in np.asarray(vector, dtype=np.float32)) + "]"


class _Vector(UserDefinedType):
    """pgvector's `vector`, only to write CASTs (values travel as text: no client codec)."""

    cache_ok = True

    def get_col_spec(self, **kw) -> str:
        return "vector"


_QUERY = sa.cast(sa.bindparam("q", type_=sa.Text), _Vector())
_DISTANCE = _VECTORS.c.embedding.op("<=>")(_QUERY)  # cosine distance, 0..2


class PostgresSearch:
    def __init__(self, datasets: DatasetStore):
        self.datasets = datasets
        self.writer = self._write

    async def close(self) -> None:
        return None

    async def prepare(self) -> None:
        async with self.datasets.engine.begin() as conn:
            await conn.execute(sa.text(f"SELECT pg_advisory_xact_lock({PREPARE_LOCK})"))
            available = await conn.scalar(sa.text(
                "SELECT count(*) FROM pg_available_extensions WHERE name = 'vector'"
            ))
            if not available:
                raise Unavailable(
                    "the PostgreSQL server has no pgvector extension; install it "
                    "(scripts/install-pgvector on Debian) to use datastores",
                    code="pgvector_missing",
                )
            await conn.execute(sa.text("CREATE EXTENSION IF NOT EXISTS vector"))
            for statement in _DDL:
                await conn.execute(sa.text(statement))
            missing = await conn.execute(sa.text(
                "SELECT c.id, c.dataset_id, c.vector FROM chunks c "
                "LEFT JOIN chunk_vectors v ON v.chunk_id = c.id WHERE v.chunk_id IS NULL"
            ))
            rows = [
                {"chunk_id": i, "dataset_id": d,
                 "embedding": vector_literal(np.frombuffer(v, dtype="<f4"))}
                for i, d, v in missing
            ]
            if rows:
                await conn.execute(self._insert_statement(), rows)

    @staticmethod
    def _insert_statement():
        return sa.text(
            "INSERT INTO chunk_vectors (chunk_id, dataset_id, embedding) "
            "VALUES (:chunk_id, :dataset_id, CAST(CAST(:embedding AS text) AS vector))"
        )

    async def _write(self, session: AsyncSession, dataset_id: str, ids: list[int],
                     vectors: np.ndarray) -> None:
        await session.execute(self._insert_statement(), [
            {"chunk_id": i, "dataset_id": dataset_id, "embedding": vector_literal(v)}
            for i, v in zip(ids, vectors, strict=True)
        ])

    def apply(self, dataset_id: str, change: Change) -> None:
        return None  # the tables are the index

    async def search(
        self, dataset: Dataset, query_vector: np.ndarray, query_text: str, *, top_k: int,
        alpha: float, filter: dict[str, Any] | None,
    ) -> list[Hit]:
        q = vector_literal(query_vector)
        filters = self.datasets.filter_clauses(filter or {})
        similarity = 1 - _DISTANCE
        nearest = (
            select(_VECTORS.c.chunk_id, similarity)
            .select_from(
                _VECTORS.join(ChunkRow, ChunkRow.id == _VECTORS.c.chunk_id)
                .join(DocumentRow, DocumentRow.id == ChunkRow.document_id)
            )
            .where(_VECTORS.c.dataset_id == dataset.id, *filters)
            .order_by(_DISTANCE)
            .limit(CANDIDATES)
        )
        words = query_words(query_text)
        async with self.datasets.engine.begin() as conn:
            await conn.execute(sa.text(f"SET LOCAL hnsw.ef_search = {EF_SEARCH}"))
            await conn.execute(sa.text("SET LOCAL hnsw.iterative_scan = relaxed_order"))
            vector = {i: float(s) for i, s in await conn.execute(nearest, {"q": q})}
            keyword: dict[int, float] = {}
            if words and alpha < 1:
                tsquery = sa.func.websearch_to_tsquery(TS_CONFIG, " or ".join(words))
                rank = sa.func.ts_rank_cd(_TSV, tsquery)
                best = (
                    select(ChunkRow.id, rank)
                    .join(DocumentRow, DocumentRow.id == ChunkRow.document_id)
                    .where(ChunkRow.dataset_id == dataset.id, _TSV.op("@@")(tsquery), *filters)
                    .order_by(rank.desc(), ChunkRow.id)
                    .limit(CANDIDATES)
                )
                keyword = {i: float(s) for i, s in await conn.execute(best)}
                extra = [i for i in keyword if i not in vector]
                if extra:
                    cosine = select(_VECTORS.c.chunk_id, similarity).where(
                        _VECTORS.c.chunk_id.in_(extra)
                    )
                    vector.update({i: float(s) for i, s in await conn.execute(cosine, {"q": q})})
        keyword = {i: s for i, s in keyword.items() if s > 0}
        return fuse(vector, keyword, alpha, top_k)
