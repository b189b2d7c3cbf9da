"""A model that falls ill on request: after a predict with {"sick": true} its is_healthy()
returns False (or raises, with {"sick": "raise"}). It answers with a token of its own (inside
a sandbox every worker is pid 2), so a test sees when it was restarted."""

import uuid


class Model:
    def __init__(self, **kwargs):
        self.sick = None
        self.instance = uuid.uuid4().hex

    def predict(self, model_input):
        if model_input.get("sick"):
            self.sick = model_input["sick"]
        return {"instance": self.instance, "sick": self.sick}

    async def is_healthy(self) -> bool:
        if self.sick == "raise":
            raise RuntimeError("the disk is full")
        return not self.sick
