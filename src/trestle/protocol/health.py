"""The worker health contract: what `GET /health` on a worker answers, and the 503 before ready.

    200 {"status": "ready", ...}     the model serves requests (a worker may add counters; the
                                     model runtime adds "methods": the endpoint methods the
                                     Model defines, which the OpenAI bridge reads)
    503 {"status": "loading"}        the model is loading in the background
    503 {"status": "failed", "error": "..."}   loading failed; the error says why
    503 {"status": "unhealthy", "error": "..."}  the Model's is_healthy() failed its
                                     `runtime.health_checks.failure_threshold` checks in a row:
                                     the supervisor takes the replica out of rotation, restarts it

Both worker apps (the model runtime and the engine) hold a `WorkerState` and answer with
`WorkerHealth`; the supervisor parses the same type. Until the state is ready, every other route
answers the `not_ready` error: a 503 envelope with `code` "loading" or "load_failed".
"""

from __future__ import annotations

import enum

from pydantic import BaseModel, ConfigDict

from trestle.errors import Unavailable
from trestle.pydantic_compat import V1, dump


class WorkerState(str, enum.Enum):
    LOADING = "loading"
    READY = "ready"
    FAILED = "failed"
    UNHEALTHY = "unhealthy"


class WorkerHealth(BaseModel):
    """The body of `GET /health`; extra keys are a worker's counters (the engine's scheduler)."""

    if V1:  # a worker in a deployment that pins pydantic<2 (trestle.pydantic_compat)
        class Config:
            extra = "allow"
    else:
        model_config = ConfigDict(extra="allow")

    status: WorkerState
    error: str | None = None  # with `failed`: why loading failed

    @property
    def http_status(self) -> int:
        return 200 if self.status is WorkerState.READY else 503

    def body(self) -> dict:
        return dump(self, exclude={"error"} if self.error is None else None)


def not_ready(state: WorkerState, error: str | None, *, model: str = "the model") -> Unavailable:
    """The 503 every route but /health answers while `state` is not ready."""
    assert state is not WorkerState.READY
    if state is WorkerState.UNHEALTHY:
        return Unavailable(f"{model} is unhealthy ({error}); it is being restarted", code="unhealthy")
    if state is WorkerState.LOADING:
        return Unavailable(f"{model} is still loading; retry when GET /health reports ready", code="loading")
    return Unavailable(f"{model} failed to load: {error}", code="load_failed")


def reported(body: bytes) -> WorkerHealth | None:
    """A `/health` body as the supervisor reads it; None when it is not one."""
    try:
        return WorkerHealth.model_validate_json(body)
    except ValueError:
        return None
