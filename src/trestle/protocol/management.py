"""Wire types of the management API (`/api/v1`), shared by the gateway and the CLI."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class Status(StrEnum):
    """Where a deployment is: the store records it, the manager moves it, the CLI shows it.

    building -> deploying -> active, or failed (with the reason). `building` only when its
    config.yaml lists requirements. Nothing retires a deployment yet: an old one stays active.
    """

    BUILDING = "building"
    DEPLOYING = "deploying"
    ACTIVE = "active"
    FAILED = "failed"

    @property
    def settled(self) -> bool:
        """Will not change on its own (the CLI stops waiting)."""
        return self in (Status.ACTIVE, Status.FAILED)


class ModelOut(BaseModel):
    id: str
    name: str
    created_at: datetime
    environments: dict[str, str] = Field(default_factory=dict)  # env name -> deployment id


class DeploymentOut(BaseModel):
    id: str
    model_id: str
    status: Status
    error: str | None = None
    created_at: datetime
    updated_at: datetime
    config: dict[str, Any] = Field(default_factory=dict)
    environments: list[str] = Field(default_factory=list)


class PushResponse(BaseModel):
    model: ModelOut
    deployment: DeploymentOut
    environments: list[str]  # environments that point at the deployment once it is active
    urls: dict[str, str]
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
    deployment_id: str


class KeyCreate(Request):
    name: str = Field(min_length=1, max_length=100)


class KeyOut(BaseModel):
    id: str
    name: str
    prefix: str
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
