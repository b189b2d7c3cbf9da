"""A gateway for the security tests: auth on, no built-in model, small limits where a test
needs to reach them (each is an ordinary setting, as a user would configure it)."""

from __future__ import annotations

from pathlib import Path

import pytest

from support import Server, start_server

MODELS = Path(__file__).parent / "models"
PREDICT_LIMIT = 8 * 1024 * 1024


@pytest.fixture(scope="module")
def edge(tmp_path_factory) -> Server:
    srv = start_server(tmp_path_factory.mktemp("home"), "--no-builtin",
                       env={"TRESTLE_MAX_PREDICT_BODY_BYTES": str(PREDICT_LIMIT)})
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def echo(edge) -> str:
    """The echo model, pushed and active: its model id."""
    push = edge.push(MODELS / "echo")
    assert push["deployment"]["status"] == "active", push["deployment"]["error"]
    return push["model"]["id"]
