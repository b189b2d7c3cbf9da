"""The engine app in-process: routes answer 503 while the model loads, then serve."""

import time

from starlette.testclient import TestClient

from trestle.deploy.config import ModelConfig
from trestle.engine.app import build_app
from trestle.engine.builtin import SMOLLM2_SLUG, builtin_config

from support import EXAMPLES


def test_routes_are_503_until_the_model_is_loaded():
    config = ModelConfig.from_dict(builtin_config(threads=1, max_batch=1, context_length=128))
    app = build_app(config, EXAMPLES)
    with TestClient(app) as client:
        # loading takes a while (model file, vocabulary tables); the server answers at once
        health = client.get("/health")
        models = client.get("/v1/models")
        assert (health.status_code, health.json()) == (503, {"status": "loading"})
        assert models.status_code == 503
        assert models.json()["error"]["type"] == "service_unavailable_error"
        assert "loading" in models.json()["error"]["message"]
        deadline = time.monotonic() + 60
        while client.get("/health").status_code != 200:
            assert time.monotonic() < deadline, "the model never became ready"
            time.sleep(0.05)
        assert client.get("/v1/models").json()["data"][0]["id"] == SMOLLM2_SLUG
        r = client.post("/v1/completions", json={"model": SMOLLM2_SLUG, "prompt": "Hello", "max_tokens": 2})
        assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] == 2
