"""API keys at the gateway: `Api-Key` or `Bearer`, 401 JSON otherwise, revocation, hashed storage."""

from __future__ import annotations

import json
import sqlite3

import httpx

from support import ROOT

ECHO_HEADERS = ROOT / "tests" / "gateway" / "models" / "echo_headers"
NO_KEY = "missing API key"


def test_requests_without_a_valid_key_get_a_401(server, pushed):
    m = pushed("hello")["model"]["id"]
    paths = [("POST", f"/model/{m}/production/predict"), ("POST", "/v1/chat/completions"),
             ("GET", "/v1/models"), ("GET", "/api/v1/models")]
    bad_headers = [{}, {"Authorization": "Basic dXNlcjpwYXNz"}, {"Authorization": "Api-Key"},
                   {"Authorization": "Api-Key tr_nothere_nothere"}, {"Authorization": "Bearer nope"}]
    for method, path in paths:
        for headers in bad_headers:
            resp = httpx.request(method, server.url + path, headers=headers, json={})
            assert resp.status_code == 401, (path, headers)
            error = resp.json()["error"]
            if path.startswith("/model/"):  # a Truss route: Truss's shape, said by the gateway
                assert isinstance(error, str) and error
                assert resp.headers["x-baseten-error-source"] == "01"
                assert resp.headers["x-baseten-error-code"] == "700"
            else:
                assert error["type"] == "authentication_error"
                assert error["message"]


def test_both_schemes_work_and_revocation_takes_effect_at_once(server, pushed):
    m = pushed("hello")["model"]["id"]
    created = server.cli_json("keys", "create", "ci-bot")
    key = created["key"]
    url = f"{server.url}/model/{m}/production/predict"
    for scheme in ("Api-Key", "Bearer", "api-key", "bearer"):
        resp = httpx.post(url, json={"name": scheme}, headers={"Authorization": f"{scheme} {key}"})
        assert resp.status_code == 200, scheme
    listed = server.cli_json("keys", "list")["keys"]
    mine = next(k for k in listed if k["id"] == created["id"])
    assert "key" not in mine and mine["revoked_at"] is None
    server.cli("keys", "revoke", created["id"])
    resp = httpx.post(url, json={}, headers={"Authorization": f"Api-Key {key}"})
    assert resp.status_code == 401
    assert "revoked" in resp.json()["error"]  # Truss's shape on a Truss route


def test_keys_are_stored_hashed_and_never_logged(server):
    key = server.cli_json("keys", "create", "audit")["key"]
    secret_part = key.split("_", 2)[2]
    httpx.get(f"{server.url}/api/v1/models", headers={"Authorization": f"Bearer {key}"})
    db = (server.home / "trestle.db").read_bytes()
    assert secret_part.encode() not in db
    with sqlite3.connect(server.home / "trestle.db") as conn:
        rows = conn.execute("select * from api_keys").fetchall()
    assert rows and all(secret_part not in str(row) for row in rows)
    assert secret_part not in server.log_text()
    assert server.api_key.split("_", 2)[2] not in server.log_text()


def test_the_key_is_not_passed_on_to_model_code(server):
    """The worker gets the request without the caller's credentials, but with its other headers."""
    m = server.push(ECHO_HEADERS)["model"]["id"]
    key = server.api_key
    for scheme in ("Api-Key", "Bearer"):
        resp = httpx.post(f"{server.url}/model/{m}/production/predict", json={},
                          headers={"Authorization": f"{scheme} {key}", "X-Probe": scheme})
        assert resp.status_code == 200, resp.text
        seen = resp.json()["headers"]
        assert seen["x-probe"] == scheme  # the model does see the caller's headers...
        assert "authorization" not in seen  # ...but not the credentials
        assert key.split("_", 2)[2] not in json.dumps(seen)
    worker_logs = "".join(p.read_text() for p in server.home.glob("deployments/*/worker.log"))
    assert key.split("_", 2)[2] not in worker_logs
