"""The ORM tables. Only the store uses them; everyone else gets `trestle.store.records`.

A change here needs a new Alembic revision in `migrations/versions/` (the test
`tests/store/test_migrations.py` fails when the two drift apart).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, CheckConstraint, DateTime, ForeignKey, MetaData, String, Text
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


class SecretRow(Base):
    __tablename__ = "secrets"

    name: Mapped[str] = mapped_column(NAME, primary_key=True)
    value: Mapped[str] = mapped_column(Text)  # not encrypted at rest (see docs/store.md)
    updated_at: Mapped[datetime] = mapped_column(TIMESTAMP)
