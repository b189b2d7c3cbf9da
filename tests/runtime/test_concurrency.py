"""runtime.predict_concurrency bounds user code: pre + predict + post hold one slot."""

from __future__ import annotations

import asyncio

import httpx

from .conftest import EXAMPLES


def test_predict_concurrency_bounds_the_whole_pipeline(workers):
    worker = workers.start(EXAMPLES / "concurrency")  # predict_concurrency: 2

    async def burst():
        async with httpx.AsyncClient(base_url=worker.url, timeout=30) as c:
            calls = [c.post("/predict", json={"seconds": 0.5}) for _ in range(6)]
            return await asyncio.gather(*calls)

    answers = [r.json()["max_concurrent"] for r in asyncio.run(burst())]
    # Never more than 2 requests between preprocess and postprocess, and 2 did run together.
    assert max(answers) == 2, answers


ASYNC_COUNTER = """
    import asyncio

    class Model:
        def __init__(self):
            self.active = self.max_seen = 0

        async def predict(self, model_input):
            self.active += 1
            self.max_seen = max(self.max_seen, self.active)
            await asyncio.sleep(0.3)
            self.active -= 1
            return self.max_seen
"""


def test_async_methods_are_bounded_too(workers, model_folder):
    worker = workers.start(model_folder(ASYNC_COUNTER, {"runtime": {"predict_concurrency": 3}}))

    async def burst():
        async with httpx.AsyncClient(base_url=worker.url, timeout=30) as c:
            return await asyncio.gather(*[c.post("/predict", json={}) for _ in range(9)])

    assert max(r.json() for r in asyncio.run(burst())) == 3
