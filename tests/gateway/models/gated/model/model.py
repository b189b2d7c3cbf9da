"""A streaming model the tests can steer: it yields `first`, then waits for a gate file before
yielding `second`. If the client goes away first, it records that in a file (whether it noticed
through `request.is_disconnected()` or because the runtime closed the generator). Used to show
that the gateway relays chunks without buffering and passes disconnects through to the worker."""

import asyncio
from pathlib import Path

from fastapi import Request


class Model:
    async def predict(self, model_input: dict, request: Request):
        gate = Path(model_input["gate"])
        seen = Path(model_input["disconnect_file"])
        finished = False
        try:
            yield "first\n"
            for _ in range(1200):
                if gate.exists():
                    yield "second\n"
                    finished = True
                    return
                if await request.is_disconnected():
                    return
                await asyncio.sleep(0.05)
        finally:
            if not finished:
                seen.write_text("disconnected")
