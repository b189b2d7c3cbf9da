"""A deployment's requirements win over the packages trestle itself uses: a model that pins
`pydantic<2` gets pydantic 1 in its worker, and the worker still serves it."""

from __future__ import annotations

PYDANTIC_V1_MODEL = """
    import sys

    import pydantic
    from pydantic import BaseModel, validator


    class Greeting(BaseModel):
        name: str
        times: int = 1

        @validator("name")  # pydantic 1 only (2 calls it field_validator)
        def not_blank(cls, value):
            if not value.strip():
                raise ValueError("must not be blank")
            return value


    class Answer(BaseModel):
        pydantic: str
        words: list


    class Model:
        def predict(self, model_input: Greeting) -> Answer:
            return Answer(pydantic=pydantic.VERSION, words=["hello " + model_input.name] * model_input.times)

        def chat_completions(self, model_input: dict):
            for word in ("a", "b"):
                yield {"choices": [{"delta": {"content": word}}], "pydantic": pydantic.VERSION}
"""


def test_a_model_pinning_pydantic_1_serves(server, folder, push):
    result = push(folder("pydantic-v1", {"requirements": ["pydantic==1.10.26"]}, PYDANTIC_V1_MODEL))
    dep = result["deployment"]
    assert dep["status"] == "active", dep["error"]
    base = f"/model/{result['model']['id']}/deployment/{dep['id']}"
    with server.client() as http:
        resp = http.post(f"{base}/predict", json={"name": "Ada", "times": 2})
        assert resp.status_code == 200, resp.text
        assert resp.json() == {"pydantic": "1.10.26", "words": ["hello Ada", "hello Ada"]}

        bad = http.post(f"{base}/predict", json={"name": "  "})
        assert bad.status_code == 400, bad.text
        assert "name" in bad.text and "must not be blank" in bad.text

        stream = http.post(f"{base}/sync/v1/chat/completions", json={"messages": []})
        assert stream.status_code == 200, stream.text
        assert stream.text.count('"pydantic":"1.10.26"') == 2
