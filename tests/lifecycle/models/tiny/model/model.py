"""A tiny, fast model for lifecycle tests: answers at once, streams, holds (for a time, or until
the test releases it), or dies on request."""

import asyncio
import os
import uuid

VERSION = "v1"  # tests push copies with another version here
# Which process answered: a sandboxed worker is pid 2 of its own namespace every time.
PROCESS = uuid.uuid4().hex


class Model:
    async def predict(self, model_input):
        if model_input.get("crash"):
            print(f"crashing on purpose in process {PROCESS}", flush=True)
            os._exit(3)
        if model_input.get("gate"):  # hold until the test creates HOME/release (2 minutes at most)
            release = os.path.join(os.environ["HOME"], "release")
            for _ in range(1200):
                if os.path.exists(release):
                    break
                await asyncio.sleep(0.1)
        hold = min(float(model_input.get("hold", 0)), 30.0)
        if hold:
            await asyncio.sleep(hold)
        if model_input.get("stream"):
            return self._stream(int(model_input["stream"]))
        return {"version": VERSION, "process": PROCESS}

    async def _stream(self, pieces):
        for i in range(pieces):
            await asyncio.sleep(0.005)
            yield f"{VERSION}:{i} "
