"""Stops work when the client goes away.

Writes what it saw, one line per event, to the file named by $REQUEST_AWARE_LOG (if set).
"""

import asyncio
import logging
import os

from fastapi import Request

log = logging.getLogger(__name__)


def record(event):
    log.info(event)
    path = os.environ.get("REQUEST_AWARE_LOG")
    if path:
        with open(path, "a") as f:
            f.write(event + "\n")


class Model:
    async def predict(self, model_input, request: Request):
        steps = model_input.get("steps", 100)
        if model_input.get("stream"):
            return self._ticks(steps)
        # A long job that checks for a disconnect between steps and gives up early.
        record("started")
        for step in range(steps):
            if await request.is_disconnected():
                record(f"disconnected after {step} steps")
                return None
            await asyncio.sleep(0.05)
        return {"steps": steps}

    async def _ticks(self, steps):
        sent = 0
        try:
            for sent in range(steps):
                yield f"tick {sent}\n"
                if sent == 0:
                    record("started")
                await asyncio.sleep(0.05)
        finally:
            # Runs when the stream ends, and also when trestle closes it because the client left.
            record(f"stream closed after {sent + 1} chunks")
