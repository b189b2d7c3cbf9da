"""From a call of a prompt endpoint to the OpenAI request its model gets.

    definition = Definition.of(endpoint)                # the spec and its compiled templates (cached)
    prepared = await prepare(definition, call, search)  # values checked, searches run, rendered
    prepared.path, prepared.body                        # /v1/chat/completions | /v1/completions
    prepared.search_results                             # the seed's `search_results` items

Steps: the call's `values` must hold exactly the endpoint's variables (a missing or unknown one
is a 400 naming it); sampling fields are the endpoint's `defaults` overridden by the call's; each
search binding's query template is rendered with the values and searched, and the results
are bound to the binding's variable (`trestle.endpoints.templates.SearchResults`); then the
templates are rendered. A chat endpoint (`messages`) sends the rendered messages followed by the
call's `messages` (or its `prompt` as a user turn); a completion endpoint (`prompt`) sends the
rendered prompt followed by the call's `prompt` (or its messages' contents, one per line).
Renders run off the event loop (a render may take up to the sandbox's time limit).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from trestle.endpoints.templates import EndpointTemplates, SearchResults
from trestle.errors import BadRequest
from trestle.protocol.endpoints import CompletionCall, EndpointSpec, SearchBinding, check_sampling
from trestle.store.records import Endpoint

CHAT_PATH = "/v1/chat/completions"
COMPLETIONS_PATH = "/v1/completions"

# (binding, rendered query) -> [(wire result, template item)]: the datastore's search, or a 501
Search = Callable[[SearchBinding, str], Awaitable[list[tuple[dict[str, Any], dict[str, Any]]]]]


@dataclass(frozen=True)
class Definition:
    endpoint: Endpoint
    spec: EndpointSpec
    templates: EndpointTemplates

    @staticmethod
    def of(endpoint: Endpoint) -> "Definition":
        return _definition(endpoint)


@lru_cache(maxsize=256)
def _cached(endpoint_id: str, version: int, spec_json: str) -> tuple[EndpointSpec, EndpointTemplates]:
    spec = EndpointSpec.model_validate_json(spec_json)
    return spec, EndpointTemplates.compile(spec)


def _definition(endpoint: Endpoint) -> Definition:
    spec, templates = _cached(endpoint.id, endpoint.version, json.dumps(endpoint.spec, sort_keys=True))
    return Definition(endpoint, spec, templates)


@dataclass
class Prepared:
    path: str
    body: dict[str, Any]  # the OpenAI request, less `model` and `stream`
    search_results: list[dict[str, Any]] = field(default_factory=list)


def check_values(definition: Definition, values: dict[str, Any]) -> None:
    wanted = set(definition.templates.variables)
    missing = sorted(wanted - set(values))
    unknown = sorted(set(values) - wanted)
    if missing:
        raise BadRequest(f"values is missing the variable {missing[0]!r}; this endpoint's templates "
                         f"use: {', '.join(sorted(wanted)) or 'none'}", param=f"values.{missing[0]}")
    if unknown:
        raise BadRequest(f"values has an unknown variable {unknown[0]!r}; this endpoint's templates "
                         f"use: {', '.join(sorted(wanted)) or 'none'}", param=f"values.{unknown[0]}")


async def prepare(definition: Definition, call: CompletionCall, search: Search) -> Prepared:
    spec, templates = definition.spec, definition.templates
    check_values(definition, call.values)
    sampling = check_sampling({**spec.defaults, **call.sampling}, "")
    variables: dict[str, Any] = dict(call.values)
    results: list[dict[str, Any]] = []
    for i, binding in enumerate(spec.search):
        query = await asyncio.to_thread(templates.render, f"search.{i}.query", call.values)
        found = await search(binding, query)
        results += [wire for wire, _ in found]
        variables[binding.variable] = SearchResults(item for _, item in found)
    body: dict[str, Any] = dict(sampling)
    if call.user is not None:
        body["user"] = call.user
    if spec.chat:
        messages = []
        for i, message in enumerate(spec.messages or []):
            text = await asyncio.to_thread(templates.render, f"messages.{i}.content", variables)
            messages.append({"role": message.role, "content": text})
        if call.messages is not None:
            messages += [m.model_dump() for m in call.messages]
        elif call.prompt is not None:
            messages.append({"role": "user", "content": call.prompt})
        body["messages"] = messages
        return Prepared(CHAT_PATH, body, results)
    text = await asyncio.to_thread(templates.render, "prompt", variables)
    if call.prompt is not None:
        text += call.prompt
    elif call.messages is not None:
        text += "".join(f"{m.content}\n" for m in call.messages)
    body["prompt"] = text
    return Prepared(COMPLETIONS_PATH, body, results)
