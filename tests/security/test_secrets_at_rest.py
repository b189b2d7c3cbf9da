"""Secrets at rest: encrypted under a key file kept outside the database, plaintext rows written
by an older trestle encrypted when the store opens."""

from __future__ import annotations

import asyncio
import sqlite3
from datetime import UTC, datetime

import pytest
from alembic import command

from trestle.store import Store, sqlite_url
from trestle.store.migrate import run_locked
from trestle.store.secretbox import SecretKeyError

VALUE = "hf_plaintext_marker_4242"


def _db_bytes(db_path) -> bytes:
    return b"".join(p.read_bytes() for p in db_path.parent.glob(db_path.name + "*"))


def test_set_secrets_are_encrypted_and_read_back(tmp_path):
    db = tmp_path / "trestle.db"

    async def go():
        async with await Store.open(sqlite_url(db)) as store:
            await store.set_secret("HF_TOKEN", VALUE)
            assert await store.get_secrets() == {"HF_TOKEN": VALUE}
        async with await Store.open(sqlite_url(db)) as store:  # the key file is reused
            assert await store.get_secrets() == {"HF_TOKEN": VALUE}

    asyncio.run(go())
    key = tmp_path / "secrets.key"
    assert key.stat().st_mode & 0o777 == 0o600
    assert VALUE.encode() not in _db_bytes(db)
    with sqlite3.connect(db) as conn:
        (stored,) = conn.execute("SELECT value FROM secrets").fetchone()
    assert stored.startswith("gAAAAA") and key.read_text().strip() not in stored


def test_plaintext_rows_of_an_older_store_are_encrypted_on_open(tmp_path):
    db = tmp_path / "trestle.db"
    url = sqlite_url(db)
    asyncio.run(run_locked(url, lambda config: command.upgrade(config, "0001")))
    with sqlite3.connect(db) as conn:
        conn.execute("INSERT INTO secrets (name, value, updated_at) VALUES (?, ?, ?)",
                     ("OLD", VALUE, datetime.now(UTC).isoformat()))
    assert VALUE.encode() in _db_bytes(db)

    async def go():
        async with await Store.open(url) as store:
            return await store.get_secrets()

    assert asyncio.run(go()) == {"OLD": VALUE}
    assert VALUE.encode() not in _db_bytes(db)


def test_a_replaced_key_file_is_a_clear_error_naming_the_secret_not_its_value(tmp_path):
    db = tmp_path / "trestle.db"

    async def go():
        async with await Store.open(sqlite_url(db)) as store:
            await store.set_secret("HF_TOKEN", VALUE)
        (tmp_path / "secrets.key").unlink()
        async with await Store.open(sqlite_url(db)) as store:
            await store.get_secrets()

    with pytest.raises(SecretKeyError, match="'HF_TOKEN'") as err:
        asyncio.run(go())
    assert VALUE not in str(err.value)
