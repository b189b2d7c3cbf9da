"""API keys: shown once, stored as salted hashes, verified, cached, revoked, counted."""

from __future__ import annotations

import asyncio
import logging
import re
import sqlite3

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import event

from trestle.errors import BadRequest, NotFound
from trestle.store import ApiKey, Store

KEY_FORMAT = re.compile(r"tr_([a-z0-9]{8})_([A-Za-z0-9_-]{40,})")


def test_create_returns_plaintext_once(run, store):
    key, plaintext = run(store.create_api_key("ci"))
    assert isinstance(key, ApiKey)
    match = KEY_FORMAT.fullmatch(plaintext)
    assert match and match.group(1) == key.prefix
    assert re.fullmatch(r"k[a-z0-9]{8}", key.id)
    assert (key.name, key.revoked_at, key.active) == ("ci", None, True)
    assert set(vars(key)) == {"id", "name", "prefix", "created_at", "revoked_at", "scope",
                              "models", "endpoints", "rpm", "tpm"}
    assert run(store.list_api_keys()) == [key]


def test_verify_good_key(run, store):
    key, plaintext = run(store.create_api_key("ci"))
    assert run(store.verify_api_key(plaintext)) == key
    assert run(store.verify_api_key(plaintext)) == key  # second time from the cache


def test_keys_are_distinct(run, store):
    made = [run(store.create_api_key("same name")) for _ in range(3)]
    assert len({k.id for k, _ in made}) == 3
    assert len({k.prefix for k, _ in made}) == 3
    assert len({p for _, p in made}) == 3
    for key, plaintext in made:
        assert run(store.verify_api_key(plaintext)) == key


def test_wrong_keys_are_none(run, store):
    key, plaintext = run(store.create_api_key("ci"))
    secret = plaintext.split("_", 2)[2]
    flipped = secret[:-1] + ("A" if secret[-1] != "A" else "B")
    wrong = [
        f"tr_{key.prefix}_{flipped}",  # right prefix, wrong secret
        f"tr_{key.prefix}_",  # no secret
        f"tr_zzzzzzzz_{secret}",  # unknown prefix
        f"xx_{key.prefix}_{secret}",  # wrong scheme
        plaintext[:-1],  # truncated
        plaintext + "x",
        f"tr_{key.prefix.upper()}_{secret}",
        "",
        "Bearer " + plaintext,
        None,
        12345,
    ]
    for candidate in wrong:
        assert run(store.verify_api_key(candidate)) is None, candidate
    assert run(store.verify_api_key(plaintext)) == key


def test_revoke(run, store):
    key, plaintext = run(store.create_api_key("ci"))
    other, other_plaintext = run(store.create_api_key("ops"))
    assert run(store.verify_api_key(plaintext)) == key  # now cached

    revoked = run(store.revoke_api_key(key.id))
    assert revoked.id == key.id and revoked.revoked_at is not None and not revoked.active
    assert revoked.revoked_at >= key.created_at
    assert run(store.verify_api_key(plaintext)) is None  # the cache entry was dropped
    assert run(store.verify_api_key(other_plaintext)) == other
    assert run(store.list_api_keys()) == [revoked, other]

    # Revoking again changes nothing.
    assert run(store.revoke_api_key(key.id)) == revoked


def test_revoke_unknown_is_not_found(run, store):
    with pytest.raises(NotFound) as info:
        run(store.revoke_api_key("knosuch00"))
    assert info.value.param == "key_id"


def test_count(run, store):
    assert run(store.count_api_keys()) == 0
    assert run(store.count_api_keys(active_only=False)) == 0
    keys = [run(store.create_api_key(f"k{i}"))[0] for i in range(3)]
    run(store.revoke_api_key(keys[1].id))
    assert run(store.count_api_keys()) == 2
    assert run(store.count_api_keys(active_only=True)) == 2
    assert run(store.count_api_keys(active_only=False)) == 3


@pytest.mark.parametrize("name", ["", "  ", None, "x" * 256])
def test_bad_name_is_bad_request(run, store, name):
    with pytest.raises(BadRequest) as info:
        run(store.create_api_key(name))
    assert info.value.param == "name"


def test_only_a_salted_hash_is_stored(run, sqlite_store, db_path):
    _, plaintext = run(sqlite_store.create_api_key("ci"))
    _, plaintext2 = run(sqlite_store.create_api_key("ci"))
    stored = b"".join(p.read_bytes() for p in db_path.parent.glob("trestle.db*"))
    secret = plaintext.split("_", 2)[2]
    assert secret.encode() not in stored
    assert plaintext2.split("_", 2)[2].encode() not in stored
    with sqlite3.connect(db_path) as conn:
        hashes = [r[0] for r in conn.execute("SELECT key_hash FROM api_keys")]
    salts = [h.split("$")[4] for h in hashes]
    assert all(h.startswith("scrypt$") for h in hashes)
    assert len(set(salts)) == 2 and all(len(s) == 32 for s in salts)


def test_keys_never_reach_logs(run, store, caplog):
    caplog.set_level(logging.DEBUG)
    logging.getLogger("sqlalchemy.engine").setLevel(logging.INFO)  # SQL with parameters
    try:
        _, plaintext = run(store.create_api_key("ci"))
        run(store.verify_api_key(plaintext))
        run(store.verify_api_key(plaintext[:-2] + "zz"))
    finally:
        logging.getLogger("sqlalchemy.engine").setLevel(logging.WARNING)
    assert "api_keys" in caplog.text  # the SQL was logged ...
    assert plaintext.split("_", 2)[2] not in caplog.text  # ... the secret was not
    assert "scrypt$" not in caplog.text  # nor its hash


def test_revocation_elsewhere_is_seen_after_the_cache_ttl(runner, store_url):
    """Two gateways on one database: a key revoked by one is refused by the other once its
    cached verification expires; with no cache it is refused at once."""

    async def go():
        cached = await Store.open(store_url)  # default TTL: a verified key is remembered
        uncached = await Store.open(store_url, key_cache_ttl=0)
        admin = await Store.open(store_url)
        try:
            key, plaintext = await admin.create_api_key("shared")
            assert await cached.verify_api_key(plaintext) == key
            assert await uncached.verify_api_key(plaintext) == key
            await admin.revoke_api_key(key.id)
            return (
                await cached.verify_api_key(plaintext),
                await uncached.verify_api_key(plaintext),
                await admin.verify_api_key(plaintext),
            )
        finally:
            for s in (cached, uncached, admin):
                await s.close()

    still_cached, uncached, admin = runner.run(go())
    assert still_cached is not None and still_cached.revoked_at is None
    assert uncached is None
    assert admin is None


def test_concurrent_verifications_share_one_check(runner, store):
    key, plaintext = runner.run(store.create_api_key("burst"))
    _, wrong = runner.run(store.create_api_key("other"))
    wrong = wrong[:-1] + ("A" if wrong[-1] != "A" else "B")
    lookups = []

    def after_execute(conn, cursor, statement, *args):
        if "FROM api_keys" in statement and "prefix" in statement:
            lookups.append(statement)

    event.listen(store._engine.sync_engine, "after_cursor_execute", after_execute)

    async def go():
        impatient = asyncio.ensure_future(store.verify_api_key(plaintext))
        others = [asyncio.ensure_future(store.verify_api_key(plaintext)) for _ in range(10)]
        bad = [asyncio.ensure_future(store.verify_api_key(wrong)) for _ in range(3)]
        await asyncio.sleep(0)
        impatient.cancel()  # one caller goes away; the others still get their answer
        results = await asyncio.gather(*others, *bad)
        return impatient.cancelled(), results, len(store._verifying)

    cancelled, results, in_flight = runner.run(go())
    assert cancelled
    assert results == [key] * 10 + [None] * 3
    assert in_flight == 0
    assert len(lookups) == 2  # one per distinct plaintext, not one per call


def test_revocation_during_a_verification_is_not_cached(runner, store):
    """The check reads the key as active, the key is revoked while scrypt runs: the check's
    stale answer must not be cached."""
    key, plaintext = runner.run(store.create_api_key("racy"))
    read_done = asyncio.Event()

    def after_execute(conn, cursor, statement, *args):
        if "FROM api_keys" in statement and "prefix" in statement:
            read_done.set()

    event.listen(store._engine.sync_engine, "after_cursor_execute", after_execute)

    async def go():
        checking = asyncio.ensure_future(store.verify_api_key(plaintext))
        await read_done.wait()  # the row was read while the key was active
        revoked = await store.revoke_api_key(key.id)
        await checking
        return revoked, await store.verify_api_key(plaintext)

    revoked, after = runner.run(go())
    assert revoked.revoked_at is not None
    assert after is None


def test_arbitrary_text_never_verifies_and_never_raises(run, sqlite_store):
    key, plaintext = run(sqlite_store.create_api_key("real"))

    @settings(max_examples=200, deadline=None)
    @given(
        st.one_of(
            st.text(),
            st.text().map(lambda s: f"tr_{key.prefix}_{s}"),  # the real prefix, any secret
            st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789_", min_size=10).map(
                lambda s: "tr_" + s
            ),
        )
    )
    def check(candidate: str) -> None:
        if candidate != plaintext:
            assert run(sqlite_store.verify_api_key(candidate)) is None

    check()
    assert run(sqlite_store.verify_api_key(plaintext)) == key
