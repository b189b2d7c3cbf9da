"""External upstreams: a deployment that fronts another OpenAI-compatible server.

The upstream is a second, real `trestle serve` (auth on: it needs its own key, which the first
gateway reads from its secrets store). A down upstream is a closed port. A timeout and a stream
cut mid-way cannot be had from real parts on demand, so a tiny aiohttp server plays those.
"""

from __future__ import annotations

import asyncio
import json
import threading
from pathlib import Path

import openai
import pytest
import yaml
from aiohttp import web

from support import SLUG, free_port, start_server

USER = [{"role": "user", "content": "Name a colour."}]
ASK = dict(messages=USER, max_tokens=6, temperature=0)


def upstream_folder(tmp_path: Path, name: str, **upstream) -> Path:
    folder = tmp_path / name
    folder.mkdir()
    (folder / "config.yaml").write_text(yaml.safe_dump({"model_name": name, "upstream": upstream}))
    return folder


@pytest.fixture(scope="module")
def other(tmp_path_factory):
    """The upstream: a second trestle serving the built-in engine, with auth on."""
    srv = start_server(tmp_path_factory.mktemp("upstream-home"), wait_for_slug=True)
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key=server.api_key, max_retries=0)


@pytest.fixture(scope="module")
def fronted(server, other, tmp_path_factory) -> str:
    """A model whose deployment fronts `other`, its key in the secret UPSTREAM_KEY."""
    server.cli("secrets", "set", "UPSTREAM_KEY", "--value", other.api_key)
    folder = upstream_folder(tmp_path_factory.mktemp("up"), "fronted", base_url=f"{other.url}/v1",
                             api_key_secret="UPSTREAM_KEY", model=SLUG, timeout=120)
    push = server.push(folder)
    assert push["deployment"]["status"] == "active", push
    assert not any(url.endswith("/predict") for url in push["urls"].values())  # it has none
    return push["model"]["id"]


@pytest.fixture(scope="module")
def straight(other):
    return openai.OpenAI(base_url=f"{other.url}/v1", api_key=other.api_key, max_retries=0)


def test_plain_and_streamed_chat_through_the_upstream(client, straight, fronted):
    expected = straight.chat.completions.create(model=SLUG, **ASK).choices[0].message.content
    chat = client.chat.completions.create(model="anything", extra_body={"baseten": {"model_id": fronted}},
                                          **ASK)
    assert chat.choices[0].message.content == expected
    assert chat.model == SLUG  # upstream.model replaced what the client sent
    assert chat.usage.prompt_tokens > 0  # the upstream's own usage
    stream = client.chat.completions.create(model=f"baseten/{fronted}", stream=True, **ASK)
    chunks = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == expected
    assert any(c.choices and c.choices[0].finish_reason for c in chunks)


def test_text_completions_and_the_direct_bridge(server, client, straight, fronted):
    expected = straight.completions.create(model=SLUG, prompt="Once upon", max_tokens=5, temperature=0)
    done = client.completions.create(model=f"baseten/{fronted}", prompt="Once upon", max_tokens=5,
                                     temperature=0)
    assert done.choices[0].text == expected.choices[0].text
    direct = openai.OpenAI(base_url=f"{server.url}/v1/direct", api_key=server.api_key, max_retries=0)
    stream = direct.chat.completions.create(model="x", stream=True, extra_body={"baseten": {"model_id": fronted}},
                                            **ASK)
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert text == straight.chat.completions.create(model=SLUG, **ASK).choices[0].message.content


def test_the_key_comes_from_the_secret(server, client, other, tmp_path):
    """Without the secret's key the upstream refuses: its 401 and body come back as they are."""
    bare = server.push(upstream_folder(tmp_path, "no-key", base_url=f"{other.url}/v1", model=SLUG))
    with pytest.raises(openai.AuthenticationError) as err:
        client.chat.completions.create(model=f"baseten/{bare['model']['id']}", **ASK)
    assert err.value.status_code == 401 and err.value.body["type"] == "authentication_error"
    assert other.api_key not in json.dumps(err.value.body)


def test_a_secret_that_is_not_set_fails_the_deployment(server, tmp_path):
    folder = upstream_folder(tmp_path, "unset-key", base_url="http://127.0.0.1:9/v1",
                             api_key_secret="NEVER_SET_KEY")
    res = server.cli("push", str(folder), "--output", "json", check=False)
    push = json.loads(res.stdout)
    assert res.returncode == 1 and push["deployment"]["status"] == "failed"
    assert "NEVER_SET_KEY" in push["deployment"]["error"]


def test_a_down_upstream_is_a_502(server, client, tmp_path):
    port = free_port()  # nothing listens there
    m = server.push(upstream_folder(tmp_path, "down", base_url=f"http://127.0.0.1:{port}/v1"))["model"]["id"]
    with pytest.raises(openai.APIStatusError) as err:
        client.chat.completions.create(model=f"baseten/{m}", **ASK)
    assert err.value.status_code == 502
    assert "cannot be reached" in err.value.body["message"] and str(port) not in err.value.body["message"]


def test_predict_on_an_upstream_says_what_it_serves(server, fronted):
    with server.client() as http:
        resp = http.post(f"/model/{fronted}/production/predict", json={"x": 1})
        # a Truss route: Truss's error shape, from the gateway (source 01), the client's error (700)
        assert resp.status_code == 404 and "/v1/chat/completions" in resp.json()["error"]
        assert resp.headers["x-baseten-error-source"] == "01"
        sync = http.post(f"/model/{fronted}/production/sync/v1/chat/completions", json={"model": "x", **ASK})
        assert sync.status_code == 200 and sync.json()["model"] == SLUG


@pytest.mark.parametrize("upstream,param", [
    ({"base_url": "http://k:s@127.0.0.1/v1"}, "upstream.base_url"),
    ({"base_url": "127.0.0.1:8000"}, "upstream.base_url"),
    ({"base_url": "http://127.0.0.1/v1", "api_key": "sk-123"}, "upstream.api_key"),
    ({"base_url": "http://127.0.0.1/v1", "timeout": 0}, "upstream.timeout"),
])
def test_a_bad_upstream_section_is_refused_at_push(server, tmp_path, upstream, param):
    res = server.cli("push", str(upstream_folder(tmp_path, "bad", **upstream)), "--output", "json", check=False)
    assert res.returncode != 0 and param in res.stdout + res.stderr


def test_model_code_beside_an_upstream_is_refused(server, tmp_path):
    folder = upstream_folder(tmp_path, "both", base_url="http://127.0.0.1/v1")
    (folder / "model").mkdir()
    (folder / "model" / "model.py").write_text("class Model:\n    def predict(self, x):\n        return x\n")
    res = server.cli("push", str(folder), check=False)
    assert res.returncode != 0 and "upstream" in res.stdout + res.stderr


# -- faults real parts cannot produce on demand: a tiny aiohttp server --------------------------
class Fake:
    """An aiohttp server in a thread: `/v1/chat/completions` stalls or cuts its stream."""

    def __init__(self, mode: str):
        self.mode = mode
        self.port = free_port()
        self.loop = asyncio.new_event_loop()
        self.started = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if self.mode == "stall":
            await asyncio.sleep(3600)
        resp = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await resp.prepare(request)
        chunk = {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "fake",
                 "choices": [{"index": 0, "delta": {"content": "half"}, "finish_reason": None}]}
        await resp.write(b"data: " + json.dumps(chunk).encode() + b"\n\n")
        request.transport.close()  # cut: no end of the chunked body, no [DONE]
        return resp

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self.handle)
        runner = web.AppRunner(app, shutdown_timeout=1)
        self.loop.run_until_complete(runner.setup())
        self.loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", self.port).start())
        self.started.set()
        self.loop.run_forever()
        pending = asyncio.all_tasks(self.loop)  # a stalled handler
        for task in pending:
            task.cancel()
        self.loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        self.loop.run_until_complete(runner.cleanup())
        self.loop.close()

    def __enter__(self) -> "Fake":
        self.thread.start()
        self.started.wait(30)
        return self

    def __exit__(self, *exc) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(30)


def test_an_upstream_that_times_out_is_a_504(server, client, tmp_path):
    with Fake("stall") as fake:
        m = server.push(upstream_folder(tmp_path, "stalls", base_url=f"http://127.0.0.1:{fake.port}/v1",
                                        timeout=1))["model"]["id"]
        with pytest.raises(openai.APIStatusError) as err:
            client.chat.completions.create(model=f"baseten/{m}", **ASK)
    assert err.value.status_code == 504
    assert "upstream.timeout" in err.value.body["message"]


def test_a_stream_cut_mid_way_ends_with_an_error_event(server, tmp_path):
    with Fake("cut") as fake:
        m = server.push(upstream_folder(tmp_path, "cuts", base_url=f"http://127.0.0.1:{fake.port}/v1"))["model"]["id"]
        with server.client() as http:
            resp = http.post("/v1/chat/completions", json={"model": f"baseten/{m}", "stream": True, **ASK})
    assert resp.status_code == 200
    events = [e for e in resp.text.split("\n\n") if e]
    assert json.loads(events[0][6:])["choices"][0]["delta"]["content"] == "half"
    error = json.loads(events[-1][6:])["error"]
    assert error["type"] == "upstream_error" and "data: [DONE]" not in resp.text
