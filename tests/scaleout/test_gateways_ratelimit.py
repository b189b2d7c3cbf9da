"""Rate limits without Redis: one gateway counts in its own memory (docs/rate-limits.md); and
while Redis is down, with a pause before it is tried again."""

from __future__ import annotations

import asyncio
import json
import logging
import os

import httpx
import pytest

from scaleout.gateway_support import tally_model, throwaway_redis
from support import free_port, start_server, wait_for

from trestle.gateway.access.ratelimit import PREFIX, RedisLimiter, UsageCounter, duration


@pytest.fixture(scope="module")
def gateway(tmp_path_factory):
    env = {k: v for k, v in os.environ.items() if k not in ("TRESTLE_REDIS_URL", "TRESTLE_DATABASE_URL")}
    server = start_server(tmp_path_factory.mktemp("home"), "--no-builtin", env=env)
    yield server
    server.stop()


def test_requests_per_minute_in_memory(gateway):
    created = gateway.cli_json("keys", "create", "two-a-minute", "--rpm", "2")
    headers = {"Authorization": f"Bearer {created['key']}"}
    answers = [httpx.get(f"{gateway.url}/v1/models", headers=headers) for _ in range(3)]
    assert [r.status_code for r in answers] == [200, 200, 429]
    assert [r.headers["x-ratelimit-remaining-requests"] for r in answers] == ["1", "0", "0"]
    assert answers[2].json()["error"]["code"] == "rate_limit_exceeded"
    assert gateway.cli_json("keys", "list")["keys"]
    listed = {k["id"]: k for k in gateway.cli_json("keys", "list")["keys"]}
    assert listed[created["id"]]["rpm"] == 2
    updated = gateway.cli_json("keys", "update", created["id"], "--rpm", "3")
    assert updated["rpm"] == 3
    again = httpx.get(f"{gateway.url}/v1/models", headers=headers)
    assert again.status_code == 200 and again.headers["x-ratelimit-limit-requests"] == "3"


def test_management_calls_are_not_counted(gateway):
    created = gateway.cli_json("keys", "create", "limited-admin", "--scope", "admin", "--rpm", "2")
    headers = {"Authorization": f"Bearer {created['key']}"}
    for path in ("/api/v1/keys", "/api/v1/models", "/api/v1/deployments", "/api/v1/keys"):
        res = httpx.get(f"{gateway.url}{path}", headers=headers)
        assert res.status_code == 200, res.text
        assert not [h for h in res.headers if h.startswith("x-ratelimit")]  # not counted
    # the key's two requests a minute are all still there for the data plane
    answers = [httpx.get(f"{gateway.url}/v1/models", headers=headers) for _ in range(3)]
    assert [r.status_code for r in answers] == [200, 200, 429]
    assert [r.headers["x-ratelimit-remaining-requests"] for r in answers] == ["1", "0", "0"]
    # and a refused key can still be managed (here: its own limit lifted)
    lifted = httpx.patch(f"{gateway.url}/api/v1/keys/{created['id']}", json={"rpm": 0},
                         headers=headers)
    assert lifted.status_code == 200 and lifted.json()["rpm"] is None


def test_tokens_per_minute_in_memory(gateway, tmp_path):
    pushed = gateway.push(tally_model(tmp_path, "memory-tokens", "v1"))
    model_id = pushed["model"]["id"]
    created = gateway.cli_json("keys", "create", "tokens", "--tpm", "50", "--rpm", "100")
    headers = {"Authorization": f"Bearer {created['key']}"}
    url = f"{gateway.url}/model/{model_id}/production/predict"
    first = wait_for(lambda: (r := httpx.post(url, json={"tokens": 30}, headers=headers,
                                              timeout=60)).status_code == 200 and r,
                     "the model to answer")
    assert first.headers["x-ratelimit-limit-tokens"] == "50"
    second = httpx.post(url, json={"tokens": 30}, headers=headers, timeout=60)
    assert second.status_code == 200 and second.headers["x-ratelimit-remaining-tokens"] == "20"
    refused = httpx.post(url, json={"tokens": 1}, headers=headers, timeout=60)
    assert refused.status_code == 429
    assert "50 tokens per minute" in refused.json()["error"]  # Truss's shape on predict
    assert refused.headers["x-ratelimit-remaining-tokens"] == "0"


def test_bad_limits_are_refused(gateway):
    res = httpx.post(f"{gateway.url}/api/v1/keys", json={"name": "x", "rpm": -1}, headers=gateway.headers)
    assert res.status_code == 400 and res.json()["error"]["param"] == "rpm"
    res = httpx.patch(f"{gateway.url}/api/v1/keys/k00000000", json={"tpm": 5}, headers=gateway.headers)
    assert res.status_code == 404
    done = gateway.cli("keys", "update", "k00000000", check=False)
    assert done.returncode != 0 and "give --rpm N and/or --tpm N" in done.stderr


def test_usage_is_read_from_a_stream_and_from_a_json_answer():
    stream = UsageCounter("text/event-stream; charset=utf-8")
    chunks = [b'data: {"choices": [{"delta": {"content": "hi"}}]}\n\ndata: {"choices": [], "us',
              b'age": {"prompt_tokens": 7, "completion_tokens": 5, "total_tokens": 12}}\n\n',
              b"data: [DONE]\n\n"]
    for chunk in chunks:
        stream.feed(chunk)
    assert stream.tokens() == 12
    anthropic = UsageCounter("text/event-stream")
    anthropic.feed(b'event: message_start\ndata: {"type": "message_start", "message": '
                   b'{"usage": {"input_tokens": 9, "output_tokens": 1}}}\n\n'
                   b'event: message_delta\ndata: {"type": "message_delta", "usage": {"output_tokens": 4}}\n\n')
    assert anthropic.tokens() == 13
    answer = UsageCounter("application/json")
    answer.feed(json.dumps({"usage": {"input_tokens": 3, "output_tokens": 2}}).encode())
    assert answer.tokens() == 5
    assert UsageCounter("application/json").tokens() == 0
    assert [duration(ms) for ms in (250, 12_500, 60_000)] == ["250ms", "12.5s", "1m0s"]


class DownRedis:
    """A port where Redis should be that takes connections and drops them at once (as a
    crashed Redis behind a proxy would), counting them."""

    def __init__(self):
        self.connections = 0
        self.server: asyncio.Server | None = None

    async def start(self, port: int) -> None:
        async def dropped(_reader, writer):
            self.connections += 1
            writer.close()

        self.server = await asyncio.start_server(dropped, "127.0.0.1", port)

    async def stop(self) -> None:
        self.server.close()
        await self.server.wait_closed()


def test_while_redis_is_down_requests_count_in_memory_without_retrying_it_each_time(caplog):
    port = free_port()

    async def outage() -> None:
        down = DownRedis()
        await down.start(port)
        limiter = RedisLimiter(f"redis://127.0.0.1:{port}/0", backoff_s=3600)
        try:
            decisions = [await limiter.acquire("k1", 3, None) for _ in range(40)]
            await limiter.add_tokens("k1", 10)
            assert limiter.down and down.connections >= 1
            tried = down.connections
            decisions += [await limiter.acquire("k1", 3, None) for _ in range(40)]
            # the back-off: no request since the first failure went to Redis
            assert down.connections == tried
            # counted in memory meanwhile: three a minute
            assert [d.allowed for d in decisions] == [True] * 3 + [False] * 77
        finally:
            await limiter.close()
            await down.stop()

    with caplog.at_level(logging.WARNING, logger="trestle.gateway.access.ratelimit"):
        asyncio.run(outage())
    warned = [r.getMessage() for r in caplog.records if "cannot be reached" in r.getMessage()]
    assert len(warned) == 1, warned  # once per outage, not per request


def test_after_the_pause_redis_is_tried_again_and_counts_again(caplog):
    port = free_port()

    async def scenario() -> None:
        down = DownRedis()
        await down.start(port)
        limiter = RedisLimiter(f"redis://127.0.0.1:{port}/0", backoff_s=0.2)
        try:
            assert (await limiter.acquire("k2", 100, None)).allowed  # in memory: Redis is down
            assert limiter.down
            await down.stop()
            with throwaway_redis(port) as url:
                import redis.asyncio as redis

                # polled: each call within the pause counts in memory, the next one tries Redis
                loop = asyncio.get_running_loop()
                deadline = loop.time() + 120
                while limiter.down:
                    assert loop.time() < deadline, "Redis was never tried again"
                    await limiter.acquire("k2", 100, None)
                    await asyncio.sleep(0.05)
                async with redis.Redis.from_url(url) as client:
                    assert int(await client.get(f"{PREFIX}k2:requests")) >= 1
        finally:
            await limiter.close()

    with caplog.at_level(logging.WARNING, logger="trestle.gateway.access.ratelimit"):
        asyncio.run(scenario())
    messages = [r.getMessage() for r in caplog.records]
    assert sum("cannot be reached" in m for m in messages) == 1
    assert sum("can be reached again" in m for m in messages) == 1
