"""Request bodies are bounded while they stream in, and malformed bodies are a 400, never a 500."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

PREDICT_LIMIT = 8 * 1024 * 1024  # what tests/security/conftest.py configures
from support import SLUG

MB = 1024 * 1024
NESTED = b"[" * 10_000 + b"]" * 10_000


def memory_kb(pid: int, field: str) -> int:
    """VmRSS (now) or VmHWM (the peak so far) of a process, from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} in /proc/{pid}/status")


def chunked(total: int, chunk: int = MB):
    """A body of `total` bytes sent with Transfer-Encoding: chunked (no Content-Length)."""
    for _ in range(total // chunk):
        yield b"x" * chunk


@pytest.mark.parametrize("route", ["predict", "chat"])
def test_a_50_mb_chunked_body_is_refused_with_413_without_being_buffered(edge, echo, route):
    path = f"/model/{echo}/production/predict" if route == "predict" else "/v1/chat/completions"
    pid = edge.proc.pid
    before = memory_kb(pid, "VmRSS")
    with edge.client() as http:
        resp = http.post(path, content=chunked(50 * MB), headers={"content-type": "application/json"})
        assert resp.status_code == 413, resp.text
        error = resp.json()["error"]
        limit = PREDICT_LIMIT if route == "predict" else 8 * MB
        if route == "predict":  # a Truss route: Truss's shape, said by the gateway
            assert f"limit of {limit} bytes" in error
            assert resp.headers["x-baseten-error-source"] == "01"
        else:
            assert error["type"] == "request_too_large" and error["code"] == "max_body_bytes"
            assert f"limit of {limit} bytes" in error["message"]
        # the gateway read at most the limit: its peak memory never grew by the body's size
        grown_mb = (memory_kb(pid, "VmHWM") - before) / 1024
        assert grown_mb < 30, f"the gateway's peak RSS grew by {grown_mb:.0f} MB"
        assert http.post(f"/model/{echo}/production/predict", json={}).status_code == 200


def test_a_declared_content_length_over_the_limit_is_refused_before_reading(edge, echo):
    with edge.client() as http:
        resp = http.post(f"/model/{echo}/production/predict", content=b"x" * (PREDICT_LIMIT + 1))
    assert resp.status_code == 413
    assert "TRESTLE_MAX_PREDICT_BODY_BYTES" in resp.json()["error"]  # Truss's shape on /predict


def test_a_body_under_the_limit_still_reaches_the_model(edge, echo):
    body = json.dumps({"pad": "x" * (PREDICT_LIMIT // 2)})
    with edge.client() as http:
        resp = http.post(f"/model/{echo}/production/predict", content=body)
    assert resp.status_code == 200, resp.text


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/completions",
                                  "/model/{m}/production/predict",
                                  "/model/{m}/production/sync/v1/chat/completions"])
def test_json_nested_10000_levels_is_a_400(edge, echo, path):
    with edge.client() as http:
        resp = http.post(path.format(m=echo), content=NESTED, headers={"content-type": "application/json"})
    assert resp.status_code == 400, resp.text
    error = resp.json()["error"]
    if path.endswith("/production/predict"):  # a Truss route: Truss's shape
        assert "nested too deeply" in error
    else:  # the OpenAI routes: the envelope
        assert "nested too deeply" in error["message"]


@pytest.mark.parametrize("extra", [{"logit_bias": {"1" * 4300: 1}}, {"logit_bias": {"1" * 5000: 1}},
                                   {"repetition_penalty": 1e-308}],
                         ids=["logit_bias_4300_digits", "logit_bias_5000_digits", "repetition_penalty_1e-308"])
def test_engine_parameters_that_cannot_be_used_are_a_400(server, extra):
    param = next(iter(extra))
    body = {"model": SLUG, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2, **extra}
    with server.client() as http:
        resp = http.post("/v1/chat/completions", json=body)
        nested = http.post("/v1/chat/completions", json={"model": SLUG, "messages": [{
            "role": "user", "content": "hi"}], "response_format": json.loads(b"[" * 150 + b"]" * 150)})
    assert resp.status_code == 400, resp.text
    assert resp.json()["error"]["param"].startswith(param)
    assert nested.status_code == 400, nested.text
