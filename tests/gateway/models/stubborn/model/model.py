"""A model whose worker ignores SIGTERM and SIGINT once loaded: it outlives a gateway killed with
SIGKILL (the signal a worker gets when its gateway dies is SIGTERM), so the next gateway must
stop it."""

import signal


class Model:
    async def load(self):  # async: runs on the worker's main thread, where signals are set
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)

    def predict(self, model_input):
        return {"stubborn": True}
