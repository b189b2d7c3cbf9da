"""The ORM tables. Only the store uses them; everyone else gets `trestle.store.records`.

A change here needs a new Alembic revision in `migrations/versions/` (the test
`tests/store/test_migrations.py` fails when the two drift apart). Objects the ORM does not
describe (SQLite's FTS5 index `chunks_fts` and its shadow tables, the PostgreSQL search tables)
are named by `is_search_object` and left out of that comparison.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    false,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from trestle.store.records import DEPLOYMENT_STATUSES

# Named constraints, so that migrations can refer to them on every backend.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

ID = String(16)
NAME = String(255)
TIMESTAMP = DateTime(timezone=True)
STATUS_CHECK = "status IN ({})".format(", ".join(f"'{s}'" for s in sorted(DEPLOYMENT_STATUSES)))


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class ModelRow(Base):
    __tablename__ = "models"

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    name: Mapped[str] = mapped_column(NAME, unique=True)
    created_at: Mapped[datetime] = mapped_column(TIMESTAMP)


class DeploymentRow(Base):
    __tablename__ = "deployments"
    __table_args__ = (CheckConstraint(STATUS_CHECK, name="status"),)

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    model_id: Mapped[str] = mapped_column(ID, ForeignKey("models.id"), index=True)
    status: Mapped[str] = mapped_column(String(16), index=True)
    config: Mapped[dict[str, Any]] = mapped_column(JSON)
    source_dir: Mapped[str] = mapped_column(Text)
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(TIMESTAMP)
    updated_at: Mapped[datetime] = mapped_column(TIMESTAMP)


class EnvironmentRow(Base):
    __tablename__ = "environments"

    model_id: Mapped[str] = mapped_column(ID, ForeignKey("models.id"), primary_key=True)
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    deployment_id: Mapped[str] = mapped_column(ID, ForeignKey("deployments.id"), index=True)
    updated_at: Mapped[datetime] = mapped_column(TIMESTAMP)


class EnvironmentHistoryRow(Base):
    """Every deployment an environment was pointed at, oldest first: `rollback` goes back along
    it. No foreign key to `deployments`: deleting a deployment deletes its rows here."""

    __tablename__ = "environment_history"
    __table_args__ = (Index("ix_environment_history_model_id", "model_id", "name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    model_id: Mapped[str] = mapped_column(ID, ForeignKey("models.id"))
    name: Mapped[str] = mapped_column(String(64))
    deployment_id: Mapped[str] = mapped_column(ID)
    created_at: Mapped[datetime] = mapped_column(TIMESTAMP)


class ApiKeyRow(Base):
    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    name: Mapped[str] = mapped_column(NAME)
    prefix: Mapped[str] = mapped_column(String(16), unique=True)
    # "scrypt$n$r$p$salt_hex$hash_hex": the parameters travel with the hash.
    key_hash: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(TIMESTAMP)
    revoked_at: Mapped[datetime | None] = mapped_column(TIMESTAMP)
    # "admin" or "invoke" (trestle.store.keys.SCOPES); keys from before scopes are admin.
    scope: Mapped[str] = mapped_column(String(16), server_default="admin")
    # An invoke key's limits: lists of ids, or NULL for none (see ApiKey.may_call_model).
    models: Mapped[list[str] | None] = mapped_column(JSON)
    endpoints: Mapped[list[str] | None] = mapped_column(JSON)
    # Requests and tokens per minute the key may use (trestle.gateway.access.ratelimit); NULL: no limit.
    rpm: Mapped[int | None] = mapped_column(Integer)
    tpm: Mapped[int | None] = mapped_column(Integer)


class DeploymentArchiveRow(Base):
    """The gzip tar a deployment was pushed as, in parts (PostgreSQL only: every gateway sharing
    the database unpacks the folder from here on its own machine)."""

    __tablename__ = "deployment_archives"

    deployment_id: Mapped[str] = mapped_column(
        ID, ForeignKey("deployments.id", ondelete="CASCADE"), primary_key=True)
    part: Mapped[int] = mapped_column(Integer, primary_key=True)
    data: Mapped[bytes] = mapped_column(LargeBinary)


class SecretRow(Base):
    __tablename__ = "secrets"

    name: Mapped[str] = mapped_column(NAME, primary_key=True)
    value: Mapped[str] = mapped_column(Text)  # a Fernet token (trestle.store.secretbox)
    # False only for rows written before encryption, until `Store.open` encrypts them.
    encrypted: Mapped[bool] = mapped_column(Boolean, server_default=false())
    updated_at: Mapped[datetime] = mapped_column(TIMESTAMP)


class DatasetRow(Base):
    __tablename__ = "datasets"

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    name: Mapped[str] = mapped_column(NAME, unique=True)
    # The embedding model whose vectors the chunks hold, and their dimension.
    embedding_model: Mapped[str] = mapped_column(NAME)
    dimensions: Mapped[int] = mapped_column(Integer)
    # Bumped by every upload and delete: search indexes held in memory compare it to their own.
    version: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(TIMESTAMP)


class DocumentRow(Base):
    __tablename__ = "documents"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)  # a UUID
    dataset_id: Mapped[str] = mapped_column(
        ID, ForeignKey("datasets.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(NAME)
    meta: Mapped[dict[str, Any]] = mapped_column("metadata", JSON)  # incl. `url`
    created_at: Mapped[datetime] = mapped_column(TIMESTAMP)


class ChunkRow(Base):
    __tablename__ = "chunks"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)  # rowId
    dataset_id: Mapped[str] = mapped_column(
        ID, ForeignKey("datasets.id", ondelete="CASCADE"), index=True
    )
    document_id: Mapped[str] = mapped_column(
        String(36), ForeignKey("documents.id", ondelete="CASCADE"), index=True
    )
    position: Mapped[int] = mapped_column(Integer)  # order within the document
    text: Mapped[str] = mapped_column(Text)
    data: Mapped[dict[str, Any]] = mapped_column(JSON)  # `text` and, for CSV rows, the columns
    embedding: Mapped[str] = mapped_column(Text)  # the text that was embedded
    vector: Mapped[bytes] = mapped_column(LargeBinary)  # float32, little-endian
    last_accessed: Mapped[datetime | None] = mapped_column(TIMESTAMP)


SEARCH_OBJECT_PREFIXES = ("chunks_fts", "chunk_vectors", "ix_chunks_tsv", "ix_chunk_vectors")


def is_search_object(name: str | None) -> bool:
    """Whether a table or index belongs to a search implementation rather than to the ORM."""
    return bool(name) and name.startswith(SEARCH_OBJECT_PREFIXES)


class EndpointRow(Base):
    """A prompt endpoint; its definitions are `endpoint_versions`, the newest being `version`."""

    __tablename__ = "endpoints"

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    name: Mapped[str] = mapped_column(NAME, unique=True)
    version: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(TIMESTAMP)
    updated_at: Mapped[datetime] = mapped_column(TIMESTAMP)


class EndpointVersionRow(Base):
    __tablename__ = "endpoint_versions"

    endpoint_id: Mapped[str] = mapped_column(
        ID, ForeignKey("endpoints.id", ondelete="CASCADE"), primary_key=True
    )
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)  # the endpoint file, validated
    created_at: Mapped[datetime] = mapped_column(TIMESTAMP)


class PriceRow(Base):
    __tablename__ = "prices"

    model: Mapped[str] = mapped_column(NAME, primary_key=True)  # as an endpoint names it
    prompt: Mapped[float] = mapped_column(Float)  # per 1M prompt tokens
    completion: Mapped[float] = mapped_column(Float)  # per 1M completion tokens
    updated_at: Mapped[datetime] = mapped_column(TIMESTAMP)


class UsageRow(Base):
    """One call of a prompt endpoint. No foreign keys: records outlive deleted endpoints and keys."""

    __tablename__ = "usage_records"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)  # the choices' usage_id
    created_at: Mapped[datetime] = mapped_column(TIMESTAMP, index=True)
    endpoint_id: Mapped[str] = mapped_column(ID, index=True)
    endpoint_version: Mapped[int] = mapped_column(Integer)
    key_id: Mapped[str | None] = mapped_column(ID)
    user: Mapped[str | None] = mapped_column(NAME)
    model: Mapped[str] = mapped_column(NAME)
    prompt_tokens: Mapped[int] = mapped_column(Integer)
    completion_tokens: Mapped[int] = mapped_column(Integer)
    prompt_cost: Mapped[float] = mapped_column(Float)
    completion_cost: Mapped[float] = mapped_column(Float)
    latency_ms: Mapped[float] = mapped_column(Float)
    status: Mapped[str] = mapped_column(String(16))  # ok | error | client_closed
    error: Mapped[str | None] = mapped_column(Text)
    stream: Mapped[bool] = mapped_column(Boolean)
