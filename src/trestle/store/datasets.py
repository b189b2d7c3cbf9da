"""`DatasetStore`: the repository of datasets, their documents and their chunks (rows).

    datasets = DatasetStore(engine)          # Store.open(...) makes one: `store.datasets`
    ds = await datasets.create_dataset("handbook", embedding_model=SLUG, dimensions=384)
    docs = await datasets.add_documents(ds.id, [NewDocument(name, metadata, chunks)])
    rows = await datasets.list_rows(ds.id)
    await datasets.delete_document(ds.id, docs[0].id)

A dataset holds documents; a document holds chunks, each with its text, its `data` fields, the
text that was embedded and its vector (float32, stored durably here; searching is the job of
`trestle.endpoints.retrieval.search`). `add_documents` writes every document of an upload in one
transaction: either all of them are stored, or none (a failure leaves nothing half-ingested).
Every upload and delete bumps the dataset's `version`, which in-memory search indexes compare with
their own. Deleting a document deletes its chunks (and, through the foreign keys and the SQLite
FTS5 triggers, their keyword and vector index entries).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
from sqlalchemy import bindparam, cast, delete, func, insert, literal, or_, select, update
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from trestle.errors import BadRequest, Conflict, NotFound
from trestle.store.ids import new_id
from trestle.store.records import Chunk, Dataset, Document
from trestle.store.tables import ChunkRow, DatasetRow, DocumentRow

MAX_NAME = 255
MAX_PAGE = 1000

# Called inside the upload's transaction with the new chunks' ids and vectors, so that a search
# implementation that keeps its own tables (PostgreSQL) writes them atomically with the chunks.
IndexWriter = Callable[[AsyncSession, str, list[int], np.ndarray], Awaitable[None]]


@dataclass(frozen=True)
class NewChunk:
    text: str
    data: dict[str, Any]
    embedding: str  # the text that was embedded


@dataclass(frozen=True)
class NewDocument:
    name: str
    metadata: dict[str, Any]
    chunks: list[NewChunk]
    vectors: np.ndarray = field(repr=False)  # (len(chunks), dimensions) float32
    id: str = field(default_factory=lambda: str(uuid.uuid4()))


@dataclass(frozen=True)
class RowUpdate:
    id: int
    chunk: NewChunk
    vector: np.ndarray = field(repr=False)


@dataclass(frozen=True)
class Change:
    """What an upload or a delete did: the dataset's new `version` and the chunks it added (or
    replaced: same id, new vector) or removed (`vectors` only for additions), so that an
    in-memory index can follow."""

    version: int
    chunk_ids: np.ndarray
    vectors: np.ndarray | None = field(default=None, repr=False)


def _now() -> datetime:
    return datetime.now(UTC)


def _utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _dataset(row: DatasetRow) -> Dataset:
    return Dataset(
        id=row.id,
        name=row.name,
        embedding_model=row.embedding_model,
        dimensions=row.dimensions,
        version=row.version,
        created_at=_utc(row.created_at),
    )


def _document(row: DocumentRow, chunks: int = 0) -> Document:
    return Document(
        id=row.id,
        dataset_id=row.dataset_id,
        name=row.name,
        metadata=row.meta,
        created_at=_utc(row.created_at),
        chunks=chunks,
    )


def _chunk(row: ChunkRow) -> Chunk:
    return Chunk(
        id=row.id,
        dataset_id=row.dataset_id,
        document_id=row.document_id,
        position=row.position,
        text=row.text,
        data=row.data,
        embedding=row.embedding,
        last_accessed=_utc(row.last_accessed),
    )


def vector_bytes(vector: np.ndarray) -> bytes:
    """The stored form of one vector: float32, little-endian."""
    return np.asarray(vector, dtype="<f4").tobytes()


class DatasetStore:
    def __init__(self, engine: AsyncEngine):
        self.engine = engine
        self.dialect = engine.dialect.name
        self._sessions = async_sessionmaker(engine, expire_on_commit=False)

    # datasets

    async def create_dataset(self, name: str, *, embedding_model: str, dimensions: int) -> Dataset:
        if not isinstance(name, str) or not name.strip() or len(name) > MAX_NAME:
            raise BadRequest(f"name must be a non-empty string of at most {MAX_NAME} characters",
                             param="name")
        row = DatasetRow(
            id=new_id("s"), name=name, embedding_model=embedding_model, dimensions=dimensions,
            version=0, created_at=_now(),
        )
        try:
            async with self._sessions.begin() as session:
                session.add(row)
        except IntegrityError:
            raise Conflict(f"a dataset named {name!r} already exists", param="name") from None
        return _dataset(row)

    async def get_dataset(self, ref: str) -> Dataset | None:
        """The dataset whose id, else whose name, is `ref`."""
        async with self._sessions() as session:
            row = await session.get(DatasetRow, ref)
            if row is None:
                row = await session.scalar(select(DatasetRow).where(DatasetRow.name == ref))
            return _dataset(row) if row else None

    async def require_dataset(self, ref: str) -> Dataset:
        dataset = await self.get_dataset(ref)
        if dataset is None:
            raise NotFound(f"no dataset {ref!r}", param="dataset")
        return dataset

    async def list_datasets(self) -> list[Dataset]:
        async with self._sessions() as session:
            query = select(DatasetRow).order_by(DatasetRow.created_at, DatasetRow.id)
            return [_dataset(r) for r in await session.scalars(query)]

    async def delete_dataset(self, dataset_id: str) -> Dataset:
        async with self._sessions.begin() as session:
            row = await session.get(DatasetRow, dataset_id)
            if row is None:
                raise NotFound(f"no dataset {dataset_id!r}", param="dataset")
            await session.execute(delete(ChunkRow).where(ChunkRow.dataset_id == dataset_id))
            await session.execute(delete(DocumentRow).where(DocumentRow.dataset_id == dataset_id))
            await session.delete(row)
        return _dataset(row)

    async def version(self, dataset_id: str) -> int | None:
        async with self.engine.connect() as conn:
            return await conn.scalar(
                select(DatasetRow.__table__.c.version).where(DatasetRow.__table__.c.id == dataset_id)
            )

    # documents

    async def add_documents(
        self, dataset_id: str, documents: list[NewDocument], *, index: IndexWriter | None = None
    ) -> tuple[list[Document], Change]:
        """Store the documents of one upload, all or nothing; returns them (with chunk counts)
        and the change made."""
        added, change, _ = await self.upsert_rows(dataset_id, documents, [], index=index)
        return added, change

    async def upsert_rows(
        self, dataset_id: str, documents: list[NewDocument], updates: list[RowUpdate], *,
        index: IndexWriter | None = None,
    ) -> tuple[list[Document], Change, list[int]]:
        """Replace rows (same id, document and position; new text, data and vector) and add new
        documents, all or nothing. Returns the documents added, the change made, and the ids of
        the new documents' chunks in order. NotFound names a row id not in the dataset."""
        now = _now()
        added: list[Document] = []
        all_ids: list[int] = []
        all_vectors: list[np.ndarray] = []
        async with self._sessions.begin() as session:
            dataset = await session.get(DatasetRow, dataset_id, with_for_update=True)
            if dataset is None:
                raise NotFound(f"no dataset {dataset_id!r}", param="dataset")
            if updates:
                ids, vectors = await self._replace(session, dataset, updates)
                if index is not None:
                    await index(session, dataset_id, ids, vectors)
                all_ids.extend(ids)
                all_vectors.append(vectors)
            new_ids: list[int] = []
            for doc in documents:
                vectors = np.asarray(doc.vectors, dtype=np.float32)
                if vectors.shape != (len(doc.chunks), dataset.dimensions):
                    raise ValueError(
                        f"{doc.name}: {vectors.shape} vectors for {len(doc.chunks)} chunks of "
                        f"dimension {dataset.dimensions}"
                    )
                row = DocumentRow(
                    id=doc.id, dataset_id=dataset_id, name=doc.name[:MAX_NAME],
                    meta=doc.metadata, created_at=now,
                )
                session.add(row)
                await session.flush()
                ids = []
                if doc.chunks:
                    result = await session.execute(
                        insert(ChunkRow).returning(ChunkRow.id, sort_by_parameter_order=True),
                        [
                            {
                                "dataset_id": dataset_id, "document_id": row.id, "position": i,
                                "text": c.text, "data": c.data, "embedding": c.embedding,
                                "vector": vector_bytes(v), "last_accessed": None,
                            }
                            for i, (c, v) in enumerate(zip(doc.chunks, vectors, strict=True))
                        ],
                    )
                    ids = list(result.scalars())
                    if index is not None:
                        await index(session, dataset_id, ids, vectors)
                    all_ids.extend(ids)
                    new_ids.extend(ids)
                    all_vectors.append(vectors)
                added.append(_document(row, len(ids)))
            dataset.version += 1
            version = dataset.version
        vectors = (np.concatenate(all_vectors) if all_vectors
                   else np.zeros((0, dataset.dimensions), np.float32))
        return added, Change(version, np.asarray(all_ids, dtype=np.int64), vectors), new_ids

    @staticmethod
    async def _replace(session: AsyncSession, dataset: DatasetRow,
                       updates: list[RowUpdate]) -> tuple[list[int], np.ndarray]:
        """Delete the rows and insert them again with the same id, document and position (so
        that keyword and vector index entries follow through their triggers and foreign keys)."""
        ids = [u.id for u in updates]
        if len(set(ids)) != len(ids):
            raise BadRequest("a row id appears twice in one upsert", param="rows")
        old = {r.id: r for r in await session.scalars(
            select(ChunkRow).where(ChunkRow.id.in_(ids), ChunkRow.dataset_id == dataset.id)
        )}
        missing = [i for i in ids if i not in old]
        if missing:
            raise NotFound(f"no row {missing[0]} in this dataset", param="rows")
        vectors = np.asarray([u.vector for u in updates], dtype=np.float32)
        if vectors.shape != (len(updates), dataset.dimensions):
            raise ValueError(f"{vectors.shape} vectors for {len(updates)} rows")
        placed = [(old[u.id].document_id, old[u.id].position) for u in updates]
        await session.execute(delete(ChunkRow).where(ChunkRow.id.in_(ids)))
        await session.execute(insert(ChunkRow), [
            {
                "id": u.id, "dataset_id": dataset.id, "document_id": doc_id, "position": position,
                "text": u.chunk.text, "data": u.chunk.data, "embedding": u.chunk.embedding,
                "vector": vector_bytes(v), "last_accessed": None,
            }
            for u, v, (doc_id, position) in zip(updates, vectors, placed, strict=True)
        ])
        return ids, vectors

    async def list_documents(self, dataset_id: str) -> list[Document]:
        counts = (
            select(ChunkRow.document_id, func.count().label("n"))
            .where(ChunkRow.dataset_id == dataset_id)
            .group_by(ChunkRow.document_id)
            .subquery()
        )
        query = (
            select(DocumentRow, func.coalesce(counts.c.n, 0))
            .outerjoin(counts, counts.c.document_id == DocumentRow.id)
            .where(DocumentRow.dataset_id == dataset_id)
            .order_by(DocumentRow.created_at, DocumentRow.name, DocumentRow.id)
        )
        async with self._sessions() as session:
            return [_document(row, n) for row, n in await session.execute(query)]

    async def get_document(self, dataset_id: str, document_id: str) -> Document | None:
        async with self._sessions() as session:
            row = await session.get(DocumentRow, document_id)
            if row is None or row.dataset_id != dataset_id:
                return None
            n = await session.scalar(
                select(func.count()).where(ChunkRow.document_id == document_id)
            )
            return _document(row, int(n))

    async def delete_document(self, dataset_id: str, document_id: str) -> tuple[Document, Change]:
        """Delete a document with its chunks (and their index entries); NotFound if absent."""
        async with self._sessions.begin() as session:
            dataset = await session.get(DatasetRow, dataset_id, with_for_update=True)
            row = await session.get(DocumentRow, document_id)
            if dataset is None or row is None or row.dataset_id != dataset_id:
                raise NotFound(f"no document {document_id!r} in this dataset", param="document_id")
            ids = list(await session.scalars(
                select(ChunkRow.id).where(ChunkRow.document_id == document_id)
            ))
            await session.execute(delete(ChunkRow).where(ChunkRow.document_id == document_id))
            await session.delete(row)
            dataset.version += 1
            version = dataset.version
        return _document(row, len(ids)), Change(version, np.asarray(ids, dtype=np.int64))

    # chunks (rows)

    async def list_rows(
        self, dataset_id: str, *, limit: int = 100, after: int = 0, document_id: str | None = None
    ) -> list[Chunk]:
        """Chunks in id order, `limit` (≤ 1000) of them with ids above `after` (keyset paging)."""
        if not 1 <= limit <= MAX_PAGE:
            raise BadRequest(f"limit must be between 1 and {MAX_PAGE}", param="limit")
        query = (
            select(ChunkRow)
            .where(ChunkRow.dataset_id == dataset_id, ChunkRow.id > after)
            .order_by(ChunkRow.id)
            .limit(limit)
        )
        if document_id is not None:
            query = query.where(ChunkRow.document_id == document_id)
        async with self._sessions() as session:
            return [_chunk(r) for r in await session.scalars(query)]

    async def count_rows(self, dataset_id: str) -> int:
        async with self._sessions() as session:
            n = await session.scalar(
                select(func.count()).select_from(ChunkRow).where(ChunkRow.dataset_id == dataset_id)
            )
            return int(n)

    async def get_rows(self, ids: Iterable[int],
                       dataset_id: str | None = None) -> dict[int, tuple[Chunk, Document]]:
        """The chunks with these ids (of this dataset, if given) and their documents, by id
        (missing ids are left out). One query, without the vectors."""
        ids = list(ids)
        if not ids:
            return {}
        c, d = ChunkRow.__table__.c, DocumentRow.__table__.c
        query = (
            select(c.id, c.dataset_id, c.document_id, c.position, c.text, c.data, c.embedding,
                   c.last_accessed, d.name, d["metadata"], d.created_at)
            .join_from(ChunkRow.__table__, DocumentRow.__table__, d.id == c.document_id)
            .where(c.id.in_(ids))
        )
        if dataset_id is not None:
            query = query.where(c.dataset_id == dataset_id)
        async with self.engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return {
            r[0]: (
                Chunk(id=r[0], dataset_id=r[1], document_id=r[2], position=r[3], text=r[4],
                      data=r[5], embedding=r[6], last_accessed=_utc(r[7])),
                Document(id=r[2], dataset_id=r[1], name=r[8], metadata=r[9],
                         created_at=_utc(r[10]), chunks=0),
            )
            for r in rows
        }

    async def set_last_accessed(self, times: dict[int, datetime]) -> None:
        """Set `last_accessed` of these chunks (search results), in one transaction; ids of
        chunks deleted meanwhile are ignored."""
        if not times:
            return
        statement = (
            update(ChunkRow.__table__)
            .where(ChunkRow.__table__.c.id == bindparam("chunk_id"))
            .values(last_accessed=bindparam("when"))
        )
        async with self.engine.begin() as conn:
            await conn.execute(statement, [{"chunk_id": i, "when": w} for i, w in times.items()])

    async def load_vectors(self, dataset_id: str) -> tuple[int, np.ndarray, np.ndarray]:
        """`(version, ids, vectors)`: every chunk vector of the dataset as one float32 matrix,
        read in one snapshot (the version matches the vectors)."""
        async with self._sessions.begin() as session:
            version = await session.scalar(
                select(DatasetRow.version).where(DatasetRow.id == dataset_id)
            )
            if version is None:
                raise NotFound(f"no dataset {dataset_id!r}", param="dataset")
            dims = await session.scalar(
                select(DatasetRow.dimensions).where(DatasetRow.id == dataset_id)
            )
            result = await session.execute(
                select(ChunkRow.id, ChunkRow.vector)
                .where(ChunkRow.dataset_id == dataset_id)
                .order_by(ChunkRow.id)
            )
            rows = result.all()
        ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
        matrix = np.frombuffer(b"".join(r[1] for r in rows), dtype="<f4").reshape(len(rows), dims)
        return version, ids, matrix.astype(np.float32, copy=False)

    async def filter_rows(self, dataset_id: str, where: dict[str, Any]) -> np.ndarray:
        """Ids of the dataset's chunks that `where` matches (see `filter_clauses`)."""
        query = (
            select(ChunkRow.id)
            .join(DocumentRow, DocumentRow.id == ChunkRow.document_id)
            .where(ChunkRow.dataset_id == dataset_id, *self.filter_clauses(where))
        )
        async with self._sessions() as session:
            return np.fromiter(await session.scalars(query), dtype=np.int64)

    def filter_clauses(self, where: dict[str, Any]) -> list:
        """SQL conditions on `chunks` joined with `documents`: for every key of `where`, the
        document's `metadata` or the chunk's `data` has that value (or one of the values, for a
        list). Keys are checked by the caller (no quotes)."""
        clauses = []
        for key, wanted in where.items():
            values = wanted if isinstance(wanted, list) else [wanted]
            clauses.append(
                or_(*(self._json_equals(DocumentRow.meta, key, v) for v in values),
                    *(self._json_equals(ChunkRow.data, key, v) for v in values))
            )
        return clauses

    def _json_equals(self, column, key: str, value: Any):
        if self.dialect == "postgresql":
            return cast(column, JSONB)[key] == cast(literal(json.dumps(value)), JSONB)
        path = f'$."{key}"'  # keys are checked by the caller: FILTER_KEY, no quotes
        if isinstance(value, bool):
            value = int(value)
        return func.json_extract(column, path) == value
