"""A model that can stall mid-stream; the test stops its process with SIGSTOP to wedge it."""

import os
import time


def _stalling():
    yield "first "
    time.sleep(10)  # far past runtime.request_timeout: the gateway must not wait for it
    yield "late"


class Model:
    def predict(self, model_input: dict):
        if model_input.get("stall"):
            return _stalling()
        return {"pid": os.getpid()}
