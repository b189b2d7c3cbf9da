"""The OpenAI bridge with the official `openai` client: any deployment, named in the body."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import openai
import pytest

from support import EXAMPLES, SLUG, wait_for

MODELS = Path(__file__).parent / "models"
USER = [{"role": "user", "content": "ping pong"}]
BUILTIN_NAME = "SmolLM2-135M-Instruct"


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key=server.api_key, max_retries=0)


@pytest.fixture(scope="module")
def wordy(server):
    return server.push(MODELS / "wordy")["model"]["id"]


@pytest.fixture(scope="module")
def engine_id(server):
    with server.client() as http:
        models = http.get("/api/v1/models").json()["models"]
    return next(m["id"] for m in models if m["name"] == BUILTIN_NAME)


def active(server, dep_id: str) -> bool:
    with server.client() as http:
        return http.get(f"/api/v1/deployments/{dep_id}").json()["status"] == "active"


# -- the legacy bridge: a predict-only model ------------------------------------------------------
def test_predict_only_model_answers_a_chat_completion(client, wordy):
    chat = client.chat.completions.create(model="wordy", messages=USER, max_tokens=5,
                                          extra_body={"baseten": {"model_id": wordy}})
    assert chat.id.startswith("chatcmpl-") and len(chat.id) > len("chatcmpl-") + 30
    assert chat.object == "chat.completion" and chat.model == "wordy" and chat.created > 0
    assert chat.choices[0].message.role == "assistant"
    assert chat.choices[0].message.content == "You said: ping pong"
    assert chat.choices[0].finish_reason == "stop"
    assert chat.usage is None  # never a made-up zero


def test_usage_not_computed_is_said_in_a_header(client, wordy):
    raw = client.chat.completions.with_raw_response.create(
        model="wordy", messages=USER, extra_body={"baseten": {"model_id": wordy}})
    assert raw.headers["x-trestle-usage"] == "not-computed"
    assert "usage" not in json.loads(raw.text)


def test_usage_reported_by_the_model_is_passed_on(client, wordy):
    raw = client.chat.completions.with_raw_response.create(
        model="wordy", messages=USER, extra_body={"baseten": {"model_id": wordy}, "mode": "usage"})
    chat = raw.parse()
    assert raw.headers["x-trestle-usage"] == "model"
    assert chat.choices[0].message.content == "You said: ping pong"
    assert (chat.usage.prompt_tokens, chat.usage.completion_tokens, chat.usage.total_tokens) == (3, 4, 7)


def test_the_whole_body_less_baseten_reaches_predict(client, wordy):
    chat = client.chat.completions.create(
        model="wordy", messages=USER, max_tokens=7, temperature=0.5,
        extra_body={"baseten": {"model_id": wordy}, "mode": "input", "custom": [1, 2]})
    received = json.loads(chat.choices[0].message.content)
    assert received == {"model": "wordy", "messages": USER, "max_tokens": 7, "temperature": 0.5,
                        "mode": "input", "custom": [1, 2]}


def test_a_dict_with_choices_passes_through(client, wordy):
    chat = client.chat.completions.create(model="wordy", messages=USER,
                                          extra_body={"baseten": {"model_id": wordy}, "mode": "choices"})
    assert chat.id == "mine" and chat.choices[0].message.content == "as is"


def test_streamed_predict_becomes_chunks(client, wordy, capsys):
    response = client.chat.completions.create(model="wordy", messages=USER, stream=True,
                                              extra_body={"baseten": {"model_id": wordy}})
    deltas = []
    for chunk in response:  # the loop of the migration guide
        print(chunk.choices[0].delta)
        deltas.append(chunk.choices[0])
    assert deltas[0].delta.role == "assistant"
    assert "".join(d.delta.content or "" for d in deltas) == "You said: ping pong "
    assert all(d.delta.content for d in deltas[1:-1])  # pieces as they come (the transport may join some)
    assert deltas[-1].finish_reason == "stop" and not deltas[-1].delta.content
    printed = capsys.readouterr().out
    assert "role='assistant'" in printed and "content='You" in printed


def test_stream_ends_with_done_and_include_usage_where_known(server, wordy):
    with server.client() as http:
        body = {"model": "wordy", "messages": USER, "stream": True,
                "stream_options": {"include_usage": True}, "baseten": {"model_id": wordy}}
        # a streamed predict: usage unknown, so no usage chunk and the header says so
        resp = http.post("/v1/chat/completions", json=body)
        assert resp.headers["x-trestle-usage"] == "not-computed"
        events = [l for l in resp.text.split("\n\n") if l]
        assert events[-1] == "data: [DONE]"
        assert all("usage" not in json.loads(e[6:]) for e in events[:-1])


def test_include_usage_sends_the_reported_usage_in_a_last_chunk(client, wordy):
    """A whole result with usage, asked for as a stream: one content delta, then the usage chunk."""
    stream = client.chat.completions.create(model="wordy", messages=USER, stream=True,
                                            stream_options={"include_usage": True},
                                            extra_body={"baseten": {"model_id": wordy}, "mode": "usage"})
    chunks = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "You said: ping pong"
    assert chunks[-1].choices == [] and chunks[-1].usage.total_tokens == 7
    assert all(c.usage is None for c in chunks[:-1])


def test_streamed_text_completions(client, wordy):
    stream = client.completions.create(model="wordy", prompt="a b", stream=True,
                                       stream_options={"include_usage": True},
                                       extra_body={"baseten": {"model_id": wordy}})
    chunks = list(stream)
    assert "".join(c.choices[0].text for c in chunks if c.choices) == "You said: a b "
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_text_completions_are_wrapped_too(client, wordy):
    done = client.completions.create(model="wordy", prompt="hello there",
                                     extra_body={"baseten": {"model_id": wordy}})
    assert done.object == "text_completion" and done.id.startswith("cmpl-")
    assert done.choices[0].text == "You said: hello there"
    assert done.choices[0].finish_reason == "stop"


# -- OpenAI-mode deployments ----------------------------------------------------------------------
def test_a_model_with_chat_completions_gets_the_request_as_sent(client, pushed):
    m = pushed("openai_methods")["model"]["id"]
    chat = client.chat.completions.create(model="echo", messages=USER,
                                          extra_body={"baseten": {"model_id": m}})
    assert chat.choices[0].message.content == "You said: ping pong"
    assert chat.usage.completion_tokens == 4  # the model's own answer, usage included
    stream = client.chat.completions.create(model="echo", messages=USER, stream=True,
                                            extra_body={"baseten": {"model_id": m}})
    assert "".join(c.choices[0].delta.content or "" for c in stream) == "You said: ping pong"
    done = client.completions.create(model=f"baseten/{m}", prompt="hi there")
    assert done.choices[0].text == "You said: hi there"


def test_the_engine_by_baseten_field_by_model_prefix_and_by_slug(client, engine_id):
    kwargs = dict(messages=[{"role": "user", "content": "Name a colour."}], max_tokens=6, temperature=0)
    by_slug = client.chat.completions.create(model=SLUG, **kwargs).choices[0].message.content
    by_field = client.chat.completions.create(model=SLUG, extra_body={"baseten": {"model_id": engine_id}},
                                              **kwargs)
    by_prefix = client.chat.completions.create(model=f"baseten/{engine_id}", **kwargs)
    assert by_field.choices[0].message.content == by_slug
    assert by_prefix.choices[0].message.content == by_slug
    assert by_field.usage.prompt_tokens > 0  # the engine's real usage


def test_a_pinned_deployment_that_is_not_production(server, client, tmp_path):
    v1 = tmp_path / "v1"
    shutil.copytree(MODELS / "wordy", v1)
    (v1 / "config.yaml").write_text("model_name: wordy-versions\n")
    first = server.push(v1)
    v2 = tmp_path / "v2"
    shutil.copytree(v1, v2)
    code = v2 / "model" / "model.py"
    code.write_text(code.read_text().replace('f"You said: {text}"', 'f"Version two: {text}"'))
    second = server.push(v2)
    m, d2 = first["model"]["id"], second["deployment"]["id"]
    wait_for(lambda: active(server, d2), "the second deployment to be active")

    def say(**target) -> str:
        chat = client.chat.completions.create(model="x", messages=USER, extra_body={"baseten": target})
        return chat.choices[0].message.content

    assert say(model_id=m) == "You said: ping pong"
    assert say(model_id=m, deployment_id=d2) == "Version two: ping pong"
    chat = client.chat.completions.create(model=f"baseten/{m}/{d2}", messages=USER)
    assert chat.choices[0].message.content == "Version two: ping pong"


# -- the direct bridge ----------------------------------------------------------------------------
def test_direct_bridge_streams_from_the_engine(server, engine_id):
    direct = openai.OpenAI(base_url=f"{server.url}/v1/direct", api_key=server.api_key, max_retries=0)
    stream = direct.chat.completions.create(
        model=SLUG, messages=[{"role": "user", "content": "Count to three."}], max_tokens=8,
        temperature=0, stream=True, extra_body={"baseten": {"model_id": engine_id}})
    chunks = list(stream)
    assert chunks[0].object == "chat.completion.chunk"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert any(c.choices and c.choices[0].finish_reason for c in chunks)


def test_direct_bridge_refuses_a_predict_only_model(server, wordy):
    direct = openai.OpenAI(base_url=f"{server.url}/v1/direct", api_key=server.api_key, max_retries=0)
    with pytest.raises(openai.BadRequestError) as err:
        direct.chat.completions.create(model="x", messages=USER, extra_body={"baseten": {"model_id": wordy}})
    assert "/v1/chat/completions" in err.value.body["message"]
    assert err.value.body["param"] == "baseten.model_id"


# -- /v1/models -----------------------------------------------------------------------------------
def test_models_lists_slugs_and_deployed_models(server, client, wordy, engine_id):
    ids = [m.id for m in client.models.list().data]
    assert SLUG in ids and f"baseten/{wordy}" in ids and f"baseten/{engine_id}" in ids
    with server.client() as http:
        cards = {c["id"]: c for c in http.get("/v1/models").json()["data"]}
    assert cards[f"baseten/{wordy}"]["name"] == "wordy"


# -- errors ---------------------------------------------------------------------------------------
def test_unknown_model_or_deployment_is_a_404_naming_it(client, wordy):
    with pytest.raises(openai.NotFoundError) as err:
        client.chat.completions.create(model="x", messages=USER, extra_body={"baseten": {"model_id": "mnope"}})
    assert "mnope" in err.value.body["message"] and err.value.body["param"] == "baseten.model_id"
    with pytest.raises(openai.NotFoundError) as err:
        client.chat.completions.create(model="x", messages=USER,
                                       extra_body={"baseten": {"model_id": wordy, "deployment_id": "dnope"}})
    assert "dnope" in err.value.body["message"] and err.value.body["param"] == "baseten.deployment_id"
    with pytest.raises(openai.NotFoundError) as err:
        client.chat.completions.create(model="baseten/mnope", messages=USER)
    assert "mnope" in err.value.body["message"] and err.value.body["param"] == "model"


@pytest.mark.parametrize("baseten", ["m123", [], {}, {"model_id": 5}, {"deployment_id": "d1"}])
def test_a_bad_baseten_field_is_a_400_naming_model_id(client, baseten):
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model="x", messages=USER, extra_body={"baseten": baseten})
    assert err.value.body["param"] == "baseten.model_id"


def test_a_loading_deployment_is_a_503_with_retry_after(server):
    m = server.push(MODELS / "slow_load", "--no-wait")["model"]["id"]
    with server.client() as http:
        resp = http.post("/v1/chat/completions", json={"model": "x", "messages": USER, "baseten": {"model_id": m}})
    assert resp.status_code == 503, resp.text
    assert resp.headers["retry-after"].isdigit()
    assert resp.json()["error"]["code"] == "loading"


def test_a_failed_deployment_is_a_503_naming_the_failure(server):
    push = server.push(EXAMPLES / "load_fails", "--no-wait")
    d = push["deployment"]["id"]

    def failed() -> bool:
        with server.client() as http:
            return http.get(f"/api/v1/deployments/{d}").json()["status"] == "failed"

    wait_for(failed, "the deployment to fail")
    with server.client() as http:
        resp = http.post("/v1/chat/completions", json={
            "model": "x", "messages": USER, "baseten": {"model_id": push["model"]["id"], "deployment_id": d}})
    assert resp.status_code == 503, resp.text
    assert "failed" in resp.json()["error"]["message"] and "retry-after" not in resp.headers
