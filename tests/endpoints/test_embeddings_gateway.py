"""`/v1/embeddings` on the gateway: the built-in embeddings Model API of `trestle serve`, by its
slug, through the official openai client."""

from __future__ import annotations

import base64

import httpx
import numpy as np
import openai
import pytest

from endpoints.conftest import MINILM_SLUG
from endpoints.test_datasets_api import embeddings_ready
from support import SLUG


@pytest.fixture(scope="module")
def client(server) -> openai.OpenAI:
    embeddings_ready(server)
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key=server.api_key, max_retries=0,
                         timeout=300)


def test_listed_in_models(client):
    assert {MINILM_SLUG, SLUG} <= {m.id for m in client.models.list().data}
    assert client.models.retrieve(MINILM_SLUG).id == MINILM_SLUG


def test_a_list_of_inputs_as_base64_and_as_floats(server, client):
    texts = ["A cat is sleeping on the sofa.", "Revenue grew by twelve percent.",
             "A kitten naps on the couch."]
    res = client.embeddings.create(model=MINILM_SLUG, input=texts)  # the client asks for base64
    assert res.model == MINILM_SLUG and [d.index for d in res.data] == [0, 1, 2]
    cat, revenue, kitten = (np.asarray(d.embedding, dtype=np.float32) for d in res.data)
    assert cat.shape == (384,) and abs(float(np.linalg.norm(cat)) - 1) < 1e-4
    assert float(cat @ kitten) > float(cat @ revenue) + 0.3
    assert res.usage.prompt_tokens == res.usage.total_tokens > 10

    floats = client.embeddings.create(model=MINILM_SLUG, input=texts[0], encoding_format="float")
    assert np.allclose(np.asarray(floats.data[0].embedding, dtype=np.float32), cat, atol=1e-5)
    raw = httpx.post(f"{server.url}/v1/embeddings", headers=server.headers, timeout=300, json={
        "model": MINILM_SLUG, "input": texts[0], "encoding_format": "base64"}).json()
    packed = np.frombuffer(base64.b64decode(raw["data"][0]["embedding"]), dtype="<f4")
    assert np.allclose(packed, cat, atol=1e-5)
    assert client.embeddings.create(model=MINILM_SLUG, input="x", dimensions=384).data


def test_errors(client, server):
    with pytest.raises(openai.BadRequestError) as e:
        client.embeddings.create(model=MINILM_SLUG, input="x", dimensions=128)
    assert e.value.body["param"] == "dimensions"
    with pytest.raises(openai.NotFoundError) as e:
        client.embeddings.create(model="acme/no-such-embedder", input="x")
    assert e.value.body["code"] == "model_not_found"
    with pytest.raises(openai.BadRequestError) as e:
        client.embeddings.create(model=SLUG, input="x")  # an LLM
    assert e.value.body["code"] == "wrong_model_kind"
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=MINILM_SLUG, messages=[{"role": "user", "content": "hi"}])
    assert e.value.body["code"] == "wrong_model_kind"
    no_model = httpx.post(f"{server.url}/v1/embeddings", headers=server.headers, json={"input": "x"})
    assert no_model.status_code == 400 and no_model.json()["error"]["param"] == "model"
    anonymous = httpx.post(f"{server.url}/v1/embeddings", json={"model": MINILM_SLUG, "input": "x"})
    assert anonymous.status_code == 401
