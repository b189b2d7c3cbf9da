"""A model whose process dies on request: the fault the supervisor and proxy must survive."""

import os
import uuid

# Which process answered: a pid alone cannot tell, since a sandboxed worker is pid 2 of its own
# PID namespace every time.
PROCESS = uuid.uuid4().hex


class Model:
    def predict(self, model_input):
        if model_input.get("crash"):
            os._exit(3)
        return {"pid": os.getpid(), "process": PROCESS}
