"""POST /predict on the examples: inputs, outputs, body parsing, missing methods, user errors."""

from __future__ import annotations

import re

import pytest

from support import EXAMPLES, log_entries

from .conftest import assert_envelope, assert_truss_error


@pytest.fixture(scope="module")
def hello(workers):
    return workers.start(EXAMPLES / "hello")


def test_sync_predict(hello):
    with hello.client() as c:
        res = c.post("/predict", json={"name": "Ada"})
    assert res.status_code == 200
    assert res.headers["content-type"] == "application/json"
    assert res.json() == {"message": "Hello, Ada!"}


def test_empty_body_is_an_empty_object(hello):
    with hello.client() as c:
        res = c.post("/predict", content=b"")
    assert res.json() == {"message": "Hello, world!"}


def test_invalid_json_is_a_400_in_truss_shape(hello):
    with hello.client() as c:
        res = c.post("/predict", content=b'{"name": ', headers={"content-type": "application/json"})
    message = assert_truss_error(res, 400, "700")
    assert "not valid JSON" in message


@pytest.mark.parametrize("path, method", [("/v1/chat/completions", "chat_completions"), ("/v1/completions", "completions")])
def test_missing_method_is_a_404_naming_it(hello, path, method):
    with hello.client() as c:
        res = c.post(path, json={"messages": [], "prompt": "x"})
    message = assert_envelope(res, 404, type="not_found_error")
    assert f"does not implement {method}" in message


def test_unknown_route_and_wrong_verb_are_truss_errors(hello):
    with hello.client() as c:
        assert "no route /nowhere" in assert_truss_error(c.get("/nowhere"), 404, "700")
        assert assert_truss_error(c.get("/predict"), 405, "700") == "method GET is not allowed on /predict"
        assert_envelope(c.get("/v1/nowhere"), 404, type="not_found_error")


def test_predict_missing_when_only_openai_methods(workers):
    worker = workers.start(EXAMPLES / "openai_methods")
    with worker.client() as c:
        message = assert_truss_error(c.post("/predict", json={}), 404, "700")
    assert "does not implement predict" in message


def test_async_load_and_predict_with_data_dir_and_packages(workers):
    worker = workers.start(EXAMPLES / "async_model")
    with worker.client() as c:
        good = c.post("/predict", json={"text": "A great, excellent day"}).json()
        bad = c.post("/predict", json={"text": "Awful. Just bad."}).json()
    assert good == {"score": 5, "label": "positive"}
    assert bad == {"score": -3, "label": "negative"}


@pytest.fixture(scope="module")
def typed(workers):
    return workers.start(EXAMPLES / "typed_input")


def test_typed_input_valid(typed):
    with typed.client() as c:
        res = c.post("/predict", json={"text": "Serving models: serving is fun, models are fun too.", "top_k": 2})
    assert res.status_code == 200
    assert res.json() == {"keywords": ["models", "serving"]}


def test_typed_input_lists_every_bad_field(typed):
    with typed.client() as c:
        res = c.post("/predict", json={"text": "", "top_k": 99})
    message = assert_truss_error(res, 400, "700")
    # The same message docs/model-contract.md shows.
    assert message == (
        "invalid input: text: String should have at least 1 character; "
        "top_k: Input should be less than or equal to 20"
    )


def test_typed_input_missing_field_and_wrong_shape(typed):
    with typed.client() as c:
        missing = c.post("/predict", json={"top_k": 1})
        not_object = c.post("/predict", json=[1, 2])
    assert "text: Field required" in assert_truss_error(missing, 400, "700")
    assert assert_truss_error(not_object, 400, "700").startswith("invalid input:")


@pytest.fixture(scope="module")
def raises(workers):
    return workers.start(EXAMPLES / "raises")


def test_user_exception_is_a_generic_500_with_traceback_in_log(raises):
    with raises.client() as c:
        res = c.post("/predict", json={"kind": "bug", "numerator": 7}, headers={"x-request-id": "bug-req-1"})
    message = assert_truss_error(res, 500, "600")
    assert "ValueError" not in message and "divide" not in message and "internal detail" not in message
    assert "bug-req-1" in message
    [entry] = [e for e in log_entries(raises.log()) if e["message"].startswith("Model.predict raised")
               and e["request_id"] == "bug-req-1"]
    assert entry["level"] == "ERROR" and entry["logger"] == "trestle.runtime"
    traceback = entry["message"]
    assert "ValueError: cannot divide 7 by zero" in traceback
    # The traceback starts at the user's frame: none of trestle's or starlette's frames.
    frames = re.findall(r'File "([^"]+)"', traceback)
    assert frames and all(f.endswith("examples/raises/model/model.py") for f in frames), frames
    assert "in _divide" in traceback


def test_user_http_exception_keeps_status_and_detail(raises):
    with raises.client() as c:
        res = c.post("/predict", json={"kind": "teapot"})
        ok = c.post("/predict", json={})
    assert assert_truss_error(res, 418, "700") == "I'm a teapot, not a coffee machine"
    assert ok.json() == {"ok": True}
