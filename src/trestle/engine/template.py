"""Chat templates: turn a conversation into prompt text, in a Jinja2 sandbox.

    render_chat(template, messages, add_generation_prompt=True, bos_token="<s>", eos_token="</s>")

Templates are the Hugging Face kind (a GGUF carries one as `tokenizer.chat_template`; a request
may bring its own in `chat_template`). They see the variables HF gives them: `messages`,
`add_generation_prompt`, `tools`, `documents`, `bos_token`, `eos_token`, plus every key of the
request's `chat_template_args`; and the helpers `raise_exception(msg)`, `strftime_now(fmt)`, the
`tojson` filter (HF's: no HTML escaping, `indent`/`separators`/`sort_keys`), `{% break %}`/
`{% continue %}` and `{% generation %}` blocks (rendered as plain text).

Sandbox: `ImmutableSandboxedEnvironment` (no `__dunder__` or internal attributes, no mutating
lists/dicts). On top of it an unsafe attribute is an error, not an empty string;
`*`/`**` may not build huge strings or numbers; `range` hands out at most MAX_RANGE_ITEMS items per
render (so nested `range` loops end quickly); the output is capped at MAX_OUTPUT_CHARS.
Every failure - syntax error, unsafe access, `raise_exception`, a runtime error - is
`BadRequest(param="chat_template")` with a message that says what went wrong. (Not bounded:
nested loops over a long string or list that write nothing - a template can still waste CPU
that way; there is no wall-clock limit on a render.)

Compiled templates are cached by their text (LRU of CACHE_SIZE), so a request pays only for the
render.

Messages: pass the validated `ChatCompletionRequest.messages` (pydantic) or plain dicts. Pydantic
messages become dicts with `content` as one string (text parts joined: templates for text models
concatenate `message['content']`; "" when an assistant turn has only `tool_calls`), other `None`
fields dropped, and each `tool_calls[].function.arguments`
parsed from JSON text to an object when it is one (the HF convention; templates `tojson` it).

`echo` (seed 004), for the engine: when `echo` is true and the last message's role is
`assistant` (the generation role), the response's content starts with that message's text,
followed by what the model generates. Render the conversation as usual (the template closes the
last assistant turn; with `add_generation_prompt` it opens a new one) - `echo` changes the
output, not the prompt. When the last message is not the assistant's, `echo` has no effect.
"""

from __future__ import annotations

import json
from contextvars import ContextVar
from datetime import datetime
from functools import lru_cache
from typing import Any, Iterable

import jinja2
from jinja2 import nodes
from jinja2.exceptions import SecurityError, TemplateError, TemplateSyntaxError
from jinja2.ext import Extension, loopcontrols
from jinja2.sandbox import ImmutableSandboxedEnvironment
from pydantic import BaseModel

from trestle.errors import BadRequest

CACHE_SIZE = 64
MAX_OUTPUT_CHARS = 4_000_000  # far beyond any context length we serve
_MAX_SEQUENCE_REPEAT = 1_000_000  # 'x' * n, [..] * n
_MAX_POWER_EXPONENT = 1_000
MAX_RANGE_ITEMS = 1_000_000  # all `range(...)` calls of one render together

_range_budget: ContextVar[list[int]] = ContextVar("chat_template_range_budget")


class ChatTemplateRaised(TemplateError):
    """The template called `raise_exception(message)`."""


class _GenerationBlock(Extension):
    """`{% generation %}...{% endgeneration %}` (HF marks assistant text for training masks with
    it); at inference it is just its body."""

    tags = {"generation"}

    def parse(self, parser: Any) -> list[nodes.Node]:
        next(parser.stream)
        return parser.parse_statements(("name:endgeneration",), drop_needle=True)


class _ChatTemplateEnvironment(ImmutableSandboxedEnvironment):
    intercepted_binops = frozenset({"*", "**"})

    def unsafe_undefined(self, obj: Any, attribute: str) -> Any:
        # The stock sandbox returns an Undefined that prints as "" - a template probing the
        # sandbox would render silently. Make every such probe an error.
        raise SecurityError(
            f"access to attribute {attribute!r} of a {type(obj).__name__!r} object is not allowed"
        )

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if operator == "*":
            for seq, count in ((left, right), (right, left)):
                if isinstance(seq, (str, list, tuple)) and isinstance(count, int):
                    if len(seq) * count > _MAX_SEQUENCE_REPEAT:
                        raise SecurityError("'*' would build a sequence that is too long")
        if operator == "**" and isinstance(right, (int, float)) and abs(right) > _MAX_POWER_EXPONENT:
            raise SecurityError("'**' exponent is too large")
        return super().call_binop(context, operator, left, right)


def _budgeted_range(*args: int) -> range:
    """`range`, charged against the render's budget: nested `range` loops cannot spin for long."""
    rng = range(*args)
    budget = _range_budget.get(None)
    if budget is not None:
        budget[0] -= len(rng)
        if budget[0] < 0:
            raise SecurityError(f"range() produced more than {MAX_RANGE_ITEMS} items in one render")
    return rng


def _raise_exception(message: str) -> None:
    raise ChatTemplateRaised(str(message))


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)


def _tojson(
    value: Any,
    ensure_ascii: bool = False,
    indent: int | None = None,
    separators: tuple[str, str] | None = None,
    sort_keys: bool = False,
) -> str:
    return json.dumps(
        value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys
    )


def _environment() -> _ChatTemplateEnvironment:
    env = _ChatTemplateEnvironment(
        trim_blocks=True,
        lstrip_blocks=True,
        extensions=[loopcontrols, _GenerationBlock],
        undefined=jinja2.Undefined,
        autoescape=False,
    )
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    env.globals["range"] = _budgeted_range
    return env


_ENV = _environment()


@lru_cache(maxsize=CACHE_SIZE)
def compile_template(template: str) -> jinja2.Template:
    """The compiled template for `template` (cached by its text); BadRequest if it is invalid."""
    try:
        return _ENV.from_string(template)
    except TemplateSyntaxError as exc:
        raise BadRequest(
            f"chat_template has a syntax error at line {exc.lineno}: {exc.message}",
            param="chat_template",
        ) from None


def render_chat(
    template: str,
    messages: Iterable[BaseModel | dict[str, Any]],
    *,
    add_generation_prompt: bool,
    tools: list[Any] | None = None,
    documents: list[dict[str, str]] | None = None,
    bos_token: str,
    eos_token: str,
    **chat_template_args: Any,
) -> str:
    """The prompt text for `messages` rendered by `template`; BadRequest(param="chat_template")
    when the template is invalid, unsafe, raises, or fails."""
    compiled = compile_template(template)
    variables = {
        **chat_template_args,
        "messages": [_template_message(m) for m in messages],
        "add_generation_prompt": add_generation_prompt,
        "tools": [_plain(t) for t in tools] if tools else None,
        "documents": documents,
        "bos_token": bos_token,
        "eos_token": eos_token,
    }
    out: list[str] = []
    size = 0
    budget = _range_budget.set([MAX_RANGE_ITEMS])
    try:
        for piece in compiled.generate(variables):
            size += len(piece)
            if size > MAX_OUTPUT_CHARS:
                raise BadRequest(
                    f"chat_template output exceeds {MAX_OUTPUT_CHARS} characters",
                    param="chat_template",
                )
            out.append(piece)
    except ChatTemplateRaised as exc:
        raise BadRequest(f"chat_template raised an error: {exc}", param="chat_template") from None
    except SecurityError as exc:
        raise BadRequest(
            f"chat_template tried an operation the sandbox forbids: {exc}", param="chat_template"
        ) from None
    except TemplateError as exc:
        raise BadRequest(f"chat_template failed to render: {exc}", param="chat_template") from None
    except RecursionError:
        raise BadRequest("chat_template recursed too deeply", param="chat_template") from None
    except (TypeError, ValueError, KeyError, IndexError, AttributeError, ArithmeticError) as exc:
        raise BadRequest(
            f"chat_template failed to render: {type(exc).__name__}: {exc}", param="chat_template"
        ) from None
    finally:
        _range_budget.reset(budget)
    return "".join(out)


def _plain(value: Any) -> Any:
    return value.model_dump(exclude_none=True, by_alias=True) if isinstance(value, BaseModel) else value


def _template_message(message: BaseModel | dict[str, Any]) -> dict[str, Any]:
    if not isinstance(message, BaseModel):
        return message
    data = message.model_dump(exclude_none=True, by_alias=True)
    content = data.get("content", "")  # an assistant turn with only tool_calls: ""
    data["content"] = content if isinstance(content, str) else "".join(p["text"] for p in content)
    for call in data.get("tool_calls", []):
        try:
            arguments = json.loads(call["function"]["arguments"])
        except ValueError:
            continue  # not JSON: the template gets the text as the model wrote it
        if isinstance(arguments, dict):
            call["function"]["arguments"] = arguments
    return data
