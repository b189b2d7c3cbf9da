"""API keys under attack and in use: failed checks are rationed, scopes hold.

A wrong key that carries a real key's prefix costs a scrypt hash; a flood of them is refused
(429, `Retry-After`) after a small burst, counted by the gateway's
`trestle_api_key_hash_checks_total`. Invoke keys call models only, and only those they list.
"""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from support import SLUG, Server, start_server, wait_for


@pytest.fixture(scope="module")
def gate(tmp_path_factory) -> Server:
    """A gateway of its own: the flood drains this address's bucket, which must not slow others."""
    srv = start_server(tmp_path_factory.mktemp("home"), "--no-builtin")
    yield srv
    srv.stop()


def hash_checks(server: Server) -> int:
    text = httpx.get(f"{server.url}/metrics", timeout=30).text
    return int(float(re.search(r"^trestle_api_key_hash_checks_total (\S+)$", text, re.M).group(1)))


def test_a_flood_of_wrong_keys_with_a_real_prefix_is_refused_without_hashing(gate):
    created = gate.cli_json("keys", "create", "flooded")
    good = {"Authorization": f"Api-Key {created['key']}"}
    prefix = created["prefix"]
    assert httpx.get(f"{gate.url}/v1/models", headers=good).status_code == 200
    before = hash_checks(gate)

    def wrong(i: int) -> httpx.Response:
        return httpx.get(f"{gate.url}/v1/models", timeout=120,
                         headers={"Authorization": f"Api-Key tr_{prefix}_wrong{i:04d}secret"})

    with ThreadPoolExecutor(8) as pool:
        flood = pool.map(wrong, range(200))
        during = [httpx.get(f"{gate.url}/v1/models", headers=good, timeout=120) for _ in range(5)]
        answers = list(flood)

    assert [r.status_code for r in during] == [200] * 5  # the real key works all along
    statuses = [r.status_code for r in answers]
    assert set(statuses) <= {401, 429}
    checks = hash_checks(gate) - before
    assert checks == statuses.count(401)  # every 401 here cost one hash; no 429 did
    assert statuses.count(429) >= 150, statuses  # most never reached scrypt
    refused = next(r for r in answers if r.status_code == 429)
    assert int(refused.headers["retry-after"]) >= 1
    error = refused.json()["error"]
    assert error["type"] == "rate_limit_error" and "retry" in error["message"]


def test_the_refusal_on_the_messages_route_is_in_anthropics_shape(gate):
    prefix = gate.cli_json("keys", "create", "flooded-messages")["prefix"]
    body = {"model": "any", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}
    answers = []
    for i in range(100):  # the burst is small: a 429 comes long before this ends
        answers.append(httpx.post(f"{gate.url}/v1/messages", json=body, timeout=120,
                                  headers={"x-api-key": f"tr_{prefix}_wrong{i:04d}secret"}))
        if answers[-1].status_code == 429:
            break
    refused = answers[-1]
    assert refused.status_code == 429, [r.status_code for r in answers]
    assert int(refused.headers["retry-after"]) >= 1
    assert refused.json()["type"] == "error"
    assert refused.json()["error"]["type"] == "rate_limit_error"
    assert all(r.json()["error"]["type"] == "authentication_error" for r in answers[:-1])


def test_a_repeated_wrong_key_is_answered_from_memory(gate):
    prefix = gate.cli_json("keys", "create", "repeated")["prefix"]
    headers = {"Authorization": f"Bearer tr_{prefix}_notthesecret"}
    # (a 429 first, while this address's bucket refills after the flood above)
    wait_for(lambda: httpx.get(f"{gate.url}/v1/models", headers=headers).status_code == 401,
             "the wrong key to be checked once")
    before = hash_checks(gate)
    for _ in range(20):
        again = httpx.get(f"{gate.url}/v1/models", headers=headers)
        assert again.status_code == 401
        assert again.json()["error"]["message"] == "invalid or revoked API key"
    assert hash_checks(gate) == before


def test_an_unsupported_scheme_is_named_in_the_401(gate):
    for header, named in (("Token abc", "'Token'"), ("Basic dXNlcjpwYXNz", "'Basic'")):
        resp = httpx.get(f"{gate.url}/api/v1/models", headers={"Authorization": header})
        assert resp.status_code == 401
        message = resp.json()["error"]["message"]
        assert f"unsupported authorization scheme {named}" in message and "Api-Key" in message


# -- scopes -------------------------------------------------------------------------------------

def call(server: Server, key: str, method: str, path: str, **kwargs) -> httpx.Response:
    return httpx.request(method, server.url + path, headers={"Authorization": f"Api-Key {key}"},
                         timeout=120, **kwargs)


def test_an_invoke_key_calls_models_but_cannot_manage(server, pushed):
    m = pushed("hello")["model"]["id"]
    created = server.cli_json("keys", "create", "app", "--scope", "invoke")
    assert created["scope"] == "invoke" and created["models"] is None
    key = created["key"]
    assert call(server, key, "POST", f"/model/{m}/production/predict",
                json={"name": "app"}).json() == {"message": "Hello, app!"}
    assert call(server, key, "GET", "/v1/models").status_code == 200
    for method, path in (("GET", "/api/v1/models"), ("GET", "/api/v1/keys"),
                         ("POST", "/api/v1/keys"), ("PUT", "/api/v1/secrets/x"),
                         ("POST", "/api/v1/push"), ("GET", "/api/v1/deployments")):
        resp = call(server, key, method, path, json={"name": "x", "value": "y"})
        assert resp.status_code == 403, (method, path, resp.text)
        error = resp.json()["error"]
        assert error["type"] == "permission_error"
        assert "`admin` scope" in error["message"] and "`invoke`" in error["message"]
    listed = {k["id"]: k for k in server.cli_json("keys", "list")["keys"]}
    assert listed[created["id"]]["scope"] == "invoke"
    first = min(listed.values(), key=lambda k: k["created_at"])
    assert first["scope"] == "admin" and first["prefix"] == server.api_key.split("_")[1]


def test_the_cli_creates_admin_keys_on_request(server):
    created = server.cli_json("keys", "create", "ops", "--scope", "admin")
    assert created["scope"] == "admin"
    assert call(server, created["key"], "GET", "/api/v1/keys").status_code == 200
    refused = server.cli("keys", "create", "x", "--scope", "admin", "--model", "m1", check=False)
    assert refused.returncode == 1 and "only invoke keys take `models`" in refused.stderr


def test_a_key_limited_to_a_model_cannot_call_another(server, pushed):
    hello = pushed("hello")["model"]["id"]
    other = pushed("typed_input")["model"]["id"]
    builtin = next(m["id"] for m in server.cli_json("models", "list")["models"]
                   if m["name"] == SLUG.split("/")[-1])
    only_hello = server.cli_json("keys", "create", "hello-only", "--model", hello)
    assert only_hello["models"] == [hello] and only_hello["scope"] == "invoke"
    key = only_hello["key"]
    ok = call(server, key, "POST", f"/model/{hello}/production/predict", json={"name": "x"})
    assert ok.status_code == 200
    for path in (f"/model/{other}/production/predict", f"/model/{builtin}/production/predict"):
        resp = call(server, key, "POST", path, json={})
        assert resp.status_code == 403
        assert "may not call model" in resp.json()["error"]  # Truss's shape on /model/...
    slug = call(server, key, "POST", "/v1/chat/completions",
                json={"model": SLUG, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1})
    assert slug.status_code == 403 and builtin in slug.json()["error"]["message"]
    chat = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 1}
    for bridged in ({"model": f"baseten/{other}", **chat},
                    {"model": "x", "baseten": {"model_id": other}, **chat}):
        resp = call(server, key, "POST", "/v1/chat/completions", json=bridged)
        assert resp.status_code == 403 and other in resp.json()["error"]["message"]
    assert call(server, key, "POST", "/api/endpoints/e1/completions", json={}).status_code == 403

    llm_key = server.cli_json("keys", "create", "llm-only", "--model", builtin)["key"]
    chat = call(server, llm_key, "POST", "/v1/chat/completions",
                json={"model": SLUG, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1})
    assert chat.status_code == 200, chat.text
    unknown = server.cli("keys", "create", "x", "--model", "nosuchmodel", check=False)
    assert unknown.returncode == 1 and "no model with id 'nosuchmodel'" in unknown.stderr
