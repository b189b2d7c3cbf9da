"""A model whose load() waits until the test lets it finish: a file `go` in its HOME (the
deployment's own writable folder), so a test can hold a deployment in `deploying` as long as it
needs, without timing anything."""

import os
import time
from pathlib import Path


class Model:
    def load(self):
        gate = Path(os.environ["HOME"]) / "go"
        deadline = time.monotonic() + 300
        while not gate.exists() and time.monotonic() < deadline:
            time.sleep(0.02)

    def predict(self, model_input):
        return {"loaded": True}
