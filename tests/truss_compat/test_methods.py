"""The Model methods Truss added after chat_completions: `embeddings`, `messages` and
`responses`, served at their OpenAI / Anthropic paths under `sync/`."""

from __future__ import annotations

import httpx
import openai

MODEL = """
    class Model:
        def embeddings(self, model_input):
            texts = model_input["input"]
            return {"object": "list",
                    "data": [{"object": "embedding", "index": i, "embedding": [float(len(t))]}
                             for i, t in enumerate(texts)]}

        def messages(self, model_input):
            text = model_input["messages"][-1]["content"]
            for word in text.split():
                yield f"event: content_block_delta\\ndata: {word}\\n\\n"

        async def responses(self, model_input):
            return {"object": "response", "output_text": model_input["input"][::-1]}
"""


def test_embeddings_messages_and_responses_are_served_under_sync(server, folder, push):
    result = push(folder("more-methods", {}, MODEL))
    assert result["deployment"]["status"] == "active", result["deployment"]["error"]
    base = f"/model/{result['model']['id']}/production/sync/v1"
    with server.client() as http:
        emb = http.post(f"{base}/embeddings", json={"input": ["ab", "abcd"]})
        assert emb.status_code == 200, emb.text
        assert [d["embedding"] for d in emb.json()["data"]] == [[2.0], [4.0]]

        msg = http.post(f"{base}/messages", json={"messages": [{"role": "user", "content": "hi there"}]})
        assert msg.status_code == 200 and msg.headers["content-type"].startswith("text/event-stream")
        assert msg.text == ("event: content_block_delta\ndata: hi\n\n"
                            "event: content_block_delta\ndata: there\n\n")

        resp = http.post(f"{base}/responses", json={"input": "abc"})
        assert resp.status_code == 200 and resp.json()["output_text"] == "cba"

        # no predict on this model: a Truss-shaped 404 naming it
        missing = http.post(f"/model/{result['model']['id']}/production/predict", json={})
        assert missing.status_code == 404 and "does not implement predict" in missing.json()["error"]


def test_the_methods_are_reachable_through_the_bridge(server, folder, push):
    result = push(folder("bridged-methods", {}, MODEL))
    assert result["deployment"]["status"] == "active", result["deployment"]["error"]
    model = f"baseten/{result['model']['id']}"
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)
    emb = client.embeddings.create(model=model, input=["ab", "abcd"], encoding_format="float")
    assert [d.embedding for d in emb.data] == [[2.0], [4.0]]
    with server.client() as http:
        resp = http.post("/v1/responses", json={"model": model, "input": "abc"})
        assert resp.status_code == 200 and resp.json()["output_text"] == "cba"
        by_field = http.post("/v1/responses", json={"input": "xyz",
                                                   "baseten": {"model_id": result["model"]["id"]}})
        assert by_field.status_code == 200 and by_field.json()["output_text"] == "zyx"
        msg = http.post("/v1/messages", json={"model": model, "max_tokens": 5,
                                              "messages": [{"role": "user", "content": "hi there"}]})
        assert msg.status_code == 200, msg.text
        assert msg.text == ("event: content_block_delta\ndata: hi\n\n"
                            "event: content_block_delta\ndata: there\n\n")


def test_a_method_the_model_lacks_is_a_clear_400_on_the_bridge(server, folder, push):
    result = push(folder("predict-only", {}, """
        class Model:
            def predict(self, model_input):
                return "ok"
    """))
    model = f"baseten/{result['model']['id']}"
    with server.client() as http:
        for path in ("/v1/embeddings", "/v1/responses"):
            resp = http.post(path, json={"model": model, "input": "abc"})
            assert resp.status_code == 400, resp.text
            error = resp.json()["error"]
            assert f"does not serve {path}" in error["message"] and "`" in error["message"]
            assert error["param"] == "model"
        unnamed = http.post("/v1/responses", json={"model": "gpt-x", "input": "abc"})
        assert unnamed.status_code == 400
        assert "served only by deployments whose Model defines `responses`" in unnamed.json()["error"]["message"]


def test_the_callers_key_does_not_reach_a_messages_method(server, folder, push):
    result = push(folder("header-probe", {}, """
        from fastapi import Request

        class Model:
            def messages(self, model_input, request: Request):
                return {"headers": dict(request.headers)}
    """))
    assert result["deployment"]["status"] == "active", result["deployment"]["error"]
    key = server.api_key or "tr_anything_secret"  # (with auth off the gateway checks no key, still drops it)
    for key_header in ({"x-api-key": key}, {"Authorization": f"Bearer {key}"}):
        resp = httpx.post(f"{server.url}/v1/messages", timeout=60, headers={**key_header, "x-probe": "yes"},
                          json={"model": f"baseten/{result['model']['id']}", "max_tokens": 5,
                                "messages": [{"role": "user", "content": "hi"}]})
        assert resp.status_code == 200, resp.text
        seen = resp.json()["headers"]
        assert seen["x-probe"] == "yes"  # the caller's headers reach the model, but not its key
        assert "x-api-key" not in seen and "authorization" not in seen
