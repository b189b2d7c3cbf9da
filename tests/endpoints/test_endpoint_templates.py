"""Endpoint templates in the sandbox: variables found at create time, errors naming the template,
limits on a render, and how search results print."""

from __future__ import annotations

import pytest

from trestle.endpoints.templates import EndpointTemplates, SearchResults
from trestle.errors import BadRequest
from trestle.protocol.endpoints import EndpointSpec


def spec(**fields) -> EndpointSpec:
    return EndpointSpec.model_validate({"name": "t", "model": "m", **fields})


def test_variables_are_what_the_templates_read_less_loops_globals_and_search_variables():
    templates = EndpointTemplates.compile(spec(
        messages=[{"role": "system", "content": "{% for d in docs %}{{ d.text }}{% endfor %}{{ range(2)|list }}"},
                  {"role": "user", "content": "{% set n = 3 %}{{ question }} x{{ n }} {{ tone|default('calm') }}"}],
        search=[{"dataset": "h", "variable": "docs", "query": "{{ question }} {{ topic }}"}],
    ))
    assert templates.variables == ["question", "tone", "topic"]


@pytest.mark.parametrize("fields, name", [
    ({"prompt": "{{ a"}, "prompt"),
    ({"messages": [{"role": "user", "content": "ok"}, {"role": "user", "content": "{% if %}"}]},
     "messages.1.content"),
    ({"prompt": "x", "search": [{"dataset": "h", "variable": "v", "query": "{{ q }"}]}, "search.0.query"),
])
def test_a_template_that_does_not_compile_is_named(fields, name):
    with pytest.raises(BadRequest) as err:
        EndpointTemplates.compile(spec(**fields))
    assert err.value.param == name and f"template {name} does not compile" in err.value.message


@pytest.mark.parametrize("source, words", [
    ("{{ x.__class__.__mro__ }}", "sandbox forbids"),
    ("{{ x.append }}", "sandbox forbids"),
    ("{% for i in range(10**7) %}{% for j in range(10**7) %}{% endfor %}{% endfor %}", "went past a limit"),
    ("{{ 'a' * 10**9 }}", "went past a limit"),
    ("{{ 1 / 0 }}", "failed to render"),
])
def test_a_render_that_escapes_or_runs_away_is_a_400_naming_the_template(source, words):
    templates = EndpointTemplates.compile(spec(prompt=source))
    with pytest.raises(BadRequest) as err:
        templates.render("prompt", {"x": []})
    assert err.value.param == "prompt" and words in err.value.message


def test_search_results_print_as_their_texts_and_can_be_looped_over():
    results = SearchResults([{"text": "first", "url": "/a"}, {"text": "second", "url": "/b"}])
    templates = EndpointTemplates.compile(spec(
        prompt="{{ ctx }}|{% for r in ctx %}{{ r.url }};{% endfor %}{{ ctx|length }}",
        search=[{"dataset": "h", "variable": "ctx", "query": "q"}]))
    assert templates.render("prompt", {"ctx": results}) == "first\n\nsecond|/a;/b;2"
