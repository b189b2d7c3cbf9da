"""Fixtures: a fresh SQLite store file per test, and one event loop to drive it.

Tests are plain functions that call `run(coroutine)`; no asyncio plugin is needed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from trestle.store import Store, sqlite_url


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "home" / "trestle.db"


@pytest.fixture
def db_url(db_path: Path) -> str:
    return sqlite_url(db_path)


@pytest.fixture
def runner() -> Iterator[asyncio.Runner]:
    with asyncio.Runner() as r:
        yield r


@pytest.fixture
def run(runner: asyncio.Runner):
    return runner.run


@pytest.fixture
def store(runner: asyncio.Runner, db_url: str) -> Iterator[Store]:
    s = runner.run(Store.open(db_url))
    yield s
    runner.run(s.close())
