"""Fixtures: a fresh database per test, and one event loop to drive it.

`store` runs each test twice: on a SQLite file, and on a fresh database of a throwaway PostgreSQL
cluster that the session starts on a Unix socket (skipped, saying why, where PostgreSQL's
programs or asyncpg are missing). `sqlite_store` is for tests about the SQLite file itself.
Tests are plain functions that call `run(coroutine)`; no asyncio plugin is needed.
"""

from __future__ import annotations

import asyncio
import glob
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from trestle.store import Store, sqlite_url
from trestle.store.ids import random_token


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "home" / "trestle.db"


@pytest.fixture
def db_url(db_path: Path) -> str:
    return sqlite_url(db_path)


def _postgres_bin() -> Path | None:
    found = shutil.which("pg_ctl") or next(
        iter(sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), reverse=True)), None
    )
    return Path(os.path.realpath(found)).parent if found else None


class PostgresCluster:
    def __init__(self, bin_dir: Path, root: Path):
        self.bin_dir, self.root = bin_dir, root
        self.data, self.socket_dir = root / "data", root
        # initdb and postgres refuse to run as root.
        self.as_owner = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []

    def _run(self, program: str, *args: str, as_owner: bool = False) -> None:
        cmd = [*(self.as_owner if as_owner else []), str(self.bin_dir / program), *args]
        subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=120)

    def start(self) -> None:
        if self.as_owner:
            shutil.chown(self.root, user="postgres")
        self._run("initdb", "-D", str(self.data), "--auth=trust", "-U", "postgres", "-E", "UTF8",
                  as_owner=True)
        options = (
            f"-c listen_addresses='' -c unix_socket_directories={self.socket_dir} -c fsync=off"
        )
        self._run("pg_ctl", "-D", str(self.data), "-o", options, "-l", str(self.root / "log"),
                  "-w", "start", as_owner=True)

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "stop", as_owner=True)

    def new_database(self) -> str:
        name = "t" + random_token(12)
        self._run("createdb", "-h", str(self.socket_dir), "-U", "postgres", name)
        return f"postgresql+asyncpg://postgres@/{name}?host={self.socket_dir}"


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresCluster]:
    bin_dir = _postgres_bin()
    if bin_dir is None:
        pytest.skip("PostgreSQL is not installed (no pg_ctl); the SQLite runs still ran")
    pytest.importorskip("asyncpg", reason="asyncpg is not installed (pip install -e '.[test]')")
    root = Path(tempfile.mkdtemp(prefix="trestle-pg-"))
    cluster = PostgresCluster(bin_dir, root)
    try:
        cluster.start()
        yield cluster
        cluster.stop()
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request, db_url: str) -> str:
    if request.param == "sqlite":
        return db_url
    return request.getfixturevalue("postgres").new_database()


@pytest.fixture
def runner() -> Iterator[asyncio.Runner]:
    with asyncio.Runner() as r:
        yield r


@pytest.fixture
def run(runner: asyncio.Runner):
    return runner.run


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
