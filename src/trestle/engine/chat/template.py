"""Chat templates: turn a conversation into prompt text, in a Jinja2 sandbox.

    render_chat(template, messages, add_generation_prompt=True, bos_token="<s>", eos_token="</s>")

Templates are the Hugging Face kind (a GGUF carries one as `tokenizer.chat_template`; a request
may bring its own in `chat_template`). They see the variables HF gives them: `messages`,
`add_generation_prompt`, `tools`, `documents`, `bos_token`, `eos_token`, plus every key of the
request's `chat_template_args`; and the helpers `raise_exception(msg)`, `strftime_now(fmt)`, the
`tojson` filter (HF's: no HTML escaping, `indent`/`separators`/`sort_keys`), `{% break %}`/
`{% continue %}` and `{% generation %}` blocks (rendered as plain text).

Sandbox: `ImmutableSandboxedEnvironment` (no `__dunder__` or internal attributes, no mutating
lists/dicts). On top of it an unsafe attribute is an error, not an empty string, and every
render runs under `engine/template_limits.py`: a wall-clock limit (`RENDER_SECONDS`), a cancel
event (the client left), and size checks before anything that could build a large value
(`~`, `+`, `*`, `%`, widths, `replace`, `join`, `sum`, ...); templates are at most
MAX_TEMPLATE_CHARS and the output at most MAX_OUTPUT_CHARS. Every failure - syntax error,
unsafe access, a limit, `raise_exception`, a runtime error - is
`BadRequest(param="chat_template")` with a message that says what went wrong. Render off the
event loop (`engine/prompts.py` does): a render may take up to `RENDER_SECONDS`.

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
import threading
from datetime import datetime
from functools import lru_cache
from typing import Any, Iterable

import jinja2
from jinja2 import nodes
from jinja2.compiler import CodeGenerator, Frame
from jinja2.exceptions import SecurityError, TemplateError, TemplateSyntaxError
from jinja2.ext import Extension, loopcontrols
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.utils import generate_lorem_ipsum
from pydantic import BaseModel

from trestle.engine.chat import template_limits as limits
from trestle.engine.chat.template_limits import RenderCancelled, RenderLimits, TemplateLimit  # noqa: F401
from trestle.errors import BadRequest

CACHE_SIZE = 64
MAX_TEMPLATE_CHARS = 100_000  # the largest chat templates in use are about 20,000
MAX_OUTPUT_CHARS = 4_000_000  # far beyond any context length we serve
MAX_ERROR_CHARS = 300  # of a template's own text quoted in an error message


class ChatTemplateRaised(TemplateError):
    """The template called `raise_exception(message)`."""


class _GenerationBlock(Extension):
    """`{% generation %}...{% endgeneration %}` (HF marks assistant text for training masks with
    it); at inference it is just its body."""

    tags = {"generation"}

    def parse(self, parser: Any) -> list[nodes.Node]:
        next(parser.stream)
        return parser.parse_statements(("name:endgeneration",), drop_needle=True)


class _CodeGenerator(CodeGenerator):
    def visit_Concat(self, node: nodes.Concat, frame: Frame) -> None:
        """`a ~ b`: joined by `template_limits.sized_join`, which checks the size first."""
        if frame.eval_ctx.volatile:
            join = "(markup_join if context.eval_ctx.volatile else str_join)"
        else:
            join = "markup_join" if frame.eval_ctx.autoescape else "str_join"
        self.write(f"environment.sized_join({join}, (")
        for arg in node.nodes:
            self.visit(arg, frame)
            self.write(", ")
        self.write("))")


class _ChatTemplateEnvironment(ImmutableSandboxedEnvironment):
    code_generator_class = _CodeGenerator
    intercepted_binops = frozenset({"*", "**", "+", "%"})

    def _generate(self, source: nodes.Template, name: Any, filename: Any, defer_init: bool = False) -> str:
        # Every loop iterates through `guarded_iter`, which reads the render's clock.
        for loop in source.find_all(nodes.For):
            loop.iter = nodes.Call(nodes.EnvironmentAttribute("guarded_iter"), [loop.iter], [], None, None)
        return super()._generate(source, name, filename, defer_init)

    @staticmethod
    def guarded_iter(iterable: Any) -> Any:
        return limits.guarded_iter(iterable)

    @staticmethod
    def sized_join(join: Any, values: tuple) -> str:
        return limits.sized_join(join, values)

    @staticmethod
    def concat(pieces: Any) -> str:  # the compiled template's buffers (macros, set/filter blocks)
        return limits.sized_concat(pieces)

    def unsafe_undefined(self, obj: Any, attribute: str) -> Any:
        # The stock sandbox returns an Undefined that prints as "" - a template probing the
        # sandbox would render silently. Make every such probe an error.
        raise SecurityError(
            f"access to attribute {attribute!r} of a {type(obj).__name__!r} object is not allowed"
        )

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        limits.checked_binop(operator, left, right)
        return limits.charge_result(super().call_binop(context, operator, left, right))

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805
        args = limits.check_method_call(__obj, args, kwargs)
        return limits.charge_result(super().call(__context, __obj, *args, **kwargs))

    def wrap_str_format(self, value: Any) -> Any:
        wrapper = super().wrap_str_format(value)
        if wrapper is None:
            return None
        return limits.checked_format(value.__self__, wrapper, value.__name__ == "format_map")


def _budgeted_range(*args: int) -> range:
    """`range`, charged against the render's budget: nested `range` loops cannot spin for long."""
    rng = range(*args)
    limits.take_range(len(rng))
    return rng


def _raise_exception(message: str) -> None:
    raise ChatTemplateRaised(str(message))


def _strftime_now(fmt: str) -> str:
    limits.build(len(fmt) * 16, "strftime_now", limit=10_000)
    return datetime.now().strftime(fmt)


def _lipsum(n: int = 5, html: bool = True, min: int = 20, max: int = 100) -> str:
    """Jinja's filler text, at most `MAX_VALUE` characters of it."""
    if isinstance(n, int) and isinstance(max, int):
        limits.build(n * max * 12, "lipsum")
    return generate_lorem_ipsum(n, html, min, max)


def _tojson(
    value: Any,
    ensure_ascii: bool = False,
    indent: int | None = None,
    separators: tuple[str, str] | None = None,
    sort_keys: bool = False,
) -> str:
    width = len(indent) if isinstance(indent, str) else indent or 0
    if width > 64:
        raise TemplateLimit("tojson: indent is at most 64")
    limits.build(limits.weight(value, indent=width + 2), "tojson")
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
        finalize=limits.finalize,
    )
    env.filters["tojson"] = _tojson
    env.filters = limits.checked_filters(env.filters)
    env.globals["lipsum"] = _lipsum
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    env.globals["range"] = _budgeted_range
    return env


_ENV = _environment()


@lru_cache(maxsize=CACHE_SIZE)
def compile_template(template: str) -> jinja2.Template:
    """The compiled template for `template` (cached by its text); BadRequest if it is invalid."""
    if len(template) > MAX_TEMPLATE_CHARS:
        raise BadRequest(
            f"chat_template is {len(template):,} characters; the limit is {MAX_TEMPLATE_CHARS:,}",
            param="chat_template",
        )
    try:
        return _ENV.from_string(template)
    except TemplateSyntaxError as exc:
        raise BadRequest(
            f"chat_template has a syntax error at line {exc.lineno}: {_short(exc.message)}",
            param="chat_template",
        ) from None
    except (RecursionError, MemoryError):
        raise BadRequest("chat_template is nested too deeply", param="chat_template") from None
    except Exception as exc:  # e.g. an integer literal too long to convert
        raise BadRequest(
            f"chat_template could not be compiled: {type(exc).__name__}: {_short(str(exc))}",
            param="chat_template",
        ) from None


def _short(text: str) -> str:
    return text if len(text) <= MAX_ERROR_CHARS else text[:MAX_ERROR_CHARS] + "..."


def render_chat(
    template: str,
    messages: Iterable[BaseModel | dict[str, Any]],
    cancel: threading.Event | None = None,
    /,
    *,
    add_generation_prompt: bool,
    tools: list[Any] | None = None,
    documents: list[dict[str, str]] | None = None,
    bos_token: str,
    eos_token: str,
    **chat_template_args: Any,
) -> str:
    """The prompt text for `messages` rendered by `template`; BadRequest(param="chat_template")
    when the template is invalid, unsafe, goes past a limit, raises, or fails. Setting `cancel`
    (from another thread) ends the render soon with `RenderCancelled`."""
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
    try:
        with RenderLimits(cancel):
            for piece in compiled.generate(variables):
                size += len(piece)
                if size > MAX_OUTPUT_CHARS:
                    raise BadRequest(
                        f"chat_template output exceeds {MAX_OUTPUT_CHARS} characters",
                        param="chat_template",
                    )
                out.append(piece)
    except RenderCancelled:
        raise
    except ChatTemplateRaised as exc:
        raise BadRequest(f"chat_template raised an error: {_short(str(exc))}", param="chat_template") from None
    except TemplateLimit as exc:
        raise BadRequest(f"chat_template exceeded a limit: {exc}", param="chat_template") from None
    except SecurityError as exc:
        raise BadRequest(
            f"chat_template tried an operation the sandbox forbids: {_short(str(exc))}",
            param="chat_template",
        ) from None
    except TemplateError as exc:
        raise BadRequest(f"chat_template failed to render: {_short(str(exc))}", param="chat_template") from None
    except RecursionError:
        raise BadRequest("chat_template recursed too deeply", param="chat_template") from None
    except MemoryError:
        raise BadRequest("chat_template ran out of memory", param="chat_template") from None
    except (TypeError, ValueError, KeyError, IndexError, AttributeError, ArithmeticError) as exc:
        raise BadRequest(
            f"chat_template failed to render: {type(exc).__name__}: {_short(str(exc))}",
            param="chat_template",
        ) from None
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
