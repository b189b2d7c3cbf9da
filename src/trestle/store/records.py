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
    scope: str = "admin"  # "admin" (everything) or "invoke" (the data plane only)
    # An invoke key limited to some models and/or endpoints lists their ids here; None in both
    # means no limit. A key limited in one list and None in the other may call nothing of the other.
    models: tuple[str, ...] | None = None
    endpoints: tuple[str, ...] | None = None
    # Requests and tokens per minute (trestle.gateway.access.ratelimit); None: no limit.
    rpm: int | None = None
    tpm: int | None = None

    @property
    def active(self) -> bool:
        return self.revoked_at is None

    @property
    def limited(self) -> bool:
        return self.models is not None or self.endpoints is not None

    def may_call_model(self, model_id: str) -> bool:
        return not self.limited or model_id in (self.models or ())

    def may_call_endpoint(self, endpoint_id: str) -> bool:
        return not self.limited or endpoint_id in (self.endpoints or ())

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


@dataclass(frozen=True)
class Endpoint:
    """A prompt endpoint at one version; `spec` is its file as validated
    (`trestle.protocol.endpoints.EndpointSpec`)."""

    id: str
    name: str
    version: int
    spec: dict[str, Any] = field(hash=False)
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class Price:
    model: str
    prompt: float  # per 1M prompt tokens
    completion: float  # per 1M completion tokens
    updated_at: datetime


@dataclass(frozen=True)
class UsageRecord:
    id: str
    created_at: datetime
    endpoint_id: str
    endpoint_version: int
    key_id: str | None
    user: str | None
    model: str
    prompt_tokens: int
    completion_tokens: int
    prompt_cost: float
    completion_cost: float
    latency_ms: float
    status: str  # ok | error | client_closed
    error: str | None
    stream: bool
