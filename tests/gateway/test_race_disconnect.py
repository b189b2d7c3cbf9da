"""`race_disconnect`: the work or the client leaving, whichever comes first (no server needed:
the ASGI `receive` is driven by the test)."""

from __future__ import annotations

import asyncio

import pytest

from trestle.disconnect import race_disconnect


class Client:
    """An ASGI `receive` whose client leaves when the test says so."""

    def __init__(self) -> None:
        self.gone = asyncio.Event()

    async def receive(self) -> dict:
        await self.gone.wait()
        return {"type": "http.disconnect"}


def test_the_result_of_work_that_ends_first():
    async def scenario():
        client = Client()
        assert await race_disconnect(client.receive, asyncio.sleep(0, "answer")) == (False, "answer")
        await asyncio.sleep(0)  # the task goes on without a pending cancellation
    asyncio.run(scenario())


def test_the_error_of_work_that_fails_first():
    async def failing():
        raise ValueError("boom")

    async def scenario():
        with pytest.raises(ValueError, match="boom"):
            await race_disconnect(Client().receive, failing())
    asyncio.run(scenario())


def test_the_client_leaving_cancels_the_work():
    async def scenario():
        client = Client()
        started, released = asyncio.Event(), asyncio.Event()

        async def work():
            started.set()
            try:
                await asyncio.Event().wait()
            finally:
                released.set()

        async def leave():
            await started.wait()
            client.gone.set()

        leaving = asyncio.ensure_future(leave())
        assert await race_disconnect(client.receive, work()) == (True, None)
        assert released.is_set()
        await leaving
        assert asyncio.current_task().cancelling() == 0  # nothing left pending on the caller
        await asyncio.sleep(0)
    asyncio.run(scenario())


def test_cancelling_the_caller_is_not_mistaken_for_the_client_leaving():
    async def scenario():
        client = Client()
        started = asyncio.Event()

        async def work():
            started.set()
            await asyncio.Event().wait()

        caller = asyncio.ensure_future(race_disconnect(client.receive, work()))
        await started.wait()
        caller.cancel()
        with pytest.raises(asyncio.CancelledError):
            await caller
    asyncio.run(scenario())


def test_work_that_ends_quickly_starts_no_watcher():
    """The common case costs no task: the watcher starts only for work still running after
    `WATCH_AFTER_S`, and a client that left before then is still seen."""
    async def scenario():
        calls = 0

        async def receive() -> dict:
            nonlocal calls
            calls += 1
            return {"type": "http.disconnect"}  # the client has already left

        assert await race_disconnect(receive, asyncio.sleep(0, "answer")) == (False, "answer")
        assert asyncio.all_tasks() == {asyncio.current_task()}
        await asyncio.sleep(0)
        assert calls == 0
        assert await race_disconnect(receive, asyncio.Event().wait()) == (True, None)
        assert calls == 1
    asyncio.run(scenario())
