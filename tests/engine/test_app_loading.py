"""The engine app in-process: routes answer 503 while the model loads, then serve.

The model load is held until the test has seen the loading state: the real `LlamaModel.load`
runs, but only once the test opens the gate, so "loading" is observed for sure, not by timing.
"""

import threading

import pytest
from starlette.testclient import TestClient

from trestle.deploy.config import ModelConfig
from trestle.engine.app import build_app
from trestle.engine.builtin import SMOLLM2_SLUG, builtin_config
from trestle.engine.llama import LlamaModel

from support import EXAMPLES, wait_for


@pytest.fixture
def gate(monkeypatch) -> threading.Event:
    """Hold `LlamaModel.load` until the returned event is set (then load for real)."""
    opened = threading.Event()
    real_load = LlamaModel.load

    def held_load(*args, **kwargs):
        if not opened.wait(120):
            raise RuntimeError("the test never opened the load gate")
        return real_load(*args, **kwargs)

    monkeypatch.setattr(LlamaModel, "load", staticmethod(held_load))
    return opened


def test_routes_are_503_until_the_model_is_loaded(gate):
    config = ModelConfig.from_dict(builtin_config(threads=1, max_batch=1, context_length=128))
    app = build_app(config, EXAMPLES)
    with TestClient(app) as client:
        # the server answers while the model is still loading
        health = client.get("/health")
        models = client.get("/v1/models")
        completion = client.post("/v1/completions", json={"model": SMOLLM2_SLUG, "prompt": "Hello"})
        assert (health.status_code, health.json()) == (503, {"status": "loading"})
        for res in (models, completion):
            assert res.status_code == 503
            assert res.json()["error"]["type"] == "service_unavailable_error"
            assert "loading" in res.json()["error"]["message"]
        gate.set()
        wait_for(lambda: client.get("/health").status_code == 200, "the model to become ready")
        assert client.get("/health").json()["status"] == "ready"
        assert client.get("/v1/models").json()["data"][0]["id"] == SMOLLM2_SLUG
        r = client.post("/v1/completions", json={"model": SMOLLM2_SLUG, "prompt": "Hello", "max_tokens": 2})
        assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] == 2
