"""What the store hands out: frozen dataclasses, never ORM rows.

Callers can keep them, pass them between tasks and compare them; they are detached from any
database session. `ApiKey` never carries the secret or its hash.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from trestle.protocol.management import Status

DEPLOYMENT_STATUSES = frozenset(s.value for s in Status)


def check_status(status: str) -> Status:
    """`status` as a `Status`, else ValueError naming the valid ones."""
    if status not in DEPLOYMENT_STATUSES:
        raise ValueError(
            f"unknown deployment status {status!r}; expected one of {sorted(DEPLOYMENT_STATUSES)}"
        )
    return Status(status)


@dataclass(frozen=True)
class Model:
    id: str
    name: str
    created_at: datetime


@dataclass(frozen=True)
class Deployment:
    id: str
    model_id: str
    status: Status
    config: dict[str, Any] = field(hash=False)
    source_dir: str
    error: str | None
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class Environment:
    model_id: str
    name: str
    deployment_id: str
    updated_at: datetime


@dataclass(frozen=True)
class ApiKey:
    id: str
    name: str
    prefix: str
    created_at: datetime
    revoked_at: datetime | None

    @property
    def active(self) -> bool:
        return self.revoked_at is None


@dataclass(frozen=True)
class Dataset:
    id: str
    name: str
    embedding_model: str
    dimensions: int
    version: int
    created_at: datetime


@dataclass(frozen=True)
class Document:
    id: str
    dataset_id: str
    name: str
    metadata: dict[str, Any] = field(hash=False)
    created_at: datetime
    chunks: int = 0  # how many chunks (rows) it has, where the query counted them


@dataclass(frozen=True)
class Chunk:
    """One row of a dataset: `id` is the seed's `rowId`; `data` holds `text` and, for a CSV
    row, its columns; `embedding` is the text that was embedded. No vector: see `load_vectors`."""

    id: int
    dataset_id: str
    document_id: str
    position: int
    text: str
    data: dict[str, Any] = field(hash=False)
    embedding: str
    last_accessed: datetime | None
