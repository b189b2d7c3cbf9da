"""A model whose process dies on request: the fault the supervisor and proxy must survive."""

import os


class Model:
    def predict(self, model_input):
        if model_input.get("crash"):
            os._exit(3)
        return {"pid": os.getpid()}
