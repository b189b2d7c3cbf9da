"""Units of structured outputs: the grammar cache and masks (llguidance on the real SmolLM2
vocabulary), the mask inside the sampler, the tool-call parser and how tools reach the prompt."""

import json

import numpy as np
import pytest

from trestle.engine.chat import tools
from trestle.engine.chat.template import render_chat
from trestle.engine.decoding.grammar import GrammarError, Grammars, MaskBatch, closed_schema
from trestle.engine.decoding.sampler import Sampler, SamplingParams
from trestle.protocol.openai.requests import ChatCompletionRequest

SCHEMA = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"],
          "additionalProperties": False}


def test_a_repeated_schema_is_compiled_once(vocab):
    g = Grammars.of(vocab)
    assert Grammars.of(vocab) is g  # one tokenizer per model
    before = g.compiled
    a = g.json_schema({**SCHEMA, "title": "cache-test"})
    b = g.json_schema({**SCHEMA, "title": "cache-test"})
    assert a is b and g.compiled == before + 1
    # two sequences share the compiled grammar but not their position in it
    m1, m2 = a.matcher(), b.matcher()
    for t in vocab.tokenize('{"ok":true}', add_special=False, parse_special=False):
        assert m1.consume(t)
    assert m1.stopped and not m2.stopped


def test_schema_errors_carry_llguidance_reason(vocab):
    with pytest.raises(GrammarError, match="Unimplemented keys"):
        Grammars.of(vocab).json_schema({"not": {"type": "string"}})
    with pytest.raises(GrammarError):
        Grammars.of(vocab).grammar("start: undefined_rule")


def test_schemas_are_closed_where_they_say_nothing_of_other_keys():
    point = {"type": "object", "properties": {"x": {"type": "integer"}}}
    schema = {
        "type": "object",
        "properties": {
            "at": point,
            "properties": {"type": "object", "properties": {"y": {}}},  # a key named "properties"
            "many": {"type": "array", "items": point},
            "either": {"anyOf": [point, {"type": "null"}]},
            "open": {**point, "additionalProperties": True},
            "typed": {**point, "additionalProperties": {"type": "string"}},
            "pattern": {**point, "patternProperties": {"^z": {}}},
            "const": {"const": {"properties": {"q": 1}}},  # a value, not a schema
        },
        "$defs": {"p": point},
        "allOf": [point, {"properties": {"z": {}}}],
    }
    out = closed_schema(schema)
    p = out["properties"]
    assert "additionalProperties" not in out  # allOf beside: closing would refuse its keys
    assert p["at"]["additionalProperties"] is False
    assert p["properties"]["additionalProperties"] is False
    assert "additionalProperties" not in p["properties"]["properties"]  # a name -> schema map
    assert p["many"]["items"]["additionalProperties"] is False
    assert p["either"]["anyOf"][0]["additionalProperties"] is False
    assert p["open"]["additionalProperties"] is True
    assert p["typed"]["additionalProperties"] == {"type": "string"}
    assert "additionalProperties" not in p["pattern"]
    assert p["const"] == {"const": {"properties": {"q": 1}}}
    assert out["$defs"]["p"]["additionalProperties"] is False
    assert all("additionalProperties" not in m for m in out["allOf"])  # members of allOf stay open
    assert "additionalProperties" not in schema["properties"]["at"]  # the caller's schema is untouched


@pytest.mark.parametrize("kind", ["json_schema", "lark", "gbnf"])
def test_a_response_format_beside_tool_calls_is_one_alternation(vocab, kind):
    g = Grammars.of(vocab)
    response = {"json_schema": lambda: g.json_schema(SCHEMA),
                "lark": lambda: g.grammar('start: "{\\"ok\\":" ("true" | "false") "}"'),
                "gbnf": lambda: g.grammar('root ::= "{\\"ok\\":" ("true" | "false") "}"')}[kind]()
    lark = tools.call_grammar(tools.call_schema([ChatCompletionRequest.model_validate(
        {"model": "m", "messages": [{"role": "user", "content": "x"}], "tools": [
            {"type": "function", "function": {"name": "f", "parameters": SCHEMA}}]}).tools[0]]),
        free_text=True, parallel=True, response="response")
    both = g.with_subgrammar(lark, "response", response)

    def matches(text: str) -> bool:
        m = both.matcher()
        ok = all(m.consume(t) for t in vocab.tokenize(text, add_special=False, parse_special=False))
        return ok and m.accepting

    assert matches('{"ok":true}')
    assert matches(tools.format_call("f", '{"ok":false}') * 2)
    assert not matches('Sure! {"ok":true}')  # no free text before either
    assert not matches('{"ok":true}' + tools.format_call("f", '{"ok":false}'))  # calls only first


def test_batch_mask_allows_exactly_the_grammar(vocab):
    g = Grammars.of(vocab)
    masks = MaskBatch(g, rows=3)
    yes_no = g.lark('start: "yes" | "no"').matcher()
    digits = g.lark("start: /[0-9]+/").matcher()
    masks.fill([(yes_no, 0), (digits, 2)])
    allowed = masks.allowed(0)
    assert allowed.shape == (vocab.info.n_vocab,)
    ok = {vocab.piece(int(t), special=True) for t in np.flatnonzero(allowed)}
    assert ok and all(b"yes".startswith(p) or b"no".startswith(p) for p in ok)
    ok_digits = {vocab.piece(int(t), special=True) for t in np.flatnonzero(masks.allowed(2))}
    assert ok_digits and all(p.isdigit() for p in ok_digits)


def test_sampler_applies_the_mask_but_reports_raw_logprobs():
    row = np.array([5.0, 1.0, 0.0, -1.0], dtype=np.float32)
    allowed = np.array([0, 0, 1, 1], dtype=np.uint8)
    s = Sampler(SamplingParams(temperature=0, logprobs=True, top_logprobs=2), 4, np.array([], dtype=np.int64), [])
    out = s.sample(row.copy(), allowed=allowed)
    assert out.token == 2
    raw = row.astype(np.float64) - np.log(np.exp(row.astype(np.float64)).sum())
    assert out.logprob == pytest.approx(raw[2])
    assert out.top[0][0] == 0  # the model's own favourite, though masked
    # the mask composes with logit_bias: the bias moves the choice inside the allowed set
    s2 = Sampler(SamplingParams(temperature=0, logit_bias={3: 5.0}), 4, np.array([], dtype=np.int64), [])
    assert s2.sample(row.copy(), allowed=allowed).token == 3


# -- the tool-call parser ----------------------------------------------------------------------
CALLS = ('Let me check.\n<tool_call>\n{"name":"get_weather","arguments":{"city":"Paris","n":{"a":1}}}'
         '\n</tool_call><tool_call>\n{"name":"get_time","arguments":{}}\n</tool_call>')


def test_parser_splits_content_and_calls():
    p = tools.parse(CALLS)
    assert p.content == "Let me check.\n"
    assert [(c.name, c.arguments) for c in p.calls] == [
        ("get_weather", '{"city":"Paris","n":{"a":1}}'), ("get_time", "{}")]
    assert len({c.id for c in p.calls}) == 2


@pytest.mark.parametrize("step", [1, 2, 3, 7])
def test_parser_streamed_in_any_pieces_equals_whole(step):
    p = tools.ToolCallParser()
    events = []
    for i in range(0, len(CALLS), step):
        events += p.feed(CALLS[i : i + step])
    events += p.finish()
    content = "".join(e for e in events if isinstance(e, str))
    assert "<" not in content  # no markup ever reaches content, not even a prefix of it
    args = {}
    for e in events:
        if isinstance(e, tools.ArgsDelta):
            args[e.index] = args.get(e.index, "") + e.text
    whole = tools.parse(CALLS)
    assert content == whole.content
    assert [args[i] for i in sorted(args)] == [c.arguments for c in whole.calls]


@pytest.mark.parametrize("step", [1, 3, 1000])
def test_parser_with_calls_first_reads_calls_only_at_the_start(step):
    def run(text):
        p = tools.ToolCallParser(calls_first=True)
        for i in range(0, len(text), step):
            p.feed(text[i : i + step])
        p.finish()
        return p.parsed

    answer = '{"note":"<tool_call>\\n{\\"name\\":\\"f\\",\\"arguments\\":{}}\\n</tool_call>"}'
    assert run(answer).content == answer and not run(answer).calls  # JSON that only holds markup
    call = tools.format_call("f", '{"a":1}')
    parsed = run(call)
    assert parsed.content == "" and [(c.name, c.arguments) for c in parsed.calls] == [("f", '{"a":1}')]
    assert run("<tool").content == "<tool"  # a cut-off start is content after all


def test_parser_keeps_text_that_only_looks_like_markup():
    assert tools.parse("a < b and <tool").content == "a < b and <tool"


# -- tools in the prompt -------------------------------------------------------------------------
CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
NATIVE = ("{% if tools %}TOOLS:{% for t in tools %}{{ t.function.name }};{% endfor %}{% endif %}"
          "{% for m in messages %}{{ m.role }}:{{ m.content }}"
          "{% for c in m.tool_calls or [] %}<tool_call>{{ c.function.name }}{{ c.function.arguments | tojson }}</tool_call>{% endfor %}"
          "|{% endfor %}")


def request(**kw):
    tool = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}
    return ChatCompletionRequest.model_validate({
        "model": "m", "tools": [tool],
        "messages": [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "f", "arguments": '{"x":1}'}}]},
            {"role": "tool", "tool_call_id": "c1", "content": "42"},
        ], **kw})


def test_template_without_tool_support_gets_the_default_block_and_plain_turns():
    req = request()
    assert not tools.template_supports_tools(CHATML)
    text = render_chat(CHATML, tools.plain_messages(req.messages, req.tools),
                       add_generation_prompt=True, bos_token="", eos_token="")
    assert text.startswith("<|im_start|>system\n# Tools")
    assert json.dumps(req.tools[0].model_dump(exclude_none=True)) in text
    assert '<|im_start|>assistant\n<tool_call>\n{"name":"f","arguments":{"x":1}}\n</tool_call><|im_end|>' in text
    assert "<|im_start|>user\n<tool_response>\n42\n</tool_response><|im_end|>" in text


def test_template_with_tool_support_renders_them_itself():
    req = request()
    assert tools.template_supports_tools(NATIVE)
    text = render_chat(NATIVE, req.messages, tools=req.tools, add_generation_prompt=True,
                       bos_token="", eos_token="")
    assert text.startswith("TOOLS:f;user:hi|")
    assert '<tool_call>f{"x": 1}</tool_call>' in text and "tool:42|" in text
