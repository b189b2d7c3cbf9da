"""Echoes the path and query the worker got; streams that break mid-way on request."""

import json

from starlette.requests import Request


def _broken(chunks):
    yield from chunks
    raise RuntimeError("the stream broke on purpose")


class Model:
    def predict(self, model_input: dict, request: Request):
        if model_input.get("mode") == "break":
            return _broken(["one ", "two "])
        return {
            "path": request.url.path,
            "raw_path": request.scope.get("raw_path", b"").decode("latin-1"),
            "query": request.url.query,
        }

    def chat_completions(self, model_input: dict, request: Request):
        chunk = {"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"content": "hi"}}]}
        return _broken([f"data: {json.dumps(chunk)}\n\n"])
