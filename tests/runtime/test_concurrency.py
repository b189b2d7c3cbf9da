"""runtime.predict_concurrency bounds user code: pre + predict + post hold one slot."""

from __future__ import annotations

import asyncio

import httpx

from support import EXAMPLES


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


GATED_CALLS = """
    import os, time

    class Model:
        def predict(self, model_input):
            with open(os.environ["CALLS_LOG"], "a") as f:
                f.write(model_input["name"] + "\\n")
            while model_input.get("wait") and not os.path.exists(os.environ["CALLS_GATE"]):
                time.sleep(0.02)
            return model_input["name"]
"""


def test_a_request_whose_client_left_while_queued_is_not_run(workers, model_folder, tmp_path):
    calls, gate = tmp_path / "calls", tmp_path / "gate"
    worker = workers.start(model_folder(GATED_CALLS), env={"CALLS_LOG": str(calls), "CALLS_GATE": str(gate)})

    async def scenario():
        async with httpx.AsyncClient(base_url=worker.url, timeout=30) as a, \
                httpx.AsyncClient(base_url=worker.url, timeout=30) as b:
            holder = asyncio.create_task(a.post("/predict", json={"name": "holder", "wait": True}))
            while not calls.exists():
                await asyncio.sleep(0.02)
            queued = asyncio.create_task(b.post("/predict", json={"name": "queued"}))
            await asyncio.sleep(1.0)  # let the queued request reach the worker; then its client leaves
            queued.cancel()
            await asyncio.gather(queued, return_exceptions=True)
            await asyncio.sleep(0.3)
            gate.touch()
            assert (await holder).json() == "holder"
            return (await a.post("/predict", json={"name": "after"})).json()

    assert asyncio.run(scenario()) == "after"
    assert calls.read_text().split() == ["holder", "after"]
    assert "client left while waiting for a slot; predict not run" in worker.log()
