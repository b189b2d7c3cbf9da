"""Async engines for the store's URLs: `sqlite+aiosqlite:///PATH` or `postgresql+asyncpg://...`.

Values bound to SQL (key hashes, secret values) never appear in logs or error messages
(`hide_parameters`). SQLite specifics live here and only here: the file is created mode 0600
(it holds key hashes and secrets), writers wait up to `BUSY_TIMEOUT_S` for each other instead of
failing with "database is locked", and foreign keys are enforced on every connection.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from sqlalchemy import event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

BUSY_TIMEOUT_S = 30.0


def _drop_debug(record: logging.LogRecord) -> bool:
    return record.levelno > logging.DEBUG


# aiosqlite logs every call at DEBUG with its SQL parameters (key hashes, secret values).
# A filter rather than a level, so that turning on debug logging later cannot bring them back.
logging.getLogger("aiosqlite").addFilter(_drop_debug)


def sqlite_url(path: str | os.PathLike[str]) -> str:
    """The store URL for a SQLite file, e.g. `sqlite_url(home / "trestle.db")`; characters that
    mean something in a URL (`?`, `%`, `#`) are escaped."""
    return URL.create("sqlite+aiosqlite", database=str(Path(path))).render_as_string()


def parse_url(url: str) -> URL:
    try:
        parsed = make_url(url)
    except Exception as exc:  # sqlalchemy.exc.ArgumentError, ValueError
        raise ValueError(f"not a database URL: {exc}") from None
    if parsed.get_backend_name() == "sqlite":
        if parsed.get_driver_name() != "aiosqlite":
            raise ValueError("SQLite store URLs use the async driver: sqlite+aiosqlite:///PATH")
        database = parsed.database or ""
        if database in ("", ":memory:") or database.startswith("file:"):
            raise ValueError(
                "the store needs a SQLite file (sqlite+aiosqlite:///PATH); an in-memory database "
                "would be lost between connections"
            )
    elif parsed.get_backend_name() == "postgresql":
        if parsed.get_driver_name() != "asyncpg":
            raise ValueError("PostgreSQL store URLs use the async driver: postgresql+asyncpg://...")
    else:
        raise ValueError(
            f"unsupported database {parsed.get_backend_name()!r}; use sqlite+aiosqlite or "
            "postgresql+asyncpg"
        )
    return parsed


def is_sqlite(url: URL) -> bool:
    return url.get_backend_name() == "sqlite"


def prepare_sqlite_file(url: URL) -> None:
    """Create the database file (and its folder) readable by its owner only."""
    path = Path(url.database)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except FileExistsError:
        if path.stat().st_uid == os.getuid() and path.stat().st_mode & 0o077:
            os.chmod(path, 0o600)
        return
    os.close(fd)


def make_engine(url: URL, *, for_migrations: bool = False) -> AsyncEngine:
    """An async engine for `url` (from `parse_url`).

    `for_migrations=True`, SQLite only: every transaction starts with `BEGIN IMMEDIATE`, which takes
    the write lock at once, so concurrent openers run the migrations one after the other; the
    journal is switched to WAL first so that readers never wait for writers.
    """
    if not is_sqlite(url):
        return create_async_engine(url, pool_pre_ping=True, hide_parameters=True)
    prepare_sqlite_file(url)
    engine = create_async_engine(
        url, connect_args={"timeout": BUSY_TIMEOUT_S}, hide_parameters=True
    )

    if for_migrations:

        @event.listens_for(engine.sync_engine, "connect")
        def _autocommit_driver(dbapi_connection, _record):
            dbapi_connection.isolation_level = None  # we emit BEGIN ourselves, below
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.close()

        @event.listens_for(engine.sync_engine, "begin")
        def _begin_immediate(conn):
            conn.exec_driver_sql("BEGIN IMMEDIATE")

    else:

        @event.listens_for(engine.sync_engine, "connect")
        def _foreign_keys(dbapi_connection, _record):
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

    return engine
