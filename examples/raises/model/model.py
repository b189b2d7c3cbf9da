from fastapi import HTTPException


class Model:
    def predict(self, model_input):
        kind = model_input.get("kind")
        if kind == "teapot":
            # Raised on purpose: the client gets this status and detail.
            raise HTTPException(status_code=418, detail="I'm a teapot, not a coffee machine")
        if kind == "bug":
            return self._divide(model_input)
        return {"ok": True}

    def _divide(self, model_input):
        # A bug: the client gets a generic 500, the log gets this traceback.
        raise ValueError(f"cannot divide {model_input.get('numerator')} by zero (internal detail)")
