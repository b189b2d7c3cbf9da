"""Fixtures: a fresh database per test, and one event loop to drive it.

`store` runs each test twice: on a SQLite file, and on a fresh database of a throwaway PostgreSQL
cluster that the session starts on a Unix socket (skipped, saying why, where PostgreSQL's
programs or asyncpg are missing). `sqlite_store` is for tests about the SQLite file itself.
Tests are plain functions that call `run(coroutine)`; no asyncio plugin is needed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from postgres import PostgresCluster, throwaway_cluster
from trestle.store import Store, sqlite_url


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "home" / "trestle.db"


@pytest.fixture
def db_url(db_path: Path) -> str:
    return sqlite_url(db_path)


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresCluster]:
    with throwaway_cluster() as cluster:
        yield cluster


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request, db_url: str) -> str:
    if request.param == "sqlite":
        return db_url
    return request.getfixturevalue("postgres").new_database()


def _open(runner: asyncio.Runner, url: str) -> Iterator[Store]:
    s = runner.run(Store.open(url))
    yield s
    runner.run(s.close())


@pytest.fixture
def store(runner: asyncio.Runner, store_url: str) -> Iterator[Store]:
    yield from _open(runner, store_url)


@pytest.fixture
def sqlite_store(runner: asyncio.Runner, db_url: str) -> Iterator[Store]:
    yield from _open(runner, db_url)
