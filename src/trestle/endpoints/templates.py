"""An endpoint's templates: compiled and checked when the endpoint is created, rendered per call.

    templates = EndpointTemplates.compile(spec)   # BadRequest naming the template that fails
    templates.variables                           # what a call's `values` must hold
    text = templates.render("prompt", variables)  # bounded in time and size; run it off the loop

Templates are Jinja2 in the sandbox the engine uses for chat templates
(`trestle.engine.chat.template`: `ImmutableSandboxedEnvironment`, no unsafe attributes, and the
limits of `trestle.engine.chat.template_limits` on time and on what a render may build). Each has a
name for error messages: `prompt`, `messages.N.content`, `search.N.query`.

The variables of an endpoint are every variable its templates read (`jinja2.meta`), less the
sandbox's own globals (`range`, ...) and less the variables that search bindings fill; a query
template may not read a search variable (it is filled after the queries run).
A search variable holds `SearchResults`: a list of results (each with `text`, `data`,
`confidence`, `document_id`, `url`, `metadata`) that prints, as `{{ context }}`, as the texts
joined by blank lines.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import jinja2
from jinja2 import meta
from jinja2.exceptions import SecurityError, TemplateError, TemplateSyntaxError

from trestle.engine.chat.template import _environment as sandboxed_environment
from trestle.engine.chat.template_limits import RenderLimits, TemplateLimit
from trestle.errors import BadRequest
from trestle.protocol.endpoints import EndpointSpec

MAX_OUTPUT_CHARS = 1_000_000
MAX_ERROR_CHARS = 300

_ENV = sandboxed_environment()


class SearchResults(list):
    """A search variable's value: the results, printing as their texts joined by blank lines."""

    def __str__(self) -> str:
        return "\n\n".join(str(r.get("text", "")) for r in self)


def _short(text: str) -> str:
    return text if len(text) <= MAX_ERROR_CHARS else text[:MAX_ERROR_CHARS] + "..."


def compile_one(name: str, source: str) -> tuple[jinja2.Template, set[str]]:
    """The compiled template and the variables it reads; BadRequest(param=name) if it is invalid."""
    try:
        ast = _ENV.parse(source)
        return _ENV.from_string(ast), meta.find_undeclared_variables(ast) - set(_ENV.globals)
    except TemplateSyntaxError as exc:
        raise BadRequest(f"template {name} does not compile: line {exc.lineno}: {_short(exc.message or '')}",
                         param=name) from None
    except (RecursionError, MemoryError):
        raise BadRequest(f"template {name} is nested too deeply", param=name) from None
    except Exception as exc:  # e.g. an integer literal too long to convert
        raise BadRequest(f"template {name} does not compile: {type(exc).__name__}: {_short(str(exc))}",
                         param=name) from None


def render_one(name: str, template: jinja2.Template, variables: dict[str, Any]) -> str:
    """The text of `template`; BadRequest naming it when the render fails or goes past a limit."""
    out: list[str] = []
    size = 0
    try:
        with RenderLimits():
            for piece in template.generate(variables):
                size += len(piece)
                if size > MAX_OUTPUT_CHARS:
                    raise TemplateLimit(f"the output is over {MAX_OUTPUT_CHARS:,} characters")
                out.append(piece)
    except TemplateLimit as exc:
        raise BadRequest(f"template {name} went past a limit: {exc}", param=name) from None
    except SecurityError as exc:
        raise BadRequest(f"template {name} tried an operation the sandbox forbids: {_short(str(exc))}",
                         param=name) from None
    except TemplateError as exc:
        raise BadRequest(f"template {name} failed to render: {_short(str(exc))}", param=name) from None
    except (RecursionError, MemoryError):
        raise BadRequest(f"template {name} recursed too deeply", param=name) from None
    except (TypeError, ValueError, KeyError, IndexError, AttributeError, ArithmeticError) as exc:
        raise BadRequest(f"template {name} failed to render: {type(exc).__name__}: {_short(str(exc))}",
                         param=name) from None
    return "".join(out)


@dataclass(frozen=True)
class EndpointTemplates:
    templates: dict[str, jinja2.Template]  # by name: prompt | messages.N.content | search.N.query
    variables: list[str]  # sorted

    @classmethod
    def compile(cls, spec: EndpointSpec) -> "EndpointTemplates":
        sources: dict[str, str] = {}
        if spec.prompt is not None:
            sources["prompt"] = spec.prompt
        for i, message in enumerate(spec.messages or []):
            sources[f"messages.{i}.content"] = message.content
        queries = {f"search.{i}.query": s.query for i, s in enumerate(spec.search)}
        templates: dict[str, jinja2.Template] = {}
        used: set[str] = set()
        searched = {s.variable for s in spec.search}
        for name, source in {**sources, **queries}.items():
            templates[name], reads = compile_one(name, source)
            if name in queries and reads & searched:
                bad = sorted(reads & searched)[0]
                raise BadRequest(f"template {name} reads {bad!r}, which a search binding fills "
                                 "(queries run before any search result exists)", param=name)
            used |= reads
        return cls(templates, sorted(used - searched))

    def render(self, name: str, variables: dict[str, Any]) -> str:
        return render_one(name, self.templates[name], variables)
