"""The Alembic migrations: a fresh file gets every table at head, and the ORM matches the schema."""

from __future__ import annotations

import asyncio
import sqlite3
import stat
import subprocess
import sys

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from trestle.store import Store, sqlite_url
from trestle.store.engine import make_engine, parse_url
from trestle.store.migrate import head_revision, run_locked, upgrade
from trestle.store.tables import Base, is_search_object

TABLES = {
    "models", "deployments", "environments", "api_keys", "secrets", "datasets", "documents",
    "chunks", "environment_history", "endpoints", "endpoint_versions", "prices", "usage_records",
    "deployment_archives", "alembic_version",
}
# SQLite's FTS5 index of chunks: the virtual table and its shadow tables.
FTS_TABLES = {"chunks_fts", "chunks_fts_data", "chunks_fts_idx", "chunks_fts_docsize",
              "chunks_fts_config"}


def schema(db_path) -> dict[str, set[str]]:
    with sqlite3.connect(db_path) as conn:
        names = [
            r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")
            if r[0] not in FTS_TABLES
        ]
        return {n: {r[1] for r in conn.execute(f"PRAGMA table_info({n})")} for n in names}


def all_tables(db_path) -> set[str]:
    with sqlite3.connect(db_path) as conn:
        return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}


def indexes(db_path) -> set[str]:
    with sqlite3.connect(db_path) as conn:
        rows = conn.execute("SELECT name FROM sqlite_master WHERE type='index' AND sql IS NOT NULL")
        return {r[0] for r in rows}


def foreign_keys(db_path, table: str) -> set[tuple[str, str, str]]:
    with sqlite3.connect(db_path) as conn:
        rows = conn.execute(f"PRAGMA foreign_key_list({table})")
        return {(r[3], r[2], r[4]) for r in rows}  # (from column, to table, to column)


def drift(db_url: str, metadata: sa.MetaData) -> list:
    async def go():
        engine = make_engine(parse_url(db_url))
        try:
            async with engine.connect() as conn:
                return await conn.run_sync(
                    lambda c: compare_metadata(
                        MigrationContext.configure(
                            c,
                            opts={
                                "compare_type": True,
                                "include_name": lambda name, *_: not is_search_object(name),
                            },
                        ),
                        metadata,
                    )
                )
        finally:
            await engine.dispose()

    return asyncio.run(go())


def test_fresh_file_gets_every_table_at_head(db_path, db_url):
    assert not db_path.exists()
    asyncio.run(upgrade(db_url))

    tables = schema(db_path)
    assert set(tables) == TABLES
    assert all_tables(db_path) == TABLES | FTS_TABLES
    assert tables["chunks"] == {
        "id", "dataset_id", "document_id", "position", "text", "data", "embedding", "vector",
        "last_accessed",
    }
    assert tables["documents"] == {"id", "dataset_id", "name", "metadata", "created_at"}
    assert tables["deployments"] == {
        "id", "model_id", "status", "config", "source_dir", "error", "created_at", "updated_at",
    }
    assert tables["api_keys"] == {"id", "name", "prefix", "key_hash", "created_at", "revoked_at",
                                  "scope", "models", "endpoints", "rpm", "tpm"}
    assert tables["deployment_archives"] == {"deployment_id", "part", "data"}
    assert foreign_keys(db_path, "deployment_archives") == {("deployment_id", "deployments", "id")}
    assert tables["environments"] == {"model_id", "name", "deployment_id", "updated_at"}
    assert tables["secrets"] == {"name", "value", "encrypted", "updated_at"}
    assert tables["models"] == {"id", "name", "created_at"}
    assert {
        "ix_deployments_model_id", "ix_deployments_status", "ix_environments_deployment_id",
    } <= indexes(db_path)
    assert foreign_keys(db_path, "deployments") == {("model_id", "models", "id")}
    assert foreign_keys(db_path, "environments") == {
        ("model_id", "models", "id"), ("deployment_id", "deployments", "id"),
    }
    with sqlite3.connect(db_path) as conn:
        assert conn.execute("SELECT version_num FROM alembic_version").fetchall() == [
            (head_revision(),)
        ]
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)


def test_database_file_is_private(db_path, db_url):
    asyncio.run(upgrade(db_url))
    assert stat.S_IMODE(db_path.stat().st_mode) == 0o600


def test_existing_file_is_made_private(db_path, db_url):
    db_path.parent.mkdir(parents=True)
    db_path.touch(mode=0o644)
    db_path.chmod(0o644)
    asyncio.run(upgrade(db_url))
    assert stat.S_IMODE(db_path.stat().st_mode) == 0o600
    assert set(schema(db_path)) == TABLES


def test_opening_twice_keeps_data_and_revision(db_path, db_url):
    async def go():
        async with await Store.open(db_url) as store:
            await store.create_model("kept")
        async with await Store.open(db_url) as store:
            return [m.name for m in await store.list_models()]

    assert asyncio.run(go()) == ["kept"]
    with sqlite3.connect(db_path) as conn:
        assert conn.execute("SELECT count(*) FROM alembic_version").fetchone() == (1,)


def test_orm_matches_migrated_schema(db_url):
    asyncio.run(upgrade(db_url))
    assert drift(db_url, Base.metadata) == []


def test_drift_check_sees_a_column_missing_from_the_migrations(db_url):
    # The check above must be able to fail: a metadata with one more column is reported.
    asyncio.run(upgrade(db_url))
    changed = sa.MetaData()
    for table in Base.metadata.tables.values():
        table.to_metadata(changed)
    changed.tables["models"].append_column(sa.Column("owner", sa.String(64), nullable=True))
    diffs = drift(db_url, changed)
    assert [d[0] for d in diffs] == ["add_column"]
    assert diffs[0][3].name == "owner"


def test_downgrade_to_base_and_back(db_path, db_url):
    asyncio.run(upgrade(db_url))
    asyncio.run(run_locked(db_url, lambda config: command.downgrade(config, "base")))
    assert all_tables(db_path) == {"alembic_version"}
    asyncio.run(upgrade(db_url))
    assert set(schema(db_path)) == TABLES


def test_postgres_gets_every_table_and_no_drift(postgres):
    url = postgres.new_database()
    asyncio.run(upgrade(url))
    asyncio.run(upgrade(url))  # a second run is a no-op

    async def inspect():
        engine = make_engine(parse_url(url))
        try:
            async with engine.connect() as conn:
                return await conn.run_sync(
                    lambda c: (
                        set(sa.inspect(c).get_table_names()),
                        {ix["name"] for ix in sa.inspect(c).get_indexes("deployments")},
                        list(c.scalars(sa.text("SELECT version_num FROM alembic_version"))),
                    )
                )
        finally:
            await engine.dispose()

    tables, deployment_indexes, versions = asyncio.run(inspect())
    assert tables == TABLES
    assert deployment_indexes == {"ix_deployments_model_id", "ix_deployments_status"}
    assert versions == [head_revision()]
    assert drift(url, Base.metadata) == []


@pytest.mark.parametrize(
    "url",
    [
        "sqlite+aiosqlite://",
        "sqlite+aiosqlite:///:memory:",
        "sqlite:///x.db",
        "mysql+aiomysql://u@h/db",
        "postgresql://u@h/db",
        "not a url",
    ],
)
def test_unsupported_urls_are_refused(url):
    with pytest.raises(ValueError):
        asyncio.run(Store.open(url))


def test_upgrade_command(db_path, db_url):
    done = subprocess.run(
        [sys.executable, "-m", "trestle.store", "upgrade", db_url],
        capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert set(schema(db_path)) == TABLES
    assert "Warning" not in done.stderr


def test_upgrade_command_refuses_a_bad_url():
    done = subprocess.run(
        [sys.executable, "-m", "trestle.store", "upgrade", "sqlite:///x.db"],
        capture_output=True, text=True, timeout=120,
    )
    assert done.returncode != 0
    assert "sqlite+aiosqlite" in done.stderr
    assert "Traceback" not in done.stderr


def test_sqlite_url_escapes_odd_paths(tmp_path):
    path = tmp_path / "odd ?dir%20#x" / "trestle.db"

    async def go():
        async with await Store.open(sqlite_url(path)) as store:
            await store.create_model("here")

    asyncio.run(go())
    assert path.is_file()
    assert set(schema(path)) == TABLES


def test_keys_from_before_scopes_become_admin(db_path, db_url):
    asyncio.run(upgrade(db_url, "0001"))
    with sqlite3.connect(db_path) as conn:
        conn.execute("INSERT INTO api_keys (id, name, prefix, key_hash, created_at) "
                     "VALUES ('kold', 'old', 'abcdefgh', 'scrypt$1$1$1$00$00', '2026-01-01')")
    asyncio.run(upgrade(db_url, "0004"))

    async def listed():
        async with await Store.open(db_url) as store:
            return await store.list_api_keys()

    (old,) = asyncio.run(listed())
    assert (old.name, old.scope, old.models, old.endpoints) == ("old", "admin", None, None)
