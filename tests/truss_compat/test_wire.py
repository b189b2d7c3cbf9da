"""The Truss routes answer as Truss does: errors as `{"error": "..."}` with Baseten's error
headers (the OpenAI routes keep the OpenAI envelope), msgpack bodies, a stream gathered into one
JSON answer on request, and the schema route."""

from __future__ import annotations

import msgpack
import pytest

TYPED_MODEL = """
    from fastapi import HTTPException
    from pydantic import BaseModel


    class Input(BaseModel):
        text: str
        fail: str = ""


    class Output(BaseModel):
        upper: str


    class Model:
        def predict(self, model_input: Input) -> Output:
            if model_input.fail == "http":
                raise HTTPException(status_code=418, detail="short and stout")
            if model_input.fail == "bug":
                raise ValueError("boom")
            return Output(upper=model_input.text.upper())
"""

STREAMING_MODEL = """
    class Model:
        def predict(self, model_input):
            for piece in ("a", "b", "c"):
                yield piece
"""


@pytest.fixture(scope="module")
def models(server, tmp_path_factory):
    import json
    import textwrap

    out = {}
    for name, code in (("typed", TYPED_MODEL), ("streaming", STREAMING_MODEL)):
        root = tmp_path_factory.mktemp(name) / name
        (root / "model").mkdir(parents=True)
        (root / "config.yaml").write_text(json.dumps({"model_name": name}))
        (root / "model" / "model.py").write_text(textwrap.dedent(code))
        result = server.push(root)
        assert result["deployment"]["status"] == "active", result["deployment"]["error"]
        out[name] = f"/model/{result['model']['id']}/production"
    return out


def truss_error(resp, status, source, code) -> str:
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert set(body) == {"error"} and isinstance(body["error"], str), body
    assert resp.headers["x-baseten-error-source"] == source
    assert resp.headers["x-baseten-error-code"] == code
    return body["error"]


def test_errors_on_truss_routes_take_truss_shape_and_headers(server, models):
    base = models["typed"]
    with server.client() as http:
        message = truss_error(http.post(f"{base}/predict", json={"nope": 1}), 400, "04", "700")
        assert "text" in message
        message = truss_error(http.post(f"{base}/predict", json={"text": "x", "fail": "http"}),
                              418, "04", "700")
        assert message == "short and stout"
        message = truss_error(http.post(f"{base}/predict", json={"text": "x", "fail": "bug"}),
                              500, "04", "600")
        assert "boom" not in message and "internal error" in message
        # the gateway's own errors on these routes: the same shape, from the edge
        truss_error(http.post("/model/nosuchmodel/production/predict", json={}), 404, "01", "700")
        # the OpenAI routes keep the OpenAI envelope
        openai = http.post(f"{base}/sync/v1/chat/completions", json={"messages": []})
        assert openai.status_code == 404 and "chat_completions" in openai.json()["error"]["message"]
        assert "x-baseten-error-source" not in openai.headers


def test_schema_route_from_pydantic_annotations(server, models):
    with server.client() as http:
        resp = http.get(f"{models['typed']}/sync/v1/models/model/schema")
        assert resp.status_code == 200, resp.text
        body = resp.json()
        assert body["input_schema"]["required"] == ["text"]
        assert set(body["output_schema"]["properties"]) == {"upper"}
        assert body["supports_streaming"] is False
        missing = http.get(f"{models['streaming']}/sync/v1/models/model/schema")
        assert truss_error(missing, 404, "04", "600") == "No schema found"


def test_msgpack_in_and_out(server, models):
    with server.client() as http:
        resp = http.post(f"{models['typed']}/predict", content=msgpack.packb({"text": "hi"}),
                         headers={"content-type": "application/octet-stream",
                                  "accept": "application/octet-stream"})
        assert resp.status_code == 200, resp.text
        assert resp.headers["content-type"] == "application/octet-stream"
        assert msgpack.unpackb(resp.content) == {"upper": "HI"}
        # msgpack in, JSON out (no Accept)
        resp = http.post(f"{models['typed']}/predict", content=msgpack.packb({"text": "yo"}),
                         headers={"content-type": "application/octet-stream"})
        assert resp.json() == {"upper": "YO"}
        bad = http.post(f"{models['typed']}/predict", content=b"\xc1",
                        headers={"content-type": "application/octet-stream"})
        assert "not valid msgpack" in truss_error(bad, 400, "04", "700")


def test_a_stream_asked_for_as_json_is_gathered(server, models):
    with server.client() as http:
        streamed = http.post(f"{models['streaming']}/predict", json={})
        assert streamed.status_code == 200 and streamed.text == "abc"
        assert streamed.headers["content-type"].startswith("text/plain")
        gathered = http.post(f"{models['streaming']}/predict", json={},
                             headers={"accept": "application/json"})
        assert gathered.status_code == 200, gathered.text
        assert gathered.headers["content-type"] == "application/json"
        assert gathered.json() == "abc"
