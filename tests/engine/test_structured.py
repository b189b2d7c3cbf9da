"""Structured outputs (`response_format`) on the real SmolLM2 engine worker, through the official
openai client: each format, streamed and not, greedy and sampled with several seeds, checked
with `jsonschema` or by matching the grammar's language; 400s before generation; a batch that
mixes constrained and unconstrained sequences."""

import concurrent.futures as cf
import json
import re

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

Q = [{"role": "user", "content": "Describe a person called Ada who lives in Paris."}]

PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 20},
        "age": {"type": "integer", "minimum": 0, "maximum": 120},
        "city": {"$ref": "#/$defs/city"},
        "tags": {"type": "array", "items": {"enum": ["a", "b", "c"]}, "minItems": 1, "maxItems": 3},
        "contact": {
            "anyOf": [
                {"type": "null"},
                {
                    "type": "object",
                    "properties": {"phone": {"type": "string", "pattern": "^[0-9]{3}-[0-9]{4}$"}},
                    "required": ["phone"],
                    "additionalProperties": False,
                },
            ]
        },
    },
    "required": ["name", "age", "city", "tags", "contact"],
    "additionalProperties": False,
    "$defs": {"city": {"type": "string", "enum": ["Paris", "London", "Rome"]}},
}
JSON_SCHEMA = {"type": "json_schema", "json_schema": {"name": "person", "schema": PERSON, "strict": True}}


def chat(client, slug, messages=Q, **kw):
    kw.setdefault("max_tokens", 120)
    extra = kw.pop("extra_body", None)
    return client.chat.completions.create(model=slug, messages=messages, extra_body=extra, **kw)


def streamed(client, slug, **kw):
    chunks = list(chat(client, slug, stream=True, stream_options={"include_usage": True}, **kw))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    return text, finish, chunks


# -- json_object / json_schema ---------------------------------------------------------------
def test_json_object_greedy_is_one_object_and_the_stream_equals_it(client, slug):
    r = chat(client, slug, temperature=0, response_format={"type": "json_object"})
    assert r.choices[0].finish_reason == "stop"
    assert isinstance(json.loads(r.choices[0].message.content), dict)
    text, finish, chunks = streamed(client, slug, temperature=0, response_format={"type": "json_object"})
    assert text == r.choices[0].message.content and finish == ["stop"]
    assert chunks[-1].usage.completion_tokens == r.usage.completion_tokens


def test_unconstrained_greedy_answer_is_not_json(client, slug):
    """The baseline the constraint changes: without it the model writes prose."""
    r = chat(client, slug, temperature=0)
    with pytest.raises(ValueError):
        json.loads(r.choices[0].message.content)


@pytest.mark.parametrize("sampling", [{"temperature": 0}] + [{"temperature": 1, "seed": s} for s in (1, 2)])
def test_json_schema_output_validates(client, slug, sampling):
    r = chat(client, slug, response_format=JSON_SCHEMA, **sampling)
    assert r.choices[0].finish_reason == "stop"
    text = r.choices[0].message.content
    jsonschema.validate(json.loads(text), PERSON)
    assert " " not in text.replace(json.loads(text)["name"], "")  # compact: no padding whitespace


def test_a_schema_silent_on_other_keys_gets_the_declared_keys_only(client, slug):
    # As pydantic and LangChain write schemas: no additionalProperties. Left open, the model
    # follows its last value with an invented key that runs until max_tokens.
    city = {"type": "object", "required": ["name", "country", "population_millions"], "properties": {
        "name": {"enum": ["Paris", "Rome", "London"]}, "country": {"type": "string", "maxLength": 20},
        "population_millions": {"type": "integer", "minimum": 0, "maximum": 50}}}
    r = chat(client, slug, [{"role": "user", "content": "Tell me about Paris."}], temperature=0, max_tokens=80,
             response_format={"type": "json_schema", "json_schema": {"name": "city", "schema": city}})
    assert r.choices[0].finish_reason == "stop"
    value = json.loads(r.choices[0].message.content)
    assert set(value) == set(city["properties"])
    jsonschema.validate(value, city)


def test_json_schema_stream_equals_non_stream_at_the_same_seed(client, slug):
    kw = dict(temperature=1, seed=11, response_format=JSON_SCHEMA, logprobs=True, top_logprobs=2)
    whole = chat(client, slug, **kw)
    text, finish, chunks = streamed(client, slug, **kw)
    assert text == whole.choices[0].message.content
    assert finish == [whole.choices[0].finish_reason] == ["stop"]
    streamed_lp = [t.logprob for c in chunks if c.choices and c.choices[0].logprobs
                   for t in c.choices[0].logprobs.content]
    assert streamed_lp == [t.logprob for t in whole.choices[0].logprobs.content]
    assert chunks[-1].usage == whole.usage


def test_logprobs_are_the_models_own_not_the_masked_ones(client, slug):
    r = chat(client, slug, temperature=0, max_tokens=5, logprobs=True, top_logprobs=5,
             response_format={"type": "json_object"})
    first = r.choices[0].logprobs.content[0]
    assert first.token == "{"
    # the model would rather say something else: its best alternative beats the forced "{"
    assert first.top_logprobs[0].token != "{" and first.top_logprobs[0].logprob > first.logprob
    assert all(t.logprob <= 0 for t in r.choices[0].logprobs.content)


def test_max_tokens_inside_the_schema_is_length_not_stop(client, slug):
    r = chat(client, slug, temperature=0, max_tokens=4, response_format=JSON_SCHEMA)
    assert r.choices[0].finish_reason == "length"
    assert r.usage.completion_tokens == 4
    with pytest.raises(ValueError):
        json.loads(r.choices[0].message.content)


def test_constraint_composes_with_logit_bias_and_bad_token_ids(client, slug, vocab):
    """Masks compose: a forbidden enum value is never chosen, even when the model prefers it."""
    schema = {"type": "object", "properties": {"city": {"enum": ["Paris", "London"]}},
              "required": ["city"], "additionalProperties": False}
    rf = {"type": "json_schema", "json_schema": {"name": "c", "schema": schema}}
    base = json.loads(chat(client, slug, temperature=0, response_format=rf).choices[0].message.content)
    assert base["city"] == "Paris"
    paris = vocab.tokenize("Paris", add_special=False, parse_special=False)
    biased = chat(client, slug, temperature=0, response_format=rf,
                  logit_bias={str(t): -100 for t in paris[:1]})
    assert json.loads(biased.choices[0].message.content) == {"city": "London"}
    banned = chat(client, slug, temperature=0, response_format=rf,
                  extra_body={"bad_token_ids": paris[:1]})
    assert json.loads(banned.choices[0].message.content) == {"city": "London"}


# -- grammar ---------------------------------------------------------------------------------
def test_lark_grammar(client, slug):
    g = 'start: "The answer is " ANSWER "."\nANSWER: "yes" | "no"'
    for sampling in ({"temperature": 0}, {"temperature": 1, "seed": 4}, {"temperature": 1, "seed": 5}):
        r = chat(client, slug, response_format={"type": "grammar", "grammar": g}, **sampling)
        assert r.choices[0].message.content in ("The answer is yes.", "The answer is no.")
        assert r.choices[0].finish_reason == "stop"


def test_gbnf_grammar_streamed(client, slug):
    g = 'root ::= "Call " digit digit digit "-" digit digit digit digit\ndigit ::= [0-9]'
    rf = {"type": "grammar", "grammar": g}
    whole = chat(client, slug, temperature=1, seed=9, response_format=rf)
    assert re.fullmatch(r"Call [0-9]{3}-[0-9]{4}", whole.choices[0].message.content)
    text, finish, _ = streamed(client, slug, temperature=1, seed=9, response_format=rf)
    assert text == whole.choices[0].message.content and finish == ["stop"]


# -- structural_tag --------------------------------------------------------------------------
WEATHER = {"type": "object", "properties": {"city": {"enum": ["Paris", "Rome"]}},
           "required": ["city"], "additionalProperties": False}
TAG = {"type": "structural_tag", "triggers": ["<function="],
       "structures": [{"begin": "<function=get_weather>", "schema": WEATHER, "end": "</function>"}]}
FEW_SHOT = ('Weather in Rome: <function=get_weather>{"city": "Rome"}</function>\n'
            "Weather in London: <function=get_weather>{\"town\": 'London'}</function>\n"
            "Weather in Paris: <function=")


def test_structural_tag_constrains_the_tagged_region(client, slug):
    # unconstrained, the model copies the broken example; constrained, the region is valid
    free = client.completions.create(model=slug, prompt=FEW_SHOT, max_tokens=30, temperature=0).choices[0].text
    r = client.completions.create(model=slug, prompt=FEW_SHOT.removesuffix("<function="),
                                  max_tokens=40, temperature=0, extra_body={"response_format": TAG})
    text = r.choices[0].text
    regions = re.findall(r"<function=get_weather>(.*?)</function>", text, re.S)
    assert regions, text  # the model did enter the tagged region
    for body in regions:
        jsonschema.validate(json.loads(body), WEATHER)
    assert "<function=" in text and free != text


def test_structural_tag_free_text_is_free(client, slug):
    r = chat(client, slug, temperature=0, max_tokens=24, response_format=TAG)
    assert r.choices[0].message.content == chat(client, slug, temperature=0, max_tokens=24).choices[0].message.content


# -- /v1/completions -------------------------------------------------------------------------
def test_completions_accept_response_format(client, slug):
    r = client.completions.create(model=slug, prompt="A person:", max_tokens=120, temperature=0,
                                  extra_body={"response_format": JSON_SCHEMA})
    jsonschema.validate(json.loads(r.choices[0].text), PERSON)
    assert r.choices[0].finish_reason == "stop"
    stream = client.completions.create(model=slug, prompt="A person:", max_tokens=120, temperature=0,
                                       stream=True, extra_body={"response_format": JSON_SCHEMA})
    assert "".join(c.choices[0].text for c in stream if c.choices) == r.choices[0].text


# -- errors before generation ----------------------------------------------------------------
@pytest.mark.parametrize("rf, reason", [
    ({"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "strin"}}}, "strin"),
    ({"type": "json_schema", "json_schema": {"name": "x", "schema": {"not": {"type": "string"}}}}, "not"),
    ({"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "array", "uniqueItems": True}}},
     "uniqueItems"),
    ({"type": "grammar", "grammar": "start: foo"}, "foo"),
    ({"type": "grammar", "grammar": "this is not a grammar"}, "grammar"),
    ({"type": "structural_tag", "triggers": ["<tool"],
      "structures": [{"begin": "<function=f>", "schema": {}, "end": "</function>"}]}, "trigger"),
])
def test_uncompilable_response_format_is_a_400_naming_it(client, slug, rf, reason):
    for call in (lambda: chat(client, slug, response_format=rf),
                 lambda: client.completions.create(model=slug, prompt="x", extra_body={"response_format": rf})):
        with pytest.raises(openai.BadRequestError) as e:
            call()
        err = e.value.body
        assert err["param"] == "response_format" and reason in err["message"]


# -- batching --------------------------------------------------------------------------------
PROMPTS = ["Hi", "What is 2+2?", "Name a color.", "Translate to French: cat"]


def test_mixed_batch_unconstrained_outputs_equal_their_solo_outputs(client, slug, worker):
    def plain(p):
        return chat(client, slug, [{"role": "user", "content": p}], temperature=0, max_tokens=30).choices[0].message.content

    def constrained(p):
        return chat(client, slug, [{"role": "user", "content": p}], temperature=0, max_tokens=60,
                    response_format=JSON_SCHEMA).choices[0].message.content

    solo_plain = [plain(p) for p in PROMPTS[:2]]
    solo_json = [constrained(p) for p in PROMPTS[2:]]
    with cf.ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(plain, p) for p in PROMPTS[:2]] + [pool.submit(constrained, p) for p in PROMPTS[2:]]
        results = [f.result() for f in futures]
    assert results[:2] == solo_plain
    assert results[2:] == solo_json
    for text in results[2:]:
        jsonschema.validate(json.loads(text), PERSON)
