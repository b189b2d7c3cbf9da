"""Wire types of the management API (`/api/v1`), shared by the gateway and the CLI."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class Status(StrEnum):
    """Where a deployment is: the store records it, the manager moves it, the CLI shows it.

    building -> deploying -> active, or failed (with the reason). `building` only when its
    config.yaml lists requirements; failed too when a running deployment's replicas keep crashing.
    `inactive`: deactivated by a user (its replicas stopped, its record and folder kept);
    `activate` brings it back through deploying.
A deployment no environment points at any more stays active at its `scaling.min_replicas`.
    """

    BUILDING = "building"
    DEPLOYING = "deploying"
    ACTIVE = "active"
    FAILED = "failed"
    INACTIVE = "inactive"

    @property
    def settled(self) -> bool:
        """Will not change on its own (the CLI stops waiting)."""
        return self in (Status.ACTIVE, Status.FAILED, Status.INACTIVE)


class ModelOut(BaseModel):
    id: str
    name: str
    created_at: datetime
    environments: dict[str, str] = Field(default_factory=dict)  # env name -> deployment id


class ReplicaOut(BaseModel):
    """One replica of a running deployment (`trestle.deploy.replicas`)."""

    index: int  # numbers are not reused: a scaled-up replica gets a new one
    # starting | ready (in the rotation) | backoff (crashed, restarting soon) | draining | stopped
    state: str
    in_flight: int | None = None  # requests it is answering now
    pid: int | None = None
    restarts: int = 0  # times it ended and was restarted
    last_exit: str | None = None  # how it last ended (e.g. "exit code -9")
    node: str | None = None  # the id of the Ray node it runs on (`--backend ray`)


class DeploymentOut(BaseModel):
    id: str
    model_id: str
    status: Status
    error: str | None = None
    created_at: datetime
    updated_at: datetime
    config: dict[str, Any] = Field(default_factory=dict)
    environments: list[str] = Field(default_factory=list)
    # GET /deployments/{id} only: its replicas now (None when it has none running, e.g. failed)
    replicas: list[ReplicaOut] | None = None


class ScaleRequest(BaseModel):
    """`POST /deployments/{id}/scale`: new `scaling` bounds; fields left out keep their value.
    The result is checked as `config.yaml`'s `scaling` is."""

    model_config = ConfigDict(extra="forbid")

    min_replicas: int | None = None
    max_replicas: int | None = None
    target_concurrency: int | None = None
    scale_down_delay: float | None = None
    cold_start_timeout: float | None = None
    drain_timeout: float | None = None


class PushResponse(BaseModel):
    model: ModelOut
    deployment: DeploymentOut
    environments: list[str]  # environments that point at the deployment once it is active
    slug: str | None = None  # an engine's Model API slug: send it as `model` to /v1/...
    notes: list[str] = Field(default_factory=list)  # e.g. production repaired by this push
    urls: dict[str, str]  # name -> URL that reaches this deployment once it is active
    # config.yaml keys that Truss defines and trestle does not use: accepted, with no effect
    ignored_keys: list[str] = Field(default_factory=list)


class ModelOutList(BaseModel):
    models: list[ModelOut]


class DeploymentList(BaseModel):
    deployments: list[DeploymentOut]


class Request(BaseModel):
    """A request body: an unknown key is an error, never silently ignored."""

    model_config = ConfigDict(extra="forbid")


class PromoteRequest(Request):
    deployment_id: str


class EnvironmentOut(BaseModel):
    model_id: str
    name: str
    deployment_id: str  # what it points at
    # what answers its requests now: differs from deployment_id while a promotion deploys
    serving: str | None = None
    history: list[str] = Field(default_factory=list)  # every deployment it pointed at, oldest first


class EnvironmentList(BaseModel):
    environments: list[EnvironmentOut]


class EnvironmentCreate(Request):
    name: str = Field(min_length=1, max_length=64)
    deployment_id: str | None = None  # default: the deployment production points at


class DeploymentPromote(Request):
    environment: str = Field(default="production", min_length=1, max_length=64)


Scope = Literal["admin", "invoke"]


class KeyCreate(Request):
    """A new key. `admin`: everything; `invoke` (the default): the data plane only (`/model/...`,
    `/v1/...`, `/api/endpoints/...`), limited to the listed model and endpoint ids when either
    list is given."""

    name: str = Field(min_length=1, max_length=100)
    scope: Scope = "invoke"
    models: list[str] | None = Field(default=None, max_length=100)
    endpoints: list[str] | None = Field(default=None, max_length=100)
    # Requests / tokens per minute (docs/rate-limits.md); None or 0: no limit.
    rpm: int | None = Field(default=None, ge=0, le=1_000_000_000)
    tpm: int | None = Field(default=None, ge=0, le=1_000_000_000)


class KeyUpdate(Request):
    """New rate limits for a key: a field left out stays as it is; 0 removes the limit."""

    rpm: int | None = Field(default=None, ge=0, le=1_000_000_000)
    tpm: int | None = Field(default=None, ge=0, le=1_000_000_000)


class KeyOut(BaseModel):
    id: str
    name: str
    prefix: str
    scope: Scope
    models: list[str] | None = None  # None in both lists: no limit
    endpoints: list[str] | None = None
    rpm: int | None = None  # requests per minute; None: no limit
    tpm: int | None = None  # tokens per minute; None: no limit
    created_at: datetime
    revoked_at: datetime | None = None


class KeyCreated(KeyOut):
    key: str  # the plaintext, shown once


class KeyList(BaseModel):
    keys: list[KeyOut]


class SecretSet(Request):
    value: str = Field(repr=False)


class SecretList(BaseModel):
    secrets: list[str]
