"""Engine admission: free slots fill first; only requests that wait count against the queue."""

from __future__ import annotations

import asyncio
import time

import httpx

from support import SLUG

CLIENTS = 60


def wait_for(predicate, what: str, timeout: float = 120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


async def open_streams(url: str, n: int) -> list[int]:
    """Start `n` long streams at once; the status of each once all have answered, then close."""
    body = {"model": SLUG, "messages": [{"role": "user", "content": "Tell me a long story."}],
            "max_tokens": 400, "ignore_eos": True, "stream": True}
    statuses: list[int] = []
    everyone = asyncio.Event()
    limits = httpx.Limits(max_connections=n, max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=url, timeout=300, limits=limits) as client:

        async def one() -> None:
            async with client.stream("POST", "/v1/chat/completions", json=body) as r:
                statuses.append(r.status_code)
                if len(statuses) == n:
                    everyone.set()
                await everyone.wait()  # hold the stream (and its slot) until all have an answer

        await asyncio.gather(*(one() for _ in range(n)))
    return statuses


def test_sixty_simultaneous_requests_fill_the_slots_and_the_queue(engine):
    health = engine.health()
    capacity = health["max_batch"] + health["max_queue"]  # 4 + 16
    assert capacity == 20 and health["active_sequences"] == 0
    statuses = asyncio.run(open_streams(engine.url, CLIENTS))
    assert statuses.count(200) == capacity, statuses
    assert statuses.count(429) == CLIENTS - capacity
    wait_for(lambda: engine.health()["active_sequences"] == 0 and engine.health()["waiting_requests"] == 0,
             "the closed streams to be freed")
