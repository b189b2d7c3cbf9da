"""Paths are forwarded as sent: an encoded `?` or `#` stays part of the path the worker gets."""

from __future__ import annotations


def test_an_encoded_question_mark_stays_in_the_path(edge, echo):
    with edge.client() as http:
        resp = http.post(f"/model/{echo}/production/sync/predict%3Fx%3D1%23y", json={})
    # the worker got the path `/predict%3Fx%3D1%23y`, which it does not serve: not `/predict` + `x=1`
    assert resp.status_code == 404, resp.text
    assert resp.json()["error"] == "no route /predict%3Fx=1%23y"


def test_the_query_and_its_encoding_reach_the_worker_as_sent(edge, echo):
    with edge.client() as http:
        resp = http.post(f"/model/{echo}/production/sync/predict?a=%3F%26&b=%2F", json={})
    assert resp.status_code == 200, resp.text
    assert resp.json() == {"path": "/predict", "raw_path": "/predict", "query": "a=%3F%26&b=%2F"}


def test_the_model_subdomain_forwards_the_raw_path_too(edge, echo):
    with edge.client() as http:
        host = {"Host": f"model-{echo}.example.com"}
        encoded = http.post("/production/sync/predict%3Fx%3D1", json={}, headers=host)
        plain = http.post("/production/sync/predict?x=1", json={}, headers=host)
    assert encoded.status_code == 404, encoded.text
    assert encoded.json()["error"] == "no route /predict%3Fx=1"
    assert plain.status_code == 200 and plain.json()["query"] == "x=1"
