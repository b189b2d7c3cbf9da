"""OpenAI's own Chat Completions fields, each as docs/model-api-fields.md decides it, through a
real `trestle serve`: honoured, accepted with no effect, or a 400 that names the field and says
why. A field that neither OpenAI nor trestle defines stays a 400 naming it."""

from __future__ import annotations

import hashlib

import openai
import pytest

from support import SLUG

HI = [{"role": "user", "content": "Name a colour."}]


@pytest.fixture(scope="module")
def http(server):
    with server.client() as c:
        yield c


def chat(http, **fields):
    return http.post("/v1/chat/completions", json={"model": SLUG, "messages": HI, "max_tokens": 4,
                                                   "temperature": 0, **fields})


def error(res, status=400) -> dict:
    assert res.status_code == status, res.text
    return res.json()["error"]


@pytest.fixture(scope="module")
def plain(http) -> str:
    res = chat(http)
    assert res.status_code == 200, res.text
    return res.json()["choices"][0]["message"]["content"]


@pytest.mark.parametrize(
    "field, value, words",
    [
        ("store", True, "not stored"),
        ("service_tier", "priority", "one service tier"),
        ("service_tier", "flex", "one service tier"),
        ("modalities", ["text", "audio"], "text only"),
        ("audio", {"voice": "alloy", "format": "wav"}, "text only"),
        ("reasoning_effort", "low", "no reasoning-effort setting"),
        ("verbosity", "low", "no verbosity setting"),
        ("web_search_options", {}, "cannot search the web"),
        ("moderation", {"model": "omni-moderation-latest"}, "does not run moderation"),
        ("functions", [{"name": "f", "parameters": {}}], "send tools"),
        ("function_call", "auto", "send tool_choice"),
    ],
)
def test_what_the_model_cannot_do_is_a_400_saying_why(http, field, value, words):
    err = error(chat(http, **{field: value}))
    assert err["param"] == field
    assert words in err["message"] and err["type"] == "invalid_request_error"


@pytest.mark.parametrize(
    "fields",
    [
        {"store": False},
        {"metadata": {"tenant": "t1", "purpose": "test"}},
        {"service_tier": "auto"},
        {"service_tier": "default"},
        {"prediction": {"type": "content", "content": "Blue."}},
        {"modalities": ["text"]},
        {"reasoning_effort": "none"},
        {"safety_identifier": "user-hash-1"},
        {"prompt_cache_key": "k1", "prompt_cache_retention": "in_memory", "prompt_cache_options": {}},
    ],
)
def test_fields_accepted_with_no_effect_change_nothing(http, plain, fields):
    res = chat(http, **fields)
    assert res.status_code == 200, res.text
    assert res.json()["choices"][0]["message"]["content"] == plain


def test_max_completion_tokens_is_max_tokens(http):
    body = {"model": SLUG, "messages": HI, "ignore_eos": True, "temperature": 0}
    res = http.post("/v1/chat/completions", json={**body, "max_completion_tokens": 3})
    assert res.status_code == 200, res.text
    assert res.json()["usage"]["completion_tokens"] == 3
    res = http.post("/v1/chat/completions", json={**body, "max_completion_tokens": 3, "max_tokens": 3})
    assert res.json()["usage"]["completion_tokens"] == 3
    err = error(http.post("/v1/chat/completions", json={**body, "max_completion_tokens": 3, "max_tokens": 5}))
    assert err["param"] == "max_completion_tokens" and "differ" in err["message"]
    err = error(http.post("/v1/chat/completions", json={**body, "max_completion_tokens": 0}))
    assert err["param"] == "max_completion_tokens"


def test_null_is_the_default_but_not_for_required_fields(http, plain):
    res = chat(http, top_p=None, top_k=None, stream=None, n=None, echo=None, min_p=None,
               repetition_penalty=None, logprobs=None, top_logprobs=None, parallel_tool_calls=None,
               presence_penalty=None, frequency_penalty=None, skip_special_tokens=None)
    assert res.status_code == 200, res.text
    assert res.json()["choices"][0]["message"]["content"] == plain
    assert error(http.post("/v1/chat/completions", json={"model": None, "messages": HI}))["param"] == "model"
    assert error(chat(http, messages=None))["param"] == "messages"


@pytest.mark.parametrize("part", [
    {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}},
    {"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}},
])
def test_an_image_or_audio_part_says_the_model_takes_text_only(server, part):
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key=server.api_key, max_retries=0)
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(
            model=SLUG, max_tokens=4,
            messages=[{"role": "user", "content": [{"type": "text", "text": "What is this?"}, part]}],
        )
    assert info.value.body["param"] == "messages.0.content"
    assert "takes text only" in info.value.body["message"] and part["type"] in info.value.body["message"]


def test_assistant_message_fields_from_openai_types(http, plain):
    said = {"role": "assistant", "content": None, "refusal": "I cannot help with that.",
            "annotations": [], "audio": None, "function_call": None, "tool_calls": None}
    res = chat(http, messages=[*HI, said, {"role": "user", "content": "Why?"}])
    assert res.status_code == 200, res.text
    err = error(chat(http, messages=[*HI, {**said, "audio": {"id": "audio_1"}}]))
    assert err["param"] == "messages.1.audio" and "text only" in err["message"]
    err = error(chat(http, messages=[*HI, {**said, "function_call": {"name": "f", "arguments": "{}"}}]))
    assert err["param"] == "messages.1.function_call" and "tool_calls" in err["message"]


@pytest.mark.parametrize("field", ["foo", "instructions", "max_output_tokens"])
def test_fields_neither_openai_chat_nor_trestle_define_stay_unknown(http, field):
    err = error(chat(http, **{field: 1}))
    assert err["param"] == field and "Unrecognized request argument" in err["message"]


def test_user_metadata_and_safety_identifier_never_reach_the_logs(server, http):
    secrets = {"user": "alice@example.com", "safety_identifier": "sid-7f3a9c",
               "metadata": {"tenant": "tenant-secret-42"}}
    assert chat(http, **secrets).status_code == 200
    logs = "".join(p.read_text(errors="replace") for p in server.home.rglob("*.log"))
    assert hashlib.sha256(b"alice@example.com").hexdigest()[:12] in logs  # logged, as a hash
    for raw in ("alice@example.com", "sid-7f3a9c", "tenant-secret-42"):
        assert raw not in logs
