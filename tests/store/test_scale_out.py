"""What several gateways on one database rely on: key rate limits, forgetting keys another
store changed, pushed archives kept with their deployment, and change notifications."""

from __future__ import annotations

import asyncio
import json

import pytest

from trestle.errors import BadRequest, NotFound
from trestle.store import Status, Store
from trestle.store.store import CHANGES_CHANNEL


def test_rate_limits_are_set_updated_and_cleared(run, store):
    key, _ = run(store.create_api_key("limited", scope="invoke", rpm=60, tpm=0))
    assert (key.rpm, key.tpm) == (60, None)  # 0: no limit
    key = run(store.update_api_key(key.id, tpm=1000))
    assert (key.rpm, key.tpm) == (60, 1000)  # what was left out stays
    key = run(store.update_api_key(key.id, rpm=0))
    assert (key.rpm, key.tpm) == (None, 1000)
    assert run(store.list_api_keys())[0] == key
    for bad in (-1, 1.5, True, "10", 10**10):
        with pytest.raises(BadRequest) as caught:
            run(store.update_api_key(key.id, rpm=bad))
        assert caught.value.param == "rpm"
    with pytest.raises(NotFound):
        run(store.update_api_key("k00000000", rpm=1))


def test_refresh_keys_forgets_what_another_store_changed(run, store, store_url):
    key, plaintext = run(store.create_api_key("shared", scope="invoke"))
    other = run(Store.open(store_url, key_cache_ttl=3600))
    try:
        assert run(other.verify_api_key(plaintext)) == key  # cached for an hour
        assert run(other.refresh_keys()) == 0
        run(store.update_api_key(key.id, rpm=5))
        assert run(other.verify_api_key(plaintext)).rpm is None  # stale until refreshed
        assert run(other.refresh_keys()) == 1
        assert run(other.verify_api_key(plaintext)).rpm == 5
        run(store.revoke_api_key(key.id))
        assert run(other.refresh_keys()) == 1
        assert run(other.verify_api_key(plaintext)) is None
    finally:
        run(other.close())


def test_archive_is_kept_with_the_deployment_on_postgresql(run, store, tmp_path):
    archive = tmp_path / "push.tar.gz"
    payload = bytes(range(256)) * (40_000)  # 10 MB: more than one part
    archive.write_bytes(payload)
    model = run(store.create_model("archived"))
    dep = run(store.create_deployment(model.id, {}, "/srv/x/src", archive=archive))
    copy = tmp_path / "copy.tar.gz"
    if not store.shared:  # SQLite: one gateway, nothing to share
        assert run(store.load_archive(dep.id, copy)) is False
        return
    assert run(store.load_archive(dep.id, copy)) is True
    assert copy.read_bytes() == payload
    assert run(store.mark_active_if_loading(dep.id)) is True
    assert run(store.get_deployment(dep.id)).status == Status.ACTIVE
    assert run(store.mark_active_if_loading(dep.id)) is False
    run(store.delete_deployment(dep.id))
    assert run(store.load_archive(dep.id, copy)) is False


def test_writes_announce_themselves_on_postgresql(run, store, store_url):
    if not store.shared:
        pytest.skip("notifications are PostgreSQL's; a SQLite store has one gateway")
    import asyncpg

    async def go() -> list[dict]:
        conn = await asyncpg.connect(store_url.replace("postgresql+asyncpg://", "postgresql://"))
        heard: asyncio.Queue = asyncio.Queue()
        await conn.add_listener(CHANGES_CHANNEL, lambda *args: heard.put_nowait(json.loads(args[3])))
        try:
            model = await store.create_model("announced")
            dep = await store.create_deployment(model.id, {}, "/srv/y/src")
            await store.set_environment(model.id, "production", dep.id)
            key, _ = await store.create_api_key("k")
            await store.revoke_api_key(key.id)
            return [await asyncio.wait_for(heard.get(), 60) for _ in range(3)]
        finally:
            await conn.close()

    heard = run(go())
    assert [h["kind"] for h in heard] == ["deployment", "environment", "key"]
    assert {h["origin"] for h in heard} == {store.instance}
