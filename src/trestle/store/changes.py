"""Changes made by other gateways on the same PostgreSQL database, as they happen.

    feed = ChangeFeed(store, on_change=resync)      # resync: an async function, no arguments
    await feed.start()
    ...
    await feed.close()

Every write of the record that a gateway keeps in memory (deployments, environments, API keys)
sends a PostgreSQL notification on `CHANGES_CHANNEL` in its transaction (`Store._announce`);
the feed LISTENs on one connection of its own and calls `on_change` when another gateway's
notification arrives (its own are skipped), so a change is seen within milliseconds of its
commit. `on_change` re-reads the record as a whole, so notifications that arrive together cost
one re-read, and one that was lost costs nothing but time: the feed also re-reads every
`poll_s` seconds (`TRESTLE_SYNC_POLL_S`, default 10) while it listens, and every
`fallback_poll_s` (1 s) while it cannot (the connection dropped, or the server refuses LISTEN,
as a pooler in transaction mode does), reconnecting in the background.

A store that is not shared (SQLite: one gateway) needs none of this.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable

from trestle.store.store import CHANGES_CHANNEL, Store

log = logging.getLogger("trestle.store.changes")

POLL_S = 10.0
FALLBACK_POLL_S = 1.0


class ChangeFeed:
    def __init__(self, store: Store, on_change: Callable[[], Awaitable[None]], *,
                 poll_s: float = POLL_S, fallback_poll_s: float = FALLBACK_POLL_S):
        self.store = store
        self.on_change = on_change
        self.poll_s = max(poll_s, fallback_poll_s)
        self.fallback_poll_s = fallback_poll_s
        self.listening = False  # whether notifications arrive now (else: polling only)
        self.resyncs = 0  # how many times on_change ran
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._conn = None  # SQLAlchemy AsyncConnection holding the LISTEN
        self._refused = False  # the last attempt to LISTEN failed (logged once per outage)

    async def start(self) -> None:
        await self._listen()
        self._task = asyncio.create_task(self._run())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self._unlisten()

    def _notified(self, _connection, _pid, _channel, payload: str) -> None:
        try:
            origin = json.loads(payload).get("origin")
        except (ValueError, AttributeError):
            origin = None
        if origin != self.store.instance:
            self._wake.set()

    def _terminated(self, _connection) -> None:
        """The LISTEN connection is gone (server restart, network, pg_terminate_backend)."""
        self.listening = False
        self._wake.set()  # reconnect now, and re-read what may have been missed

    async def _listen(self) -> None:
        conn = None
        try:
            conn = await self.store.engine.connect()
            raw = (await conn.get_raw_connection()).driver_connection
            await raw.add_listener(CHANGES_CHANNEL, self._notified)
            raw.add_termination_listener(self._terminated)
        except Exception as exc:  # noqa: BLE001 - any failure means: poll until it works
            if conn is not None:  # connected, but LISTEN was refused: give the connection back
                await self._discard(conn)
            if not self._refused:  # once per outage, not once per retry
                log.warning("cannot LISTEN for other gateways' changes (%s); polling every %gs "
                            "until it can", type(exc).__name__, self.fallback_poll_s)
            self._refused, self.listening = True, False
            return
        if self._refused:
            log.info("listening for other gateways' changes again")
        self._conn, self.listening, self._refused = conn, True, False
        self._wake.set()  # anything that changed while we were not listening

    @staticmethod
    async def _discard(conn) -> None:
        """Close a connection that no longer LISTENs (or never did). It is not handed back to
        the pool: a LISTEN it may still hold would go on with it."""
        try:
            await conn.invalidate()
        except Exception:  # noqa: BLE001 - the connection is gone anyway
            pass
        try:
            await conn.close()
        except Exception:  # noqa: BLE001
            pass

    async def _unlisten(self) -> None:
        conn, self._conn, self.listening = self._conn, None, False
        if conn is not None:
            await self._discard(conn)

    def _connection_lost(self) -> bool:
        if self._conn is None or not self.listening:
            return True
        try:
            raw = self._conn.sync_connection.connection.driver_connection
        except Exception:  # noqa: BLE001 - a closed SQLAlchemy connection: lost all the same
            return True
        return raw is None or raw.is_closed()

    async def _run(self) -> None:
        while True:
            timeout = self.poll_s if self.listening else self.fallback_poll_s
            try:
                await asyncio.wait_for(self._wake.wait(), timeout)
            except TimeoutError:
                pass
            self._wake.clear()
            if self._connection_lost():
                await self._unlisten()
                await self._listen()
            try:
                self.resyncs += 1
                await self.on_change()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("re-reading the record after another gateway's change failed; "
                              "retrying in %gs", self.fallback_poll_s)
                await asyncio.sleep(self.fallback_poll_s)
                self._wake.set()
