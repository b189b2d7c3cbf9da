"""Shared fixtures (see tests/support.py for the server and CLI helpers)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from support import EXAMPLES, Server, start_server


@pytest.fixture(scope="session")
def server(tmp_path_factory) -> Server:
    """`trestle serve` as the README starts it: auth on, built-in SmolLM2 deployed."""
    srv = start_server(tmp_path_factory.mktemp("home"), wait_for_slug=True)
    yield srv
    srv.stop()


@pytest.fixture(scope="session")
def pushed(server):
    """Push each example folder once per session; returns {name: push result}."""
    cache: dict[str, dict] = {}

    def get(name: str) -> dict:
        if name not in cache:
            cache[name] = server.push(EXAMPLES / name)
        return cache[name]

    return get


@pytest.fixture
def runner() -> Iterator[asyncio.Runner]:
    """One event loop per test, for tests that drive coroutines with `run(...)`."""
    with asyncio.Runner() as r:
        yield r


@pytest.fixture
def run(runner: asyncio.Runner):
    return runner.run
