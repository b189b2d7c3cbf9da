"""`POST /v1/messages`, the Anthropic Messages API, with the official `anthropic` client: the
built-in engine by slug and by `baseten/...`, a Model with `chat_completions`, tool use, keys."""

from __future__ import annotations

import json
from pathlib import Path

import anthropic
import httpx
import openai
import pytest

from support import SLUG, wait_for

MODELS = Path(__file__).parent / "models"
BUILTIN_NAME = "SmolLM2-135M-Instruct"
COLOUR = dict(model=SLUG, max_tokens=8, system="Answer in one word.",
              messages=[{"role": "user", "content": "Name a colour."}], extra_body={"temperature": 0})
WEATHER = {"name": "get_weather", "description": "The weather in a city.",
           "input_schema": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 12}},
                            "required": ["city"], "additionalProperties": False}}
ASK_WEATHER = [{"role": "user", "content": "What is the weather in Paris?"}]


def anthropic_client(server, **kwargs) -> anthropic.Anthropic:
    kwargs.setdefault("api_key", server.api_key)
    return anthropic.Anthropic(base_url=server.url, max_retries=0, timeout=120, **kwargs)


@pytest.fixture(scope="module")
def client(server):
    return anthropic_client(server)


@pytest.fixture(scope="module")
def engine_id(server):
    with server.client() as http:
        models = http.get("/api/v1/models").json()["models"]
    return next(m["id"] for m in models if m["name"] == BUILTIN_NAME)


@pytest.fixture(scope="module")
def echo(server):
    """A Model with `chat_completions` that answers with the request it received."""
    return server.push(MODELS / "chat_echo")["model"]["id"]


@pytest.fixture(scope="module")
def colour(client):
    return client.messages.create(**COLOUR)


def events_of(resp: httpx.Response) -> list[tuple[str, dict]]:
    """(event name, data) of each server-sent event; every `event:` line must name its data's type."""
    out = []
    for frame in resp.text.split("\n\n"):
        if not frame.strip():
            continue
        name, data = frame.split("\n", 1)
        assert name.startswith("event: ") and data.startswith("data: "), frame
        out.append((name[7:], json.loads(data[6:])))
        assert out[-1][0] == out[-1][1]["type"]
    return out


# -- the engine, by slug ------------------------------------------------------------------------
def test_a_message_from_the_engine_is_its_chat_completion_in_anthropics_shape(server, colour):
    chat = openai.OpenAI(base_url=f"{server.url}/v1", api_key=server.api_key, max_retries=0).chat.completions.create(
        model=SLUG, max_tokens=8, temperature=0,
        messages=[{"role": "system", "content": "Answer in one word."}, {"role": "user", "content": "Name a colour."}])
    assert colour.type == "message" and colour.role == "assistant" and colour.model == SLUG
    assert colour.id.startswith("msg_") and len(colour.id) > 30
    assert [block.type for block in colour.content] == ["text"]
    assert colour.content[0].text == chat.choices[0].message.content
    assert colour.stop_reason == {"stop": "end_turn", "length": "max_tokens"}[chat.choices[0].finish_reason]
    assert colour.stop_sequence is None
    assert colour.usage.input_tokens == chat.usage.prompt_tokens > 0
    assert colour.usage.output_tokens == chat.usage.completion_tokens > 0


def test_the_client_stream_helper_gives_the_same_message(client, colour):
    with client.messages.stream(**COLOUR) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == colour.content[0].text == final.content[0].text
    assert final.id.startswith("msg_") and final.stop_reason == colour.stop_reason
    assert (final.usage.input_tokens, final.usage.output_tokens) == (colour.usage.input_tokens,
                                                                     colour.usage.output_tokens)


def test_the_stream_is_anthropics_event_sequence(server, colour):
    body = {**{k: v for k, v in COLOUR.items() if k != "extra_body"}, "temperature": 0, "stream": True}
    resp = httpx.post(f"{server.url}/v1/messages", json=body, headers={"x-api-key": server.api_key}, timeout=120)
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/event-stream")
    events = events_of(resp)
    names = [name for name, _ in events]
    assert names[:2] == ["message_start", "content_block_start"]
    assert names[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    assert set(names[2:-3]) == {"content_block_delta"}
    start = events[0][1]["message"]
    assert start["id"].startswith("msg_") and start["content"] == [] and start["stop_reason"] is None
    assert events[1][1] == {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}
    assert "".join(d["delta"]["text"] for n, d in events if n == "content_block_delta") == colour.content[0].text
    delta = events[-2][1]
    assert delta["delta"] == {"stop_reason": colour.stop_reason, "stop_sequence": None}
    assert delta["usage"] == {"input_tokens": colour.usage.input_tokens, "output_tokens": colour.usage.output_tokens}


def test_max_tokens_and_stop_sequences(client):
    ask = dict(model=SLUG, messages=[{"role": "user", "content": "Count from one to twenty, separated by commas."}],
               extra_body={"temperature": 0})
    cut = client.messages.create(max_tokens=12, **ask)
    assert cut.stop_reason == "max_tokens" and cut.usage.output_tokens == 12
    text = cut.content[0].text
    stop = text[len(text) // 2: len(text) // 2 + 2]
    before = text[: text.index(stop)]
    stopped = client.messages.create(max_tokens=12, stop_sequences=["never-said", stop], **ask)
    assert (stopped.stop_reason, stopped.stop_sequence) == ("stop_sequence", stop)
    assert "".join(b.text for b in stopped.content) == before  # the stop sequence itself is not in the text
    with client.messages.stream(max_tokens=12, stop_sequences=[stop], **ask) as stream:
        streamed = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert streamed == before and (final.stop_reason, final.stop_sequence) == ("stop_sequence", stop)


# -- deployments through the bridge --------------------------------------------------------------
def test_the_engine_by_baseten_model_and_by_baseten_field(server, client, engine_id, colour):
    by_model = client.messages.create(**{**COLOUR, "model": f"baseten/{engine_id}"})
    assert by_model.model == f"baseten/{engine_id}"
    assert by_model.content[0].text == colour.content[0].text
    with server.client() as http:
        dep = http.get("/api/v1/deployments", params={"model_id": engine_id}).json()["deployments"][0]["id"]
    pinned = client.messages.create(**{**COLOUR, "model": f"baseten/{engine_id}/{dep}"})
    assert pinned.content[0].text == colour.content[0].text
    extra = {**COLOUR["extra_body"], "baseten": {"model_id": engine_id}}
    with client.messages.stream(**{**COLOUR, "model": "any-name", "extra_body": extra}) as stream:
        assert "".join(stream.text_stream) == colour.content[0].text


def test_a_chat_completions_model_gets_the_translated_request(server, echo):
    key = server.api_key
    client = anthropic_client(server, api_key=None, default_headers={"x-api-key": key, "X-Probe": "yes"})
    msg = client.messages.create(
        model=f"baseten/{echo}", max_tokens=50, system=[{"type": "text", "text": "Be brief."}],
        messages=[
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": [{"type": "text", "text": "Let me look."},
                                              {"type": "tool_use", "id": "toolu_1", "name": "lookup",
                                               "input": {"q": "x"}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "42"},
                                         {"type": "tool_result", "tool_use_id": "toolu_2", "is_error": True,
                                          "content": [{"type": "text", "text": "down"}]},
                                         {"type": "text", "text": "thanks"}]},
        ],
        stop_sequences=["END"], metadata={"user_id": "u-1"},
        tools=[{"name": "lookup", "description": "Look up", "input_schema": {"type": "object"}}],
        tool_choice={"type": "any", "disable_parallel_tool_use": True},
        extra_body={"temperature": 0.5, "top_p": 0.9, "top_k": 5})
    assert (msg.stop_reason, msg.model) == ("end_turn", f"baseten/{echo}")
    assert (msg.usage.input_tokens, msg.usage.output_tokens) == (3, 5)
    seen = json.loads(msg.content[0].text)
    assert seen["body"] == {
        "model": f"baseten/{echo}", "max_tokens": 50, "temperature": 0.5, "top_p": 0.9, "top_k": 5,
        "user": "u-1", "tool_choice": "required", "parallel_tool_calls": False,
        "tools": [{"type": "function", "function": {"name": "lookup", "description": "Look up",
                                                    "parameters": {"type": "object"}}}],
        "messages": [
            {"role": "system", "content": [{"type": "text", "text": "Be brief."}]},
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": [{"type": "text", "text": "Let me look."}],
             "tool_calls": [{"id": "toolu_1", "type": "function",
                             "function": {"name": "lookup", "arguments": '{"q": "x"}'}}]},
            {"role": "tool", "tool_call_id": "toolu_1", "content": "42"},
            {"role": "tool", "tool_call_id": "toolu_2",
             "content": [{"type": "text", "text": "Error: "}, {"type": "text", "text": "down"}]},
            {"role": "user", "content": [{"type": "text", "text": "thanks"}]},
        ]}
    assert seen["headers"]["x-probe"] == "yes"  # the model sees the caller's headers, but not the key
    assert "x-api-key" not in seen["headers"] and "authorization" not in seen["headers"]
    assert key.split("_", 2)[2] not in msg.content[0].text


def test_a_chat_completions_model_calls_a_tool_and_a_whole_answer_streams(client, echo):
    msg = client.messages.create(model=f"baseten/{echo}", max_tokens=20, messages=ASK_WEATHER, tools=[WEATHER],
                                 tool_choice={"type": "tool", "name": "get_weather"})
    assert msg.stop_reason == "tool_use"
    assert [b.model_dump(exclude_none=True) for b in msg.content] == [
        {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"seen": True}}]
    with client.messages.stream(model=f"baseten/{echo}", max_tokens=20, messages=ASK_WEATHER) as stream:
        text = "".join(stream.text_stream)  # the model answered with a whole body: sent as events
        final = stream.get_final_message()
    assert json.loads(text)["body"]["stream"] is True and final.stop_reason == "end_turn"
    assert final.usage.output_tokens == 5


def test_a_chat_completions_model_stops_at_a_stop_sequence_matched_by_the_gateway(server, client, echo):
    """A Model's own code is not given the stop sequences: the gateway finds the first one in its
    answer, across chunks, ends the text before it and stops reading the model's stream."""
    whole = client.messages.create(model=f"baseten/{echo}", max_tokens=20, stop_sequences=['"model"', "zzz"],
                                   messages=[{"role": "user", "content": "hi"}])
    assert (whole.stop_reason, whole.stop_sequence) == ("stop_sequence", '"model"')
    assert whole.content[0].text == '{"body": {'  # the echo of the request, up to the stop
    with client.messages.stream(model=f"baseten/{echo}", max_tokens=20, stop_sequences=["four", "three"],
                                messages=[{"role": "user", "content": "count"}]) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "one two "  # "three" came as "thr" + "ee ": held back until the match
    assert (final.stop_reason, final.stop_sequence) == ("stop_sequence", "three")
    with server.client() as http:
        (deployment,) = [d["id"] for d in http.get("/api/v1/deployments", params={"model_id": echo}).json()["deployments"]]

    def stopped_early() -> bool:  # the model saw its client (the gateway) leave, long before 10,000
        log = server.cli("deployments", "logs", deployment).stdout
        return "count: " in log and int(log.rsplit("count: ", 1)[1].split()[0]) < 10_000

    wait_for(stopped_early, "the model's stream closed at the stop sequence")


def test_a_stream_that_breaks_ends_with_an_error_event(server, client, echo):
    body = {"model": f"baseten/{echo}", "max_tokens": 20, "stream": True,
            "messages": [{"role": "user", "content": "break"}]}
    with server.client() as http:
        resp = http.post("/v1/messages", json=body)
    events = events_of(resp)
    assert [name for name, _ in events] == ["message_start", "content_block_start", "content_block_delta", "error"]
    assert events[2][1]["delta"] == {"type": "text_delta", "text": "so far"}
    assert events[-1][1]["error"]["type"] == "api_error"
    with pytest.raises(anthropic.APIStatusError) as err:
        for _ in client.messages.create(**body):
            pass
    assert err.value.body["error"]["type"] == "api_error"


# -- tool use with the engine --------------------------------------------------------------------
def test_a_forced_tool_call_and_its_result_with_the_engine(client):
    forced = dict(model=SLUG, max_tokens=60, tools=[WEATHER], tool_choice={"type": "tool", "name": "get_weather"},
                  extra_body={"temperature": 0})
    msg = client.messages.create(messages=ASK_WEATHER, **forced)
    assert msg.stop_reason == "tool_use"
    call = next(b for b in msg.content if b.type == "tool_use")
    assert call.name == "get_weather" and isinstance(call.input["city"], str) and call.id
    answer = client.messages.create(
        model=SLUG, max_tokens=10, tools=[WEATHER], tool_choice={"type": "none"}, extra_body={"temperature": 0},
        messages=[*ASK_WEATHER, {"role": "assistant", "content": msg.content},
                  {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id,
                                                "content": "18 degrees and sunny"}]}])
    assert answer.stop_reason in ("end_turn", "max_tokens")
    assert [b.type for b in answer.content] == ["text"] and answer.content[0].text

    with client.messages.stream(messages=ASK_WEATHER, **forced) as stream:
        events = list(stream)
        final = stream.get_final_message()
    starts = [e.content_block for e in events if e.type == "content_block_start"]
    assert [b.type for b in starts] == ["tool_use"] and starts[0].name == "get_weather" and starts[0].input == {}
    partial = "".join(e.delta.partial_json for e in events
                      if e.type == "content_block_delta" and e.delta.type == "input_json_delta")
    assert json.loads(partial) == final.content[0].input and isinstance(final.content[0].input["city"], str)
    assert final.stop_reason == "tool_use"


# -- keys ----------------------------------------------------------------------------------------
def test_an_invoke_key_in_x_api_key(server, echo):
    key = server.cli_json("keys", "create", "anthropic-bot", "--scope", "invoke")["key"]
    client = anthropic_client(server, api_key=None, default_headers={"x-api-key": key})
    msg = client.messages.create(model=f"baseten/{echo}", max_tokens=5, messages=[{"role": "user", "content": "hi"}])
    assert msg.content[0].type == "text"
    resp = httpx.post(f"{server.url}/v1/chat/completions", headers={"x-api-key": key}, timeout=60,
                      json={"model": f"baseten/{echo}", "messages": [{"role": "user", "content": "hi"}]})
    assert resp.status_code == 401  # x-api-key is Anthropic's header: the Messages route's only


def test_a_bad_or_missing_key_is_a_401_in_anthropics_shape(server):
    with pytest.raises(anthropic.AuthenticationError) as err:
        anthropic_client(server, api_key="wrong").messages.create(model=SLUG, max_tokens=5, messages=ASK_WEATHER)
    assert err.value.status_code == 401
    assert err.value.body["type"] == "error" and err.value.body["error"]["type"] == "authentication_error"
    body = {"model": SLUG, "max_tokens": 5, "messages": ASK_WEATHER}
    for headers in ({"x-api-key": "trestle_nope_nope"}, {}):
        resp = httpx.post(f"{server.url}/v1/messages", json=body, headers=headers, timeout=60)
        assert resp.status_code == 401
        assert resp.json()["error"]["type"] == "authentication_error"
    assert "x-api-key" in resp.json()["error"]["message"]  # the missing key's message says how to send one


# -- bad input -----------------------------------------------------------------------------------
BASE = {"model": SLUG, "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}
BAD = [
    ({k: v for k, v in BASE.items() if k != "max_tokens"}, "max_tokens"),
    ({**BASE, "max_tokens": 0}, "max_tokens"),
    ({**BASE, "messages": []}, "messages"),
    ({**BASE, "messages": [{"role": "user", "content": [{"type": "image", "source": {}}]}]}, "text only"),
    ({**BASE, "messages": [{"role": "user", "content": [{"type": "video"}]}]}, "'text', 'tool_use', 'tool_result'"),
    ({**BASE, "messages": [*BASE["messages"], {"role": "assistant", "content": "Sure"}]}, "prefill"),
    ({**BASE, "thinking": {"type": "enabled", "budget_tokens": 2048}}, "thinking"),
    ({**BASE, "tools": [{"type": "web_search_20250305", "name": "web_search"}]}, "server tools"),
    ({**BASE, "tools": [WEATHER], "tool_choice": {"type": "tool", "name": "other"}}, "no tool named 'other'"),
    ({**BASE, "tool_choice": {"type": "any"}}, "needs `tools`"),
    ({**BASE, "temperature": 1.5}, "temperature"),
    ({**BASE, "top_k": "5"}, "top_k"),
    ({**BASE, "frobnicate": 1}, "frobnicate"),
    ({**BASE, "messages": [{"role": "assistant", "content": [
        {"type": "tool_result", "tool_use_id": "x", "content": "1"}]}, *BASE["messages"]]}, "tool_result"),
]


@pytest.mark.parametrize(("body", "said"), BAD, ids=[said for _, said in BAD])
def test_bad_input_is_a_400_in_anthropics_shape(server, body, said):
    with server.client() as http:
        resp = http.post("/v1/messages", json=body)
    assert resp.status_code == 400, resp.text
    error = resp.json()
    assert error["type"] == "error" and error["error"]["type"] == "invalid_request_error"
    assert said in error["error"]["message"]


def test_a_body_that_is_not_a_json_object_is_a_400(server):
    with server.client() as http:
        for raw in (b"{not json", b"[1, 2]", b"[" * 100_000):
            resp = http.post("/v1/messages", content=raw, headers={"content-type": "application/json"})
            assert resp.status_code == 400 and resp.json()["error"]["type"] == "invalid_request_error"


def test_errors_of_routing_in_anthropics_shape(server, client):
    with pytest.raises(anthropic.NotFoundError) as err:
        client.messages.create(model="nobody/no-such-model", max_tokens=5, messages=ASK_WEATHER)
    assert err.value.body["error"]["type"] == "not_found_error"
    with pytest.raises(anthropic.NotFoundError) as err:
        client.messages.create(model="baseten/mnope", max_tokens=5, messages=ASK_WEATHER)
    assert "mnope" in err.value.body["error"]["message"]
    wordy = server.push(MODELS / "wordy")["model"]["id"]
    with pytest.raises(anthropic.BadRequestError) as err:
        client.messages.create(model=f"baseten/{wordy}", max_tokens=5, messages=ASK_WEATHER)
    assert "no OpenAI mode" in err.value.body["error"]["message"]
    with server.client() as http:
        resp = http.get("/v1/messages")
    assert resp.status_code == 405 and resp.json()["error"]["type"] == "invalid_request_error"


def test_token_counting_is_not_served_and_says_so(server, echo):
    client = anthropic_client(server, api_key=None, default_headers={"x-api-key": server.api_key})
    with pytest.raises(anthropic.APIStatusError) as err:
        client.messages.count_tokens(model=f"baseten/{echo}", messages=ASK_WEATHER)
    assert err.value.status_code == 501 and "not served" in err.value.body["error"]["message"]


def test_a_loading_deployment_is_a_503_with_retry_after(server):
    m = server.push(MODELS / "slow_load", "--no-wait")["model"]["id"]
    with server.client() as http:
        resp = http.post("/v1/messages", json={**BASE, "model": f"baseten/{m}"})
    assert resp.status_code == 503, resp.text
    assert resp.headers["retry-after"].isdigit()
    assert resp.json()["error"]["type"] == "overloaded_error"


def test_an_error_of_the_engine_comes_back_in_anthropics_shape(client):
    """The engine refuses what it cannot compile; its 400 keeps its status and message."""
    tool = {**WEATHER, "input_schema": {"type": "object", "properties": {"city": {"$ref": "#/nowhere"}}}}
    with pytest.raises(anthropic.BadRequestError) as err:
        client.messages.create(model=SLUG, max_tokens=5, messages=ASK_WEATHER, tools=[tool],
                               tool_choice={"type": "any"})
    assert err.value.body["type"] == "error" and err.value.body["error"]["type"] == "invalid_request_error"
    assert "tools" in err.value.body["error"]["message"]
