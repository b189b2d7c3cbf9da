"""Shared fixtures (see tests/support.py for the server and CLI helpers)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from support import EXAMPLES, Server, start_server


# Run together in one process when the suite is spread over several (scripts/test, pytest-xdist):
# the session's Ray cluster, PostgreSQL and Redis are started once, and two clusters never compete
# for the same Ray worker ports.
ONE_PROCESS = ("tests/scaleout/",)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    """`--dist loadfile`, with the folders of ONE_PROCESS each as one unit."""
    from xdist.scheduler import LoadFileScheduling

    class Scheduling(LoadFileScheduling):
        def _split_scope(self, nodeid: str) -> str:
            for folder in ONE_PROCESS:
                if nodeid.startswith(folder):
                    return folder
            return super()._split_scope(nodeid)

    return Scheduling(config, log) if config.getvalue("dist") == "loadfile" else None


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
