"""The built-in Model API through the gateway, as a user gets it right after `trestle serve`."""

from __future__ import annotations


import httpx
import openai
import pytest
import yaml

from support import EXAMPLES, SLUG, wait_for


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key=server.api_key, max_retries=0)


def test_models_lists_the_builtin_slug(client):
    assert SLUG in [m.id for m in client.models.list().data]


def test_chat_completion_with_the_slug(client):
    chat = client.chat.completions.create(
        model=SLUG, messages=[{"role": "user", "content": "What is the capital of France?"}],
        max_tokens=8, temperature=0,
    )
    assert chat.model == SLUG
    assert chat.choices[0].message.role == "assistant"
    assert chat.choices[0].message.content
    assert chat.usage.completion_tokens <= 8 and chat.usage.prompt_tokens > 0


def test_streaming_matches_non_streaming_at_temperature_zero(client):
    kwargs = dict(model=SLUG, messages=[{"role": "user", "content": "Name a colour."}],
                  max_tokens=8, temperature=0)
    full = client.chat.completions.create(**kwargs).choices[0].message.content
    stream = client.chat.completions.create(stream=True, **kwargs)
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == full


def test_prompt_style_completions(client):
    done = client.completions.create(model=SLUG, prompt="One, two, three,", max_tokens=4,
                                     temperature=0)
    assert done.choices[0].text
    assert done.usage.completion_tokens <= 4


def test_unknown_model_is_a_404_naming_the_field(client):
    with pytest.raises(openai.NotFoundError) as err:
        client.chat.completions.create(model="nope/nope", messages=[{"role": "user", "content": "x"}])
    body = err.value.body
    assert body["param"] == "model" and body["code"] == "model_not_found"
    assert SLUG in body["message"]


def test_engine_validation_errors_pass_through_with_param(client):
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model=SLUG, messages=[{"role": "user", "content": "x"}],
                                       temperature=9)
    assert err.value.body["param"] == "temperature"


def test_an_engine_folder_deploys_like_any_model_and_is_served_by_its_slug(server, tmp_path):
    """No model code: a config.yaml with an `engine:` section, pushed with the real CLI."""
    folder = tmp_path / "my-engine"
    folder.mkdir()
    config = yaml.safe_load((EXAMPLES / "smollm2-single" / "config.yaml").read_text())
    config["model_name"] = "my-smollm2"
    config["engine"]["slug"] = "acme/my-smollm2"
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    push = server.push(folder)
    assert push["deployment"]["status"] == "active"
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key=server.api_key, max_retries=0)
    assert {"acme/my-smollm2", SLUG} <= {m.id for m in client.models.list().data}
    chat = client.chat.completions.create(model="acme/my-smollm2", max_tokens=3, temperature=0,
                                          messages=[{"role": "user", "content": "Hi"}])
    assert chat.model == "acme/my-smollm2" and chat.usage.completion_tokens <= 3
    # and through the model's own URLs, like any deployment
    with server.client() as http:
        resp = http.post(f"/model/{push['model']['id']}/production/sync/v1/chat/completions",
                         json={"model": "acme/my-smollm2", "max_tokens": 2,
                               "messages": [{"role": "user", "content": "Hi"}]})
    assert resp.status_code == 200 and resp.json()["object"] == "chat.completion"


def test_a_client_leaving_a_non_streaming_completion_frees_the_engine(server, client):
    """The gateway closes the worker connection when the client goes away before the answer,
    so the engine cancels the sequence instead of generating all 1500 tokens for nobody."""
    m = next(m for m in server.cli_json("models", "list")["models"]
             if m["name"] == "SmolLM2-135M-Instruct")["id"]
    health_url = f"/model/{m}/production/sync/health"
    with server.client() as http:
        before = http.get(health_url).json()["cancelled_sequences"]
        body = {"model": SLUG, "max_tokens": 1500, "ignore_eos": True,
                "messages": [{"role": "user", "content": "Count to a million."}]}
        with pytest.raises(httpx.ReadTimeout):  # the client gives up waiting
            http.post("/v1/chat/completions", json=body, timeout=httpx.Timeout(120, read=1.5))
        health = wait_for(
            lambda: (h := http.get(health_url).json())["cancelled_sequences"] > before
            and h["active_sequences"] == 0 and h,
            "the engine to cancel the sequence")
    assert health["cancelled_sequences"] == before + 1, health
    assert health["active_sequences"] == 0
