"""Two `trestle serve` gateways on one PostgreSQL database and one Redis server agree on what
they serve: deployments pushed and promoted through either, keys revoked on either, rate limits
counted across both (docs/multiple-gateways.md, docs/rate-limits.md).

The gateways re-read the record by polling only every 10 minutes here (TRESTLE_SYNC_POLL_S) and
remember verified keys for an hour (TRESTLE_KEY_CACHE_TTL), so everything one of them learns
within the tests' deadlines, it learned from PostgreSQL's notifications.
"""

from __future__ import annotations

import shutil

import httpx
import pytest

from postgres import throwaway_cluster
from scaleout.gateway_support import tally_model, throwaway_redis
from support import start_server, wait_for

pytestmark = pytest.mark.cluster

ENV = {"TRESTLE_SYNC_POLL_S": "600", "TRESTLE_KEY_CACHE_TTL": "3600"}


@pytest.fixture(scope="module")
def services():
    with throwaway_cluster() as cluster, throwaway_redis() as redis_url:
        yield {"TRESTLE_DATABASE_URL": cluster.new_database(), "TRESTLE_REDIS_URL": redis_url}


@pytest.fixture(scope="module")
def gateways(services, tmp_path_factory):
    env = {**ENV, **services}
    a = start_server(tmp_path_factory.mktemp("gateway-a"), "--no-builtin", env=env)
    try:
        a.cli("secrets", "set", "GREETING", "--value", "hello")  # creates A's secrets.key
        home_b = tmp_path_factory.mktemp("gateway-b")
        # Every gateway needs the key that encrypts the store's secrets, and the CLI a key.
        for name in ("secrets.key", "admin_key"):
            shutil.copy2(a.home / name, home_b / name)
        b = start_server(home_b, "--no-builtin", env=env)
    except BaseException:
        a.stop()
        raise
    yield a, b
    b.stop()
    a.stop()


def predict(server, model_id: str, body: dict, *, env: str = "production",
            key: str | None = None) -> httpx.Response:
    headers = {"Authorization": f"Api-Key {key}"} if key else server.headers
    return httpx.post(f"{server.url}/model/{model_id}/{env}/predict", json=body, headers=headers,
                      timeout=60)


def serves(server, model_id: str, version: str, env: str = "production"):
    def check():
        res = predict(server, model_id, {}, env=env)
        return res.status_code == 200 and res.json()["output"] == version

    return check


def test_a_push_on_one_gateway_is_served_by_the_other(gateways, tmp_path):
    a, b = gateways
    pushed = a.push(tally_model(tmp_path, "shared-push", "v1"))
    model_id = pushed["model"]["id"]
    wait_for(serves(a, model_id, "v1"), "gateway A to serve its push")
    wait_for(serves(b, model_id, "v1"), "gateway B to serve the push made on A")
    listed = b.cli_json("deployments", "list", "--model", model_id)
    assert [d["id"] for d in listed["deployments"]] == [pushed["deployment"]["id"]]
    # B runs its own replica, from its own copy of the folder; its log says so.
    logs = b.cli("deployments", "logs", pushed["deployment"]["id"]).stdout
    assert "its folder was unpacked on this gateway" in logs


def test_promote_on_one_gateway_moves_the_other(gateways, tmp_path):
    a, b = gateways
    first = a.push(tally_model(tmp_path, "shared-promote", "v1"))
    model_id = first["model"]["id"]
    wait_for(serves(b, model_id, "v1"), "gateway B to serve v1")
    second = b.push(tally_model(tmp_path, "shared-promote", "v2"))  # pushed on B this time
    wait_for(serves(a, model_id, "v2", env="development"), "gateway A to serve v2 in development")
    assert predict(a, model_id, {}).json()["output"] == "v1"  # production did not move
    a.cli("deployments", "promote", second["deployment"]["id"])
    wait_for(serves(a, model_id, "v2"), "gateway A to serve v2 in production")
    wait_for(serves(b, model_id, "v2"), "gateway B to follow the promotion made on A")


def test_a_key_revoked_on_one_gateway_is_refused_by_the_other(gateways):
    def status(server, key: str) -> int:
        return httpx.get(f"{server.url}/v1/models", headers={"Authorization": f"Bearer {key}"}).status_code

    for creator, other in (gateways, reversed(gateways)):
        created = creator.cli_json("keys", "create", "short-lived")
        assert status(other, created["key"]) == 200  # verified there, and remembered for an hour
        creator.cli("keys", "revoke", created["id"], "--yes")
        assert status(creator, created["key"]) == 401
        wait_for(lambda: status(other, created["key"]) == 401,
                 "the other gateway to refuse the revoked key")


def test_rate_limits_are_shared_by_both_gateways(gateways):
    a, b = gateways
    created = a.cli_json("keys", "create", "limited", "--rpm", "4")
    assert created["rpm"] == 4 and created["tpm"] is None
    headers = {"Authorization": f"Bearer {created['key']}"}
    remaining = []
    for server in (a, b, a, b):
        res = httpx.get(f"{server.url}/v1/models", headers=headers)
        assert res.status_code == 200, res.text
        assert res.headers["x-ratelimit-limit-requests"] == "4"
        assert "x-ratelimit-limit-tokens" not in res.headers
        remaining.append(int(res.headers["x-ratelimit-remaining-requests"]))
    assert remaining == [3, 2, 1, 0]

    refused = httpx.get(f"{b.url}/v1/models", headers=headers)  # the OpenAI envelope
    assert refused.status_code == 429
    error = refused.json()["error"]
    assert (error["type"], error["code"]) == ("rate_limit_error", "rate_limit_exceeded")
    assert "4 requests per minute" in error["message"]
    assert refused.headers["x-ratelimit-remaining-requests"] == "0"
    assert int(refused.headers["retry-after"]) >= 1
    assert refused.headers["x-ratelimit-reset-requests"].endswith("s")

    truss = httpx.post(f"{a.url}/model/m00000000/production/predict", json={}, headers=headers)
    assert truss.status_code == 429  # Truss's shape on a model's predict route
    assert isinstance(truss.json()["error"], str) and truss.headers["x-baseten-error-source"] == "01"

    messages = httpx.post(f"{a.url}/v1/messages", json={}, headers={"x-api-key": created["key"]})
    assert messages.status_code == 429  # Anthropic's shape on its route
    body = messages.json()
    assert (body["type"], body["error"]["type"]) == ("error", "rate_limit_error")

    # `keys update` lifts the limit on both gateways at once
    a.cli("keys", "update", created["id"], "--rpm", "0")
    for server in (b, a):
        wait_for(lambda: httpx.get(f"{server.url}/v1/models", headers=headers).status_code == 200,
                 "the limit to be lifted")
        assert "x-ratelimit-limit-requests" not in httpx.get(f"{server.url}/v1/models",
                                                             headers=headers).headers


def test_tokens_per_minute_count_the_usage_answers_report(gateways, tmp_path):
    a, b = gateways
    pushed = a.push(tally_model(tmp_path, "shared-tokens", "v1"))
    model_id = pushed["model"]["id"]
    wait_for(serves(b, model_id, "v1"), "gateway B to serve the model")
    created = a.cli_json("keys", "create", "tokens", "--tpm", "100")
    key = created["key"]
    first = predict(a, model_id, {"tokens": 60}, key=key)
    assert first.status_code == 200, first.text
    assert first.headers["x-ratelimit-remaining-tokens"] == "100"  # counted after the answer
    second = predict(b, model_id, {"tokens": 60}, key=key)  # 60 used: this one still goes
    assert second.status_code == 200, second.text
    assert second.headers["x-ratelimit-remaining-tokens"] == "40"
    refused = predict(a, model_id, {"tokens": 1}, key=key)  # 120 used: over
    assert refused.status_code == 429
    assert "100 tokens per minute" in refused.json()["error"]
    assert refused.headers["x-ratelimit-remaining-tokens"] == "0"


def test_a_key_without_limits_gets_no_rate_limit_headers(gateways):
    a, _ = gateways
    res = httpx.get(f"{a.url}/v1/models", headers=a.headers)
    assert res.status_code == 200
    assert not [h for h in res.headers if h.startswith("x-ratelimit")]


def listening_backends(url: str, terminate: bool = False) -> int:
    """How many connections LISTEN on the database (ended first, with `terminate`)."""
    import asyncio

    import asyncpg

    async def query() -> int:
        conn = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
        try:
            where = "query LIKE 'LISTEN %' AND pid <> pg_backend_pid() AND datname = current_database()"
            if terminate:
                return len(await conn.fetch(
                    f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE {where}"))
            return await conn.fetchval(f"SELECT count(*) FROM pg_stat_activity WHERE {where}")
        finally:
            await conn.close()

    return asyncio.run(query())


def test_changes_still_arrive_after_the_listening_connections_are_lost(gateways, services):
    a, b = gateways
    url = services["TRESTLE_DATABASE_URL"]
    assert listening_backends(url) == 2
    assert listening_backends(url, terminate=True) == 2  # both gateways lose their LISTEN
    created = a.cli_json("keys", "create", "after-the-cut")
    key = {"Authorization": f"Bearer {created['key']}"}
    assert httpx.get(f"{b.url}/v1/models", headers=key).status_code == 200
    a.cli("keys", "revoke", created["id"], "--yes")
    wait_for(lambda: httpx.get(f"{b.url}/v1/models", headers=key).status_code == 401,
             "gateway B to refuse the key revoked on A after its LISTEN connection was cut")
    wait_for(lambda: listening_backends(url) == 2, "both gateways to LISTEN again")


def test_scale_on_the_gateway_that_follows_reaches_both(gateways, tmp_path):
    a, b = gateways
    pushed = a.push(tally_model(tmp_path, "shared-scale", "v1"))
    model_id, dep = pushed["model"]["id"], pushed["deployment"]["id"]
    wait_for(serves(b, model_id, "v1"), "gateway B to serve the push made on A")
    b.cli("deployments", "scale", dep, "--min", "2", "--max", "3")  # on B, which follows A

    def ready(server) -> int:
        out = httpx.get(f"{server.url}/api/v1/deployments/{dep}", headers=server.headers).json()
        return sum(r["state"] == "ready" for r in out.get("replicas") or [])

    for server in (b, a):
        wait_for(lambda: ready(server) == 2, "both gateways to run two replicas")
        assert serves(server, model_id, "v1")()
    # B kept its own copy of the deployment: its log (in its own folder) says what it did
    logs = b.cli("deployments", "logs", dep).stdout
    assert "its folder was unpacked on this gateway" in logs and "scaling set to" in logs
    assert "scaling set to" not in a.cli("deployments", "logs", dep).stdout
    listed = a.cli_json("deployments", "list", "--model", model_id)["deployments"]
    assert listed[0]["config"]["scaling"] == {"min_replicas": 2, "max_replicas": 3}
