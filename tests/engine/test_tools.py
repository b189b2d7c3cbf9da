"""Tool calls on the real SmolLM2 engine worker, through the official openai client: each
`tool_choice` mode, streamed and not, `parallel_tool_calls`, a multi-turn conversation, and the
400s. Arguments are validated with `jsonschema` against the declared tool's parameters."""

import json

import jsonschema
import openai
import pytest


# Each test makes one or two generations of up to ~100 tokens with a ~300-token prompt: seconds
# on an idle machine, minutes on a loaded one.
pytestmark = pytest.mark.timeout(900)


@pytest.fixture(scope="module")
def client(worker):
    """A patient client: constrained answers are long, and the machine may be loaded."""
    return openai.OpenAI(base_url=f"{worker.url}/v1", api_key="unused", max_retries=0, timeout=900)

WEATHER = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "enum": ["Paris", "Rome", "London"]},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
    },
    "required": ["city", "unit"],
    "additionalProperties": False,
}
TIME = {
    "type": "object",
    "properties": {"zone": {"type": "string", "pattern": "^[A-Z]{3}$"}},
    "required": ["zone"],
    "additionalProperties": False,
}
TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "description": "Weather in a city",
                                      "parameters": WEATHER}},
    {"type": "function", "function": {"name": "get_time", "description": "Time in a zone",
                                      "parameters": TIME}},
]
SCHEMAS = {"get_weather": WEATHER, "get_time": TIME}
ASK = [{"role": "user", "content": "What is the weather in Paris?"}]

# A conversation in which the assistant already called a tool: the model follows the pattern,
# so `auto` sees a call start and then constrains it.
HISTORY = [
    {"role": "user", "content": "What is the weather in Rome?"},
    {"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_1", "type": "function",
         "function": {"name": "get_weather", "arguments": '{"city":"Rome","unit":"celsius"}'}}]},
    {"role": "tool", "tool_call_id": "call_1", "content": '{"temperature": 21}'},
    {"role": "assistant", "content": "It is 21 degrees in Rome."},
    {"role": "user", "content": "What is the weather in Paris?"},
]


def chat(client, slug, messages=ASK, **kw):
    kw.setdefault("max_tokens", 60)
    kw.setdefault("tools", TOOLS)
    return client.chat.completions.create(model=slug, messages=messages, **kw)


def check_calls(message, names=None):
    assert message.tool_calls, message
    assert "<tool_call>" not in (message.content or "")
    ids = [c.id for c in message.tool_calls]
    assert len(set(ids)) == len(ids) and all(i.startswith("call_") for i in ids)
    for c in message.tool_calls:
        assert c.type == "function"
        assert names is None or c.function.name in names
        jsonschema.validate(json.loads(c.function.arguments), SCHEMAS[c.function.name])


def stream_calls(client, slug, **kw):
    """(content, {index: (id, name, arguments)}, finish reasons, chunks) of a streamed answer."""
    chunks = list(chat(client, slug, stream=True, **kw))
    content, calls, finish = "", {}, []
    for c in chunks:
        if not c.choices:
            continue
        d = c.choices[0].delta
        content += d.content or ""
        for tc in d.tool_calls or []:
            if tc.index not in calls:
                # the first delta of a call: index, id, type and name
                assert tc.id and tc.type == "function" and tc.function.name
                calls[tc.index] = [tc.id, tc.function.name, tc.function.arguments or ""]
            else:
                assert tc.id is None and tc.function.name is None
                calls[tc.index][2] += tc.function.arguments or ""
        if c.choices[0].finish_reason:
            finish.append(c.choices[0].finish_reason)
    return content, calls, finish, chunks


@pytest.mark.parametrize("sampling", [{"temperature": 0}] + [{"temperature": 1, "seed": s} for s in (1, 2)])
def test_required_makes_valid_calls(client, slug, sampling):
    r = chat(client, slug, tool_choice="required", **sampling)
    choice = r.choices[0]
    assert choice.finish_reason == "tool_calls"
    check_calls(choice.message)
    assert choice.message.content is None


def test_required_stream_equals_non_stream_at_the_same_seed(client, slug):
    kw = dict(tool_choice="required", temperature=1, seed=5, logprobs=True,
              stream_options={"include_usage": True})
    whole = chat(client, slug, **{k: v for k, v in kw.items() if k != "stream_options"})
    content, calls, finish, chunks = stream_calls(client, slug, **kw)
    assert content == "" and finish == ["tool_calls"]
    assert [(n, a) for _, n, a in calls.values()] == [
        (c.function.name, c.function.arguments) for c in whole.choices[0].message.tool_calls]
    assert chunks[-1].usage == whole.usage
    assert sum(len(c.choices[0].logprobs.content) for c in chunks if c.choices and c.choices[0].logprobs) \
        == whole.usage.completion_tokens


@pytest.mark.parametrize("name, sampling", [("get_weather", {"temperature": 0}),
                                            ("get_time", {"temperature": 1, "seed": 7})])
def test_named_function_is_the_one_called(client, slug, name, sampling):
    r = chat(client, slug, tool_choice={"type": "function", "function": {"name": name}}, **sampling)
    check_calls(r.choices[0].message, names={name})
    assert r.choices[0].finish_reason == "tool_calls"


# End tokens are masked until 40 tokens (min_tokens), well past the first call: where the
# grammar allows more calls the model must make them, where it does not the answer ends.
def test_parallel_calls_are_allowed_and_parsed(client, slug):
    r = chat(client, slug, tool_choice="required", temperature=0, max_tokens=100,
             extra_body={"min_tokens": 40})
    message = r.choices[0].message
    check_calls(message)
    assert len(message.tool_calls) >= 2 and r.choices[0].finish_reason in ("tool_calls", "length")


def test_parallel_tool_calls_false_allows_one_call(client, slug):
    r = chat(client, slug, tool_choice="required", parallel_tool_calls=False, temperature=0,
             max_tokens=100, extra_body={"min_tokens": 40})
    assert len(r.choices[0].message.tool_calls) == 1 and r.choices[0].finish_reason == "tool_calls"
    assert r.usage.completion_tokens < 40  # the grammar's end wins over min_tokens


def test_auto_answers_in_text_when_the_model_does_not_call(client, slug):
    r = chat(client, slug, tool_choice="auto", temperature=0, max_tokens=30)
    assert r.choices[0].message.tool_calls is None
    assert r.choices[0].message.content and r.choices[0].finish_reason in ("stop", "length")
    assert r.choices[0].finish_reason != "tool_calls"


def test_auto_detects_a_call_and_constrains_it_streamed_and_not(client, slug, vocab):
    # Left alone, the model imitates the history's "<tool_response>"; a bias on the "call" token
    # turns its "<tool_" into "<tool_call>", and from there the grammar allows only a valid call.
    call = vocab.tokenize("<tool_call>", add_special=False, parse_special=False)[3]
    assert vocab.piece(call, special=False) == b"call"
    kw = dict(messages=HISTORY, temperature=0, logit_bias={str(call): 10})  # tool_choice: auto
    whole = chat(client, slug, **kw)
    check_calls(whole.choices[0].message)
    assert whole.choices[0].finish_reason == "tool_calls"
    content, calls, finish, _ = stream_calls(client, slug, **kw)
    assert content == (whole.choices[0].message.content or "")
    assert [(n, a) for _, n, a in calls.values()] == [
        (c.function.name, c.function.arguments) for c in whole.choices[0].message.tool_calls]
    assert finish == ["tool_calls"]


def test_none_makes_no_calls_even_when_the_model_writes_one(client, slug):
    r = chat(client, slug, HISTORY, tool_choice="none", temperature=0)
    assert r.choices[0].message.tool_calls is None and r.choices[0].finish_reason != "tool_calls"


def test_multi_turn_continues_after_tool_results(client, slug):
    first = chat(client, slug, tool_choice={"type": "function", "function": {"name": "get_weather"}},
                 temperature=0)
    call = first.choices[0].message.tool_calls[0]
    messages = ASK + [
        first.choices[0].message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": '{"temperature": 18, "sky": "clear"}'},
    ]
    second = chat(client, slug, messages, tool_choice="none", temperature=0, max_tokens=40)
    assert second.choices[0].message.content and second.usage.prompt_tokens > first.usage.prompt_tokens
    # the tool's result is in the prompt: the model can quote it
    assert second.choices[0].message.content != chat(
        client, slug, ASK, tool_choice="none", temperature=0, max_tokens=40).choices[0].message.content


def test_bad_parameters_schema_is_a_400_naming_the_tool(client, slug):
    tools = [TOOLS[0], {"type": "function", "function": {"name": "bad", "parameters": {"type": "objekt"}}}]
    with pytest.raises(openai.BadRequestError) as e:
        chat(client, slug, tools=tools, tool_choice="auto")
    assert e.value.body["param"] == "tools[1].function.parameters"
    assert "objekt" in e.value.body["message"]


def test_unknown_named_tool_is_a_400(client, slug):
    with pytest.raises(openai.BadRequestError) as e:
        chat(client, slug, tool_choice={"type": "function", "function": {"name": "nope"}})
    assert e.value.body["param"] == "tool_choice"


# -- response_format beside tools ------------------------------------------------------------
SKY = {"type": "object", "properties": {"city": {"enum": ["Paris", "Rome"]}, "sunny": {"type": "boolean"}},
       "required": ["city", "sunny"]}
SKY_FORMAT = {"type": "json_schema", "json_schema": {"name": "sky", "schema": SKY}}


# Under auto the answer is either calls or in the format: greedy, the model calls; with seed 3
# it answers in the format. Either way it is valid, and the stream equals the whole answer.
@pytest.mark.parametrize("sampling, calls", [({"temperature": 0}, True),
                                             ({"temperature": 1, "seed": 3}, False)])
def test_auto_with_response_format_calls_or_answers_in_the_format(client, slug, sampling, calls):
    kw = dict(tool_choice="auto", response_format=SKY_FORMAT, **sampling)
    whole = chat(client, slug, **kw)
    message, finish = whole.choices[0].message, whole.choices[0].finish_reason
    if calls:
        check_calls(message)
        assert message.content is None and finish == "tool_calls"
    else:
        assert message.tool_calls is None and finish == "stop"
        jsonschema.validate(json.loads(message.content), {**SKY, "additionalProperties": False})
    content, streamed, finishes, _ = stream_calls(client, slug, **kw)
    assert content == (message.content or "") and finishes == [finish]
    assert [(n, a) for _, n, a in streamed.values()] == [
        (c.function.name, c.function.arguments) for c in message.tool_calls or []]


def test_required_with_response_format_calls_a_tool(client, slug):
    # the format is for the answer that follows the tool results, not for this turn
    r = chat(client, slug, tool_choice="required", response_format=SKY_FORMAT, temperature=1, seed=3)
    check_calls(r.choices[0].message)
    assert r.choices[0].finish_reason == "tool_calls"
