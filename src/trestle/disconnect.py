"""Racing a piece of work against the client leaving: the one helper for `http.disconnect`.

    left, result = await race_disconnect(receive, work())

runs `work` until it ends or the client disconnects, whichever comes first. When the client
leaves, `work` is cancelled (so whatever it holds — an upstream connection, an engine sequence, a
generator — is released by its own `finally`) and `left` is True. When `work` ends first, its
result is returned, or its exception raised. Used by the gateway's proxy, the worker's streams and
the engine's non-streaming answers; the request body must already have been read.
"""

from __future__ import annotations

import asyncio
from typing import Awaitable, TypeVar

from starlette.types import Receive

T = TypeVar("T")


async def until_disconnect(receive: Receive) -> None:
    """Return when the client disconnects."""
    while (await receive())["type"] != "http.disconnect":
        pass


async def race_disconnect(receive: Receive, work: Awaitable[T]) -> tuple[bool, T | None]:
    task = asyncio.ensure_future(work)
    gone = asyncio.ensure_future(until_disconnect(receive))
    try:
        await asyncio.wait({task, gone}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        # work that ended in the same turn as the disconnect counts as done, not as abandoned
        left = not task.done() and gone.done() and not gone.cancelled() and gone.exception() is None
        task.cancel()
        gone.cancel()
        await asyncio.gather(task, gone, return_exceptions=True)
    if left:
        return True, None
    if task.cancelled():
        raise asyncio.CancelledError
    return False, task.result()
