"""The worker health body: one state enum, the same wire strings the supervisor reads."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from trestle.protocol.health import WorkerHealth, WorkerState, not_ready


def test_bodies_keep_their_wire_shape():
    assert WorkerHealth(status=WorkerState.READY).body() == {"status": "ready"}
    assert WorkerHealth(status=WorkerState.LOADING).body() == {"status": "loading"}
    failed = WorkerHealth(status=WorkerState.FAILED, error="Model.load raised RuntimeError: x")
    assert failed.body() == {"status": "failed", "error": "Model.load raised RuntimeError: x"}
    assert [h.http_status for h in (WorkerHealth(status="ready"), WorkerHealth(status="loading"), failed)] == [
        200, 503, 503,
    ]


def test_a_worker_may_add_counters():
    health = WorkerHealth(status=WorkerState.READY, active_sequences=2)
    assert health.body() == {"status": "ready", "active_sequences": 2}
    assert WorkerHealth.model_validate(health.body()).status is WorkerState.READY


def test_an_unknown_status_is_refused():
    with pytest.raises(ValidationError):
        WorkerHealth.model_validate({"status": "load_failed"})


def test_not_ready_errors_name_the_state():
    loading = not_ready(WorkerState.LOADING, None)
    failed = not_ready(WorkerState.FAILED, "boom", model="the model acme/x")
    assert (loading.status_code, loading.code) == (503, "loading")
    assert "still loading" in loading.message
    assert (failed.status_code, failed.code) == (503, "load_failed")
    assert failed.message == "the model acme/x failed to load: boom"
