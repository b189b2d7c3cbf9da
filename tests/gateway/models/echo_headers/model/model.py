"""Answers with the HTTP headers its request arrived with: shows what the gateway passes on to
model code (and what it keeps for itself, such as the caller's credentials)."""

from fastapi import Request


class Model:
    def predict(self, model_input, request: Request):
        return {"headers": dict(request.headers)}
