"""Racing a piece of work against the client leaving: the one helper for `http.disconnect`.

    left, result = await race_disconnect(receive, work())

runs `work` until it ends or the client disconnects, whichever comes first. When the client
leaves, `work` is cancelled (so whatever it holds — an upstream connection, an engine sequence, a
generator — is released by its own `finally`) and `left` is True. When `work` ends first, its
result is returned, or its exception raised. Used by the gateway's proxy, the worker's streams and
the engine's non-streaming answers; the request body must already have been read.

It is on every proxied request, so it costs as little as it can: `work` runs in the caller's own
task, and a watcher task waiting for `http.disconnect` cancels that task if the client leaves
first. The watcher is started only once `work` has run for `WATCH_AFTER_S`: most answers are
complete sooner, and a task per request was 6% of the gateway's CPU on its fastest path.
A client that leaves earlier is seen then (its `http.disconnect` waits in `receive`).
"""

from __future__ import annotations

import asyncio
from typing import Awaitable, TypeVar

from starlette.types import Receive

T = TypeVar("T")

WATCH_AFTER_S = 0.005


async def until_disconnect(receive: Receive) -> None:
    """Return when the client disconnects."""
    while (await receive())["type"] != "http.disconnect":
        pass


async def race_disconnect(receive: Receive, work: Awaitable[T]) -> tuple[bool, T | None]:
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    watcher: asyncio.Task | None = None
    running = True  # until `work` ends: the watcher cancels only while it runs
    left = False

    def on_disconnect(watcher: asyncio.Task) -> None:
        nonlocal left
        if watcher.cancelled() or watcher.exception() is not None:
            return  # a receive that failed is not the client leaving
        if running:
            left = True
            task.cancel()

    def watch() -> None:
        nonlocal watcher
        watcher = loop.create_task(until_disconnect(receive))
        watcher.add_done_callback(on_disconnect)

    timer = loop.call_later(WATCH_AFTER_S, watch)
    try:
        result = await work
    except BaseException:
        # the client left: whatever `work` raised on its way out is ours, unless someone else
        # cancelled this task too
        if left and task.uncancel() == 0:
            return True, None
        raise
    finally:
        running = False
        timer.cancel()
        if watcher is not None:
            watcher.remove_done_callback(on_disconnect)
            watcher.cancel()
    if left:  # `work` swallowed the cancellation
        task.uncancel()
        return True, None
    return False, result
