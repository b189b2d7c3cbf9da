"""The embeddings worker as a process: OpenAI `/v1/embeddings` through the official client."""

from __future__ import annotations

import base64

import numpy as np
import openai
import pytest

from endpoints.conftest import MINILM_SLUG, worker_http


def vector(item) -> np.ndarray:
    return np.asarray(item.embedding, dtype=np.float32)


def test_one_string_gives_a_unit_vector_and_real_token_counts(embeddings_worker, tokenizer):
    text = "The lighthouse keeper logged forty-two ships in October."
    res = embeddings_worker.client().embeddings.create(model=MINILM_SLUG, input=text)
    assert res.model == MINILM_SLUG
    assert len(res.data) == 1 and res.data[0].index == 0
    v = vector(res.data[0])
    assert v.shape == (384,)
    assert abs(float(np.linalg.norm(v)) - 1.0) < 1e-4
    expected = len(tokenizer.encode(text, add_special_tokens=False).ids)
    assert res.usage.prompt_tokens == expected == res.usage.total_tokens
    assert expected > 5


def test_a_list_keeps_order_and_meaning(embeddings_worker):
    texts = [
        "A cat is sleeping on the sofa.",
        "The quarterly revenue grew by twelve percent.",
        "A kitten naps on the couch.",
    ]
    res = embeddings_worker.client().embeddings.create(model=MINILM_SLUG, input=texts)
    assert [d.index for d in res.data] == [0, 1, 2]
    cat, revenue, kitten = (vector(d) for d in res.data)
    assert float(cat @ kitten) > float(cat @ revenue) + 0.3
    # The same text alone gives the same vector as inside a batch.
    alone = embeddings_worker.client().embeddings.create(model=MINILM_SLUG, input=texts[2])
    assert np.allclose(vector(alone.data[0]), kitten, atol=1e-5)


def test_base64_is_the_same_vector_as_float(embeddings_worker):
    text = "Base64 carries little-endian float32."
    with worker_http(embeddings_worker) as http:
        floats = http.post("/v1/embeddings", json={"model": MINILM_SLUG, "input": text}).json()
        packed = http.post("/v1/embeddings", json={
            "model": MINILM_SLUG, "input": text, "encoding_format": "base64",
        }).json()
    raw = np.frombuffer(base64.b64decode(packed["data"][0]["embedding"]), dtype="<f4")
    assert np.allclose(raw, np.asarray(floats["data"][0]["embedding"], dtype=np.float32))
    assert packed["usage"] == floats["usage"]
    # The openai client asks for base64 by default and decodes it itself.
    res = embeddings_worker.client().embeddings.create(model=MINILM_SLUG, input=text)
    assert np.allclose(vector(res.data[0]), raw, atol=1e-6)


def test_long_input_counts_every_token(embeddings_worker, tokenizer):
    text = "harbour " * 600  # far past the model's 256-token window
    res = embeddings_worker.client().embeddings.create(model=MINILM_SLUG, input=[text, "short"])
    expected = sum(len(tokenizer.encode(t, add_special_tokens=False).ids) for t in [text, "short"])
    assert res.usage.prompt_tokens == expected
    assert expected > 600


def test_dimensions_of_the_model_are_accepted(embeddings_worker):
    res = embeddings_worker.client().embeddings.create(model=MINILM_SLUG, input="x", dimensions=384)
    assert len(res.data[0].embedding) == 384


@pytest.mark.parametrize(
    ("body", "param", "words"),
    [
        ({"input": "x", "dimensions": 256}, "dimensions", "not supported"),
        ({"input": "x", "dimensions": 0}, "dimensions", ""),
        ({"input": [[1, 2, 3]]}, "input", "token-id"),
        ({"input": []}, "input", ""),
        ({"input": "x" * 50_001}, "input", ""),
        ({"input": ["ok"] * 2049}, "input", ""),
        ({"input": "x", "encoding_format": "int8"}, "encoding_format", ""),
        ({"input": "x", "extra": 1}, "extra", "Unrecognized"),
        ({}, "input", ""),
    ],
)
def test_bad_requests_are_400_envelopes(embeddings_worker, body, param, words):
    with worker_http(embeddings_worker) as http:
        res = http.post("/v1/embeddings", json={"model": MINILM_SLUG, **body})
    assert res.status_code == 400, res.text
    error = res.json()["error"]
    assert error["param"] == param and error["type"] == "invalid_request_error"
    assert words in error["message"]


def test_dimensions_refused_through_the_openai_client(embeddings_worker):
    with pytest.raises(openai.BadRequestError) as caught:
        embeddings_worker.client().embeddings.create(model=MINILM_SLUG, input="x", dimensions=128)
    assert "384" in str(caught.value)


def test_another_model_is_404_and_models_lists_the_slug(embeddings_worker):
    client = embeddings_worker.client()
    with pytest.raises(openai.NotFoundError):
        client.embeddings.create(model="text-embedding-3-small", input="x")
    assert [m.id for m in client.models.list()] == [MINILM_SLUG]


def test_weights_that_do_not_load_are_reported_on_health(tmp_path):
    import subprocess
    import sys
    import time

    import httpx

    from support import free_port, stop_process

    folder = tmp_path / "broken"
    folder.mkdir()
    (folder / "config.yaml").write_text(
        "engine:\n  kind: sentence_transformers\n  weights: package:no_such_weights_package\n"
        f"  slug: {MINILM_SLUG}\n"
    )
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "trestle.runtime", "--model-dir", str(folder), "--port", str(port)],
        stdout=open(tmp_path / "log", "wb"), stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300
        health = None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                res = httpx.get(f"{url}/health", timeout=5)
                health = res.json()
                if health["status"] == "failed":
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        assert res.status_code == 503
        assert health["status"] == "failed" and "no_such_weights_package" in health["error"]
        res = httpx.post(f"{url}/v1/embeddings", json={"model": MINILM_SLUG, "input": "x"})
        assert res.status_code == 503 and res.json()["error"]["code"] == "load_failed"
    finally:
        stop_process(proc)
