"""`AccessLog`: the `last_accessed` time of searched rows, written in batches.

    log = AccessLog(store.datasets)
    when = log.record([17, 18])       # now; written within `DELAY_S`, in one transaction
    await log.flush()                 # write what is pending at once (before reading rows back)
    await log.close()                 # flush, and stop the timer

A search used to write `last_accessed` of its results in its own transaction: on SQLite that is
a commit (a WAL sync, and the write lock) on every search, the largest part of a search's time.
The times are kept in memory instead and written together, at most `DELAY_S` after the first
search that recorded one, so that many searches share one write. `Datastore.rows` flushes first,
so this process's readers always see the times it has answered with; another process sees them
within `DELAY_S`. What is pending is bounded by the rows searches return in `DELAY_S` (one
time per row). A write that fails (the database is busy) keeps the times for the next one,
newer times win, and rows deleted meanwhile are simply not found.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from datetime import UTC, datetime

from trestle.store.datasets import DatasetStore

DELAY_S = 1.0

log = logging.getLogger(__name__)


class AccessLog:
    def __init__(self, datasets: DatasetStore, *, delay_s: float = DELAY_S):
        self.datasets = datasets
        self.delay_s = delay_s
        self._pending: dict[int, datetime] = {}
        self._timer: asyncio.Task | None = None
        self._lock = asyncio.Lock()

    def record(self, ids: Iterable[int]) -> datetime:
        """Note that these rows were returned now; returns the time recorded."""
        when = datetime.now(UTC)
        for chunk_id in ids:
            self._pending[chunk_id] = when
        if self._pending and (self._timer is None or self._timer.done()):
            self._timer = asyncio.get_running_loop().create_task(self._flush_later())
        return when

    async def _flush_later(self) -> None:
        await asyncio.sleep(self.delay_s)
        try:
            await self.flush()
        except Exception:  # kept for the next flush; this one is retried by the next search
            log.warning("could not write last_accessed of %d rows yet", len(self._pending),
                        exc_info=True)

    async def flush(self) -> None:
        """Write the pending times now (one transaction)."""
        async with self._lock:
            if not self._pending:
                return
            pending, self._pending = self._pending, {}
            try:
                await self.datasets.set_last_accessed(pending)
            except BaseException:
                for chunk_id, when in pending.items():  # a newer time recorded meanwhile wins
                    self._pending.setdefault(chunk_id, when)
                raise

    async def close(self) -> None:
        timer, self._timer = self._timer, None
        if timer is not None and not timer.done():
            timer.cancel()
            try:
                await timer
            except asyncio.CancelledError:
                pass
        await self.flush()
