"""The change feed (`trestle.store.changes`) on a server that refuses LISTEN: it polls, retries
LISTEN in the background, and gives back every connection a failed attempt opened."""

from __future__ import annotations

import asyncio
import gc
import shutil
import warnings
from urllib.parse import urlparse

import pytest

from trestle.store import Store
from trestle.store.changes import ChangeFeed
from trestle.store.engine import make_engine, parse_url
from trestle.store.secretbox import SecretBox


@pytest.fixture
def standby_url(postgres):
    """A database on a hot standby of the session's cluster: it connects, and refuses LISTEN."""
    primary = postgres.new_database()
    name = urlparse(primary).path.lstrip("/")
    standby = postgres.start_standby()
    try:
        yield standby.url(name)
    finally:
        standby.stop()
        shutil.rmtree(standby.root, ignore_errors=True)


def test_failed_listen_attempts_give_their_connections_back(run, standby_url, tmp_path, caplog):
    # Store.open would migrate (a write); the feed needs only the engine.
    store = Store(make_engine(parse_url(standby_url)), secrets=SecretBox(tmp_path / "secrets.key"))
    polls = 0

    async def on_change() -> None:
        nonlocal polls
        polls += 1

    async def scenario() -> None:
        feed = ChangeFeed(store, on_change, fallback_poll_s=0.05)
        await feed.start()
        try:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 120
            while polls < 6:  # each poll while not listening tries LISTEN again first
                assert loop.time() < deadline, "the feed never polled"
                await asyncio.sleep(0.05)
            assert not feed.listening
            assert store.engine.pool.checkedout() == 0
        finally:
            await feed.close()
            await store.close()

    with caplog.at_level("WARNING"), warnings.catch_warnings(record=True) as warned:
        warnings.simplefilter("always")
        run(scenario())
        gc.collect()
    # A connection dropped without being closed is found (and killed) by SQLAlchemy's
    # clean-up of unreferenced connections, which says so.
    leaked = [str(w.message) for w in warned if "non-checked-in connection" in str(w.message)]
    leaked += [r.getMessage() for r in caplog.records if "non-checked-in connection" in r.getMessage()]
    assert not leaked
    refused = [r for r in caplog.records if "cannot LISTEN" in r.getMessage()]
    assert len(refused) == 1, "the outage is logged once, not once per retry"
