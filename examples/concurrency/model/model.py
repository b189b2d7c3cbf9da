import threading
import time


class Model:
    """Counts requests between preprocess and postprocess: one request holds one slot throughout."""

    def __init__(self, **kwargs):
        self._lock = threading.Lock()
        self._active = 0
        self._max_seen = 0

    def preprocess(self, model_input):
        with self._lock:
            self._active += 1
            self._max_seen = max(self._max_seen, self._active)
        return model_input

    def predict(self, model_input):
        time.sleep(model_input.get("seconds", 0.2))  # stands in for inference
        return model_input

    def postprocess(self, model_output):
        with self._lock:
            self._active -= 1
            return {"max_concurrent": self._max_seen}
