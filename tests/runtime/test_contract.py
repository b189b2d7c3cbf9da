"""The Model class contract: __init__ arguments, definition errors that fail the load."""

from __future__ import annotations

import json

import pytest

from support import EXAMPLES

from .conftest import assert_truss_error


def test_init_gets_everything_with_kwargs(workers, model_folder):
    source = """
        class Model:
            def __init__(self, **kwargs):
                self.kwargs = kwargs

            def predict(self, model_input):
                k = self.kwargs
                return {
                    "names": sorted(k),
                    "model_name": k["config"]["model_name"],
                    "data_dir": k["data_dir"].name,
                    "environment": k["environment"],
                    "secrets": sorted(k["secrets"]),
                }
    """
    worker = workers.start(model_folder(source, {"model_name": "kw"}), "--environment", "staging")
    with worker.client() as c:
        got = c.post("/predict", json={}).json()
    assert got == {
        "names": ["config", "data_dir", "environment", "secrets"],
        "model_name": "kw",
        "data_dir": "data",
        "environment": {"name": "staging"},
        "secrets": [],
    }


def test_init_gets_only_what_it_names(workers, model_folder):
    source = """
        class Model:
            def __init__(self, environment, config=None):
                self.got = (environment, config["model_name"])

            def predict(self, model_input):
                return list(self.got)
    """
    worker = workers.start(model_folder(source, {"model_name": "named"}))
    with worker.client() as c:
        assert c.post("/predict", json={}).json() == [None, "named"]


def test_secrets_and_environment_variables(workers, tmp_path):
    secrets_file = tmp_path / "secrets.json"
    secrets_file.write_text('{"webhook_token": "s3cret-value-123"}')
    worker = workers.start(
        EXAMPLES / "secrets_env", "--secrets-file", str(secrets_file), "--environment", "production"
    )
    assert not secrets_file.exists()
    with worker.client() as c:
        good = c.post("/predict", json={"token": "s3cret-value-123"}).json()
        bad = c.post("/predict", json={"token": "guess"}).json()
    assert good == {"model": "secrets-env", "style": "formal", "environment": "production", "authorized": True}
    assert bad["authorized"] is False
    assert "s3cret-value-123" not in worker.log()


BROKEN = {
    "postprocess with a generator predict": (
        """
        class Model:
            def predict(self, model_input):
                yield "a"

            def postprocess(self, model_output):
                return model_output
        """,
        "Model.postprocess cannot be used with a generator predict",
    ),
    "predict that is not callable": (
        """
        class Model:
            predict = 42
        """,
        "Model.predict must be a method",
    ),
    "load that yields": (
        """
        class Model:
            def load(self):
                yield

            def predict(self, model_input):
                return 1
        """,
        "Model.load must not yield",
    ),
    "async load that yields": (
        """
        class Model:
            async def load(self):
                yield

            def predict(self, model_input):
                return 1
        """,
        "Model.load must not yield",
    ),
    "no endpoint method": (
        """
        class Model:
            def load(self):
                pass
        """,
        "defines none of predict, chat_completions, completions",
    ),
    "preprocess that yields": (
        """
        class Model:
            def preprocess(self, model_input):
                yield model_input

            def predict(self, model_input):
                return 1
        """,
        "Model.preprocess must return its result, not yield",
    ),
    "predict with an extra required parameter": (
        """
        class Model:
            def predict(self, model_input, temperature):
                return 1
        """,
        "requires a parameter 'temperature'",
    ),
    "__init__ asking for an unknown argument": (
        """
        class Model:
            def __init__(self, tokenizer):
                pass

            def predict(self, model_input):
                return 1
        """,
        "__init__ requires 'tokenizer', which trestle does not provide",
    ),
    "wrong class name": (
        """
        class MyModel:
            def predict(self, model_input):
                return 1
        """,
        "defines no 'Model'",
    ),
    "import error": (
        """
        import not_a_real_module_xyz
        """,
        "ModuleNotFoundError: No module named 'not_a_real_module_xyz'",
    ),
}


@pytest.mark.parametrize("case", list(BROKEN))
def test_definition_errors_fail_the_load(workers, model_folder, case):
    source, expected = BROKEN[case]
    worker = workers.start(model_folder(source), wait="settled")
    health = worker.health()
    assert health.status_code == 503
    assert health.json()["status"] == "failed"
    assert expected in health.json()["error"]


RETURNS_AND_REQUESTS = """
    import numpy
    from starlette.exceptions import HTTPException
    from starlette.requests import Request
    from starlette.responses import PlainTextResponse

    class Model:
        async def predict(self, request: Request):
            # No input parameter: the body is left for the model to read, in any format.
            body = await request.body()
            kind = request.headers.get("x-kind")
            if kind == "response":
                return PlainTextResponse(body.decode().upper(), status_code=201, headers={"x-model": "yes"})
            if kind == "numpy":
                return numpy.zeros(3)
            if kind == "starlette-http":
                raise HTTPException(409, detail="already running")
            if kind == "detail-dict":
                raise HTTPException(422, detail={"field": "size", "problem": "too big"})
            return {"bytes": len(body), "path": request.url.path}

        def completions(self, model_input, request: Request):
            return {"prompt": model_input["prompt"], "agent": request.headers["user-agent"]}
"""


@pytest.fixture(scope="module")
def flexible(workers, model_folder):
    return workers.start(model_folder(RETURNS_AND_REQUESTS))


def test_request_parameter_gets_the_live_request(flexible):
    with flexible.client() as c:
        raw = c.post("/predict", content=b"not json at all")
        both = c.post("/v1/completions", json={"prompt": "p"}, headers={"user-agent": "tester/1"})
    assert raw.json() == {"bytes": 15, "path": "/predict"}
    assert both.json() == {"prompt": "p", "agent": "tester/1"}


def test_returned_response_is_sent_as_is(flexible):
    with flexible.client() as c:
        res = c.post("/predict", content=b"shout", headers={"x-kind": "response"})
    assert res.status_code == 201
    assert res.text == "SHOUT" and res.headers["x-model"] == "yes"


def test_value_that_is_not_json_is_a_clear_500(flexible):
    with flexible.client() as c:
        res = c.post("/predict", content=b"", headers={"x-kind": "numpy"})
    message = assert_truss_error(res, 500, "500")
    assert "returned a ndarray, which cannot be sent as JSON" in message


def test_starlette_http_exception_keeps_status(flexible):
    with flexible.client() as c:
        res = c.post("/predict", content=b"", headers={"x-kind": "starlette-http"})
    assert assert_truss_error(res, 409, "700") == "already running"


def test_http_exception_detail_that_is_not_text_is_json(flexible):
    with flexible.client() as c:
        res = c.post("/predict", content=b"", headers={"x-kind": "detail-dict"})
    assert json.loads(assert_truss_error(res, 422, "700")) == {"field": "size", "problem": "too big"}


def test_sibling_modules_import_as_the_model_package(workers, model_folder):
    folder = model_folder(
        """
        from .helpers import shout
        from model.helpers import whisper

        class Model:
            def predict(self, model_input):
                return [shout("a"), whisper("B")]
        """
    )
    (folder / "model" / "helpers.py").write_text("def shout(s):\n    return s.upper()\n\n\ndef whisper(s):\n    return s.lower()\n")
    worker = workers.start(folder)
    with worker.client() as c:
        assert c.post("/predict", json={}).json() == ["A", "b"]


def test_a_generator_with_no_chunks_is_an_empty_response(workers, model_folder):
    worker = workers.start(model_folder(
        """
        class Model:
            async def predict(self, model_input):
                return
                yield
        """
    ))
    with worker.client() as c:
        res = c.post("/predict", json={})
    assert res.status_code == 200 and res.content == b""
