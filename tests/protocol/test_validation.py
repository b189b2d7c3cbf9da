"""parse_body: every bad body becomes BadRequest with a message and a `param` naming the field."""

from __future__ import annotations

import json
from typing import Any

import httpx
import openai
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trestle.errors import BadRequest
from trestle.protocol.errors import error_body
from trestle.protocol.openai.messages import AssistantMessage, ToolMessage, UserMessage
from trestle.protocol.openai.requests import ChatCompletionRequest, CompletionRequest
from trestle.protocol.openai.structured import ResponseFormatJson
from trestle.protocol.validation import parse_body

MESSAGES = [{"role": "user", "content": "Hello"}]


def chat(**fields: Any) -> bytes:
    return json.dumps({"model": "m", "messages": MESSAGES, **fields}).encode()


def bad(model_cls: type, raw: bytes | str) -> BadRequest:
    with pytest.raises(BadRequest) as info:
        parse_body(model_cls, raw)
    return info.value


def test_minimal_chat_request_gets_the_seed_defaults() -> None:
    req = parse_body(ChatCompletionRequest, chat())
    assert isinstance(req.messages[0], UserMessage)
    assert req.messages[0].text() == "Hello"
    assert (req.max_tokens, req.n, req.top_p, req.top_k, req.temperature) == (4096, 1, 1, 50, None)
    assert (req.logprobs, req.top_logprobs, req.stream, req.echo) == (False, 0, False, False)
    assert (req.add_generation_prompt, req.add_special_tokens, req.skip_special_tokens) == (True, False, True)
    assert (req.repetition_penalty, req.length_penalty, req.parallel_tool_calls) == (1, 1, True)
    assert req.stop_list == []


def test_a_full_conversation_with_tools_parses() -> None:
    body = {
        "model": "m",
        "messages": [
            {"role": "system", "content": [{"type": "text", "text": "Be "}, {"type": "text", "text": "brief."}]},
            {"role": "user", "content": "Weather in Paris?"},
            {"role": "assistant", "content": None, "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}
            ]},
            {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
            {"role": "assistant", "content": "It is"},
        ],
        "tools": [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}],
        "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
        "response_format": {"type": "json_schema", "json_schema": {"name": "w", "schema": {"type": "object"}}},
        "stop": ["\n\n", "END"],
        "stream": True,
        "stream_options": {"include_usage": True},
        "logprobs": True,
        "top_logprobs": 20,
        "logit_bias": {"42": -100, "7": 100},
        "documents": [{"title": "a", "text": "b"}],
        "chat_template_args": {"enable_thinking": False},
        "echo": True,
    }
    req = parse_body(ChatCompletionRequest, json.dumps(body))
    assert req.messages[0].text() == "Be brief."
    assert isinstance(req.messages[2], AssistantMessage) and req.messages[2].tool_calls[0].function.name == "get_weather"
    assert isinstance(req.messages[3], ToolMessage) and req.messages[3].tool_call_id == "c1"
    assert isinstance(req.response_format, ResponseFormatJson)
    assert req.response_format.json_schema.json_schema == {"type": "object"}
    assert req.stop_list == ["\n\n", "END"]
    assert req.stream_options.include_usage is True


@pytest.mark.parametrize(
    "raw, param, words",
    [
        (b"{", None, "body is not valid JSON"),
        (b"", None, "body is not valid JSON"),
        (b"\xff\xfe", None, "body is not valid JSON"),
        (b"[1, 2]", None, "body must be a JSON object"),
        (chat(foo=1), "foo", "Unrecognized request argument: foo"),
        (chat(max_completion_tokens=5, max_tokens=6), "max_completion_tokens", "differ"),
        (json.dumps({"messages": MESSAGES}), "model", "field required"),
        (json.dumps({"model": "m"}), "messages", "field required"),
        (json.dumps({"model": "m", "messages": []}), "messages", "at least 1"),
        (json.dumps({"model": "m", "messages": [{"role": "bob", "content": "x"}]}), "messages.0.role", "'bob'"),
        (json.dumps({"model": "m", "messages": [{"content": "x"}]}), "messages.0.role", "required"),
        (json.dumps({"model": "m", "messages": [{"role": "user", "content": "x", "x": 1}]}),
         "messages.0.x", "Unrecognized request argument"),
        (json.dumps({"model": "m", "messages": [{"role": "user", "content": [{"type": "image_url"}]}]}),
         "messages.0.content", "takes text only"),
        (json.dumps({"model": "m", "messages": [{"role": "user", "content": [{"type": "video"}]}]}),
         "messages.0.content.0.type", "'text'"),
        (json.dumps({"model": "m", "messages": [{"role": "tool", "content": "x"}]}),
         "messages.0.tool_call_id", "field required"),
        (json.dumps({"model": "m", "messages": [{"role": "assistant"}]}), "messages.0", "content"),
        (chat(temperature=4.5), "temperature", "less than or equal to 4"),
        (chat(temperature="0.5"), "temperature", "valid number"),
        (chat(temperature=None, top_p=0), "top_p", "greater than 0"),
        (chat(max_tokens=0), "max_tokens", "greater than or equal to 1"),
        (chat(max_tokens=262145), "max_tokens", "less than or equal to 262144"),
        (chat(n=2), "n", "only 1 is supported"),
        (chat(best_of=2), "best_of", "less than or equal to 1"),
        (chat(top_logprobs=3), "top_logprobs", "requires logprobs"),
        (chat(logprobs=True, top_logprobs=21), "top_logprobs", "less than or equal to 20"),
        (chat(logprobs="yes"), "logprobs", "valid boolean"),
        (chat(stop=""), "stop", "at least 1 character"),
        (chat(stop=["a", "x" * 1001]), "stop.1", "at most 1000"),
        (chat(stop=["s"] * 33), "stop", "at most 32"),
        (chat(stop=5), "stop", "valid string"),
        (chat(logit_bias={"abc": 1}), "logit_bias", "token ids"),
        (chat(logit_bias={"1": 101}), "logit_bias.1", "less than or equal to 100"),
        (chat(logit_bias={"²": 1}), "logit_bias", "token ids"),
        (chat(seed=2**64), "seed", "less than or equal to"),
        (chat(stream_options={"include_usage": True}), "stream_options", "stream is true"),
        (chat(stream=True, stream_options={"include_usage": True, "x": 1}), "stream_options.x", "Unrecognized"),
        (chat(response_format={"type": "xml"}), "response_format.type", "'xml'"),
        (chat(response_format={"type": "json_schema", "json_schema": {"name": "a", "schema": []}}),
         "response_format.json_schema.schema", "object"),
        (chat(response_format={"type": "grammar"}), "response_format.grammar", "field required"),
        (chat(tools=[{"type": "function", "function": {"name": "has space"}}]), "tools.0.function.name", "pattern"),
        (chat(tool_choice="maybe"), "tool_choice", "'auto'"),
        (chat(tool_choice="auto"), "tool_choice", "needs `tools`"),
        (chat(documents=[{"a": 1}]), "documents.0.a", "valid string"),
        (chat(min_tokens=10, max_tokens=5), "min_tokens", "must not exceed max_tokens"),
        (chat(stop_token_ids=[1, -2]), "stop_token_ids.1", "greater than or equal to 0"),
        (chat(top_k=-2), "top_k", "greater than or equal to -1"),
        (chat(disaggregated_params={"request_type": "both"}), "disaggregated_params.request_type", "context_only"),
        (chat(chat_template_args=[]), "chat_template_args", "object"),
        (chat(chat_template_args={"bos_token": "x", "ok": 1}), "chat_template_args", "bos_token cannot be set here"),
    ],
)
def test_bad_chat_bodies_name_the_field(raw: bytes | str, param: str | None, words: str) -> None:
    exc = bad(ChatCompletionRequest, raw)
    assert exc.param == param
    assert words in exc.message
    assert exc.status_code == 400
    envelope = error_body(exc)["error"]
    assert envelope["param"] == param and envelope["type"] == "invalid_request_error"


@pytest.mark.parametrize(
    "body, expected",
    [
        ({"prompt": "Once upon"}, "Once upon"),
        ({"prompt": ["Once upon"]}, "Once upon"),
        ({"prompt": [1, 2, 3]}, [1, 2, 3]),
        ({"prompt": [[1, 2, 3]]}, [1, 2, 3]),
    ],
)
def test_completion_prompt_forms(body: dict, expected: Any) -> None:
    req = parse_body(CompletionRequest, json.dumps({"model": "m", **body}))
    assert req.prompt == expected
    assert (req.echo, req.logprobs, req.add_special_tokens, req.max_tokens) == (False, None, True, 4096)


@pytest.mark.parametrize(
    "body, param, words",
    [
        ({"prompt": ["a", "b"]}, "prompt", "only one prompt"),
        ({"prompt": [[1], [2]]}, "prompt", "only one prompt"),
        ({"prompt": []}, "prompt", "empty"),
        ({"prompt": 5}, "prompt", "valid string"),
        ({"prompt": "a", "suffix": "b"}, "suffix", "not supported"),
        ({"prompt": "a", "logprobs": 6}, "logprobs", "less than or equal to 5"),
        ({"prompt": "a", "logprobs": True}, "logprobs", "valid integer"),
        ({"prompt": "a", "messages": MESSAGES}, "messages", "Unrecognized request argument"),
        ({"prompt": "a", "n": 3}, "n", "only 1"),
        ({}, "prompt", "field required"),
    ],
)
def test_bad_completion_bodies_name_the_field(body: dict, param: str, words: str) -> None:
    exc = bad(CompletionRequest, json.dumps({"model": "m", **body}))
    assert exc.param == param
    assert words in exc.message


# -- ranges, with hypothesis --------------------------------------------------------------------

RANGES = {  # field: (inclusive low or None, inclusive high or None, low exclusive?)
    "temperature": (0, 4, False),
    "top_p": (0, 1, True),
    "min_p": (0, 1, False),
    "frequency_penalty": (-2, 2, False),
    "presence_penalty": (-2, 2, False),
}


def _inside(field: str, value: float) -> bool:
    low, high, open_low = RANGES[field]
    return (value > low if open_low else value >= low) and value <= high


@settings(max_examples=300, deadline=None)
@given(field=st.sampled_from(sorted(RANGES)), value=st.floats(min_value=-10, max_value=10))
def test_float_ranges(field: str, value: float) -> None:
    raw = chat(**{field: value})
    if _inside(field, value):
        assert getattr(parse_body(ChatCompletionRequest, raw), field) == value
    else:
        exc = bad(ChatCompletionRequest, raw)
        assert exc.param == field


@settings(max_examples=200, deadline=None)
@given(value=st.integers(min_value=-5, max_value=300_000))
def test_max_tokens_range(value: int) -> None:
    raw = chat(max_tokens=value)
    if 1 <= value <= 262144:
        assert parse_body(ChatCompletionRequest, raw).max_tokens == value
    else:
        assert bad(ChatCompletionRequest, raw).param == "max_tokens"


@settings(max_examples=100, deadline=None)
@given(value=st.integers(min_value=-3, max_value=40), logprobs=st.booleans())
def test_top_logprobs_range_and_dependency(value: int, logprobs: bool) -> None:
    raw = chat(top_logprobs=value, logprobs=logprobs)
    if 0 <= value <= 20 and (logprobs or value == 0):
        assert parse_body(ChatCompletionRequest, raw).top_logprobs == value
    else:
        assert bad(ChatCompletionRequest, raw).param == "top_logprobs"


@settings(max_examples=100, deadline=None)
@given(stops=st.lists(st.text(max_size=1002), max_size=35))
def test_stop_lists(stops: list[str]) -> None:
    raw = chat(stop=stops)
    if len(stops) <= 32 and all(1 <= len(s) <= 1000 for s in stops):
        assert parse_body(ChatCompletionRequest, raw).stop_list == stops
    else:
        assert bad(ChatCompletionRequest, raw).param.startswith("stop")


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-10**6, 10**6) | st.floats(allow_nan=False) | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8,
)


@settings(max_examples=300, deadline=None)
@given(fields=st.dictionaries(st.sampled_from(sorted(ChatCompletionRequest.model_fields)), JSON_VALUES, max_size=4))
def test_any_json_body_parses_or_names_a_field_it_contains(fields: dict) -> None:
    body = {"model": "m", "messages": MESSAGES, **fields}
    try:
        parse_body(ChatCompletionRequest, json.dumps(body))
    except BadRequest as exc:
        assert exc.param is not None and exc.param.split(".")[0] in body, (exc.param, exc.message)
        assert exc.message


# -- the official client's bodies parse -----------------------------------------------------------


def _bodies_sent_by_openai_client(call) -> list[bytes]:
    sent: list[bytes] = []

    def capture(request: httpx.Request) -> httpx.Response:
        sent.append(request.content)
        return httpx.Response(500, json={"error": {"message": "capture only", "type": "x"}})

    client = openai.OpenAI(api_key="k", base_url="http://test/v1", max_retries=0,
                           http_client=httpx.Client(transport=httpx.MockTransport(capture)))
    with pytest.raises(openai.InternalServerError):
        call(client)
    return sent


def test_chat_body_from_the_openai_client_parses() -> None:
    (raw,) = _bodies_sent_by_openai_client(lambda c: c.chat.completions.create(
        model="HuggingFaceTB/SmolLM2-135M-Instruct",
        messages=[{"role": "system", "content": "s"}, {"role": "user", "content": "u"}],
        temperature=0.7, top_p=0.9, max_tokens=32, stop=["\n"], seed=3, logprobs=True, top_logprobs=2,
        stream=True, stream_options={"include_usage": True}, user="u1", frequency_penalty=0.1,
        response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}, "strict": True}},
        extra_body={"top_k": 5, "min_p": 0.05, "repetition_penalty": 1.1, "chat_template_args": {"a": 1}},
    ))
    req = parse_body(ChatCompletionRequest, raw)
    assert (req.temperature, req.top_p, req.max_tokens, req.top_k, req.top_logprobs) == (0.7, 0.9, 32, 5, 2)
    assert req.response_format.json_schema.strict is True


def test_completion_body_from_the_openai_client_parses() -> None:
    (raw,) = _bodies_sent_by_openai_client(lambda c: c.completions.create(
        model="m", prompt="Once upon a time", max_tokens=8, echo=True, logprobs=2, temperature=0,
    ))
    req = parse_body(CompletionRequest, raw)
    assert (req.prompt, req.max_tokens, req.echo, req.logprobs, req.temperature) == ("Once upon a time", 8, True, 2, 0)
