"""The JSON schema generated from `ChatCompletionRequest` matches seed 004, property by property.

Both schemas are normalised the same way: `$ref`s compare by schema name, a `null` member of
`anyOf`/`oneOf` (pydantic's spelling of "may be null") is dropped, `default: null` counts as no
default, descriptions and titles are not compared. Each property is then flattened to dotted keys
(`stop.anyOf.1.maxItems`) and the two flat dicts must be equal, except for the constraints listed
in TIGHTENED: ranges the seed states only in prose, or values with no meaning. The fields OpenAI's
Chat Completions API defines and the seed does not (OPENAI_ONLY) are the only properties the
seed lacks.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from trestle.protocol.openai.requests import ChatCompletionRequest

SEED_PATH = Path(__file__).parents[1] / "data" / "seed004_chat_completion_request.schema.json"
COMPARED = {
    "type", "default", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "enum",
    "const", "maxItems", "minItems", "minLength", "maxLength", "additionalProperties", "items",
    "anyOf", "$ref",
}

# property -> {flattened key: value}: constraints trestle adds to the seed's JSON schema.
TIGHTENED: dict[str, dict[str, Any]] = {
    "messages": {"minItems": 1},  # an empty conversation has nothing to answer (OpenAI: 400)
    "frequency_penalty": {"minimum": -2, "maximum": 2},  # OpenAI's range
    "presence_penalty": {"minimum": -2, "maximum": 2},  # OpenAI's range
    "logit_bias": {"additionalProperties.minimum": -100, "additionalProperties.maximum": 100},
    "top_logprobs": {"minimum": 0, "maximum": 20},
    "seed": {"minimum": -(2**63), "maximum": 2**63 - 1},  # OpenAI's range (int64)  # the seed's description: "(0-20)"
    "top_k": {"minimum": -1},  # "-1 to disable"
    "top_p_min": {"minimum": 0, "maximum": 1},  # a probability
    "min_p": {"minimum": 0, "maximum": 1},  # a probability
    "repetition_penalty": {"exclusiveMinimum": 0},  # multiplicative
    "min_tokens": {"minimum": 0},
    "bad_token_ids": {"items.minimum": 0},  # token ids
    "stop_token_ids": {"items.minimum": 0},
}


# Chat Completions fields of OpenAI's API that are not in the seed (docs/model-api-fields.md).
OPENAI_ONLY = {
    "max_completion_tokens", "store", "metadata", "service_tier", "prediction", "modalities",
    "audio", "reasoning_effort", "verbosity", "web_search_options", "moderation", "functions",
    "function_call", "safety_identifier", "prompt_cache_key", "prompt_cache_retention",
    "prompt_cache_options",
}


def _ref_name(ref: str) -> str:
    return ref.rsplit("/", 1)[-1]


def normalise(node: Any) -> Any:
    if isinstance(node, list):
        return [normalise(item) for item in node]
    if not isinstance(node, dict):
        return node
    node = dict(node)
    if "oneOf" in node:  # pydantic writes a discriminated union as oneOf
        node["anyOf"] = node.pop("oneOf")
    if "anyOf" in node:
        members = [m for m in node["anyOf"] if m != {"type": "null"}]
        if len(members) == 1:
            del node["anyOf"]
            return normalise({**members[0], **node})
        else:
            node["anyOf"] = members
    if node.get("default", 0) is None:
        del node["default"]
    out = {}
    for key, value in node.items():
        if key not in COMPARED:
            continue
        if key == "$ref":
            out[key] = _ref_name(value)
        else:
            out[key] = normalise(value)
    return out


def flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(node, dict):
        flat: dict[str, Any] = {}
        for key, value in node.items():
            flat.update(flatten(value, f"{prefix}{key}."))
        return flat
    if isinstance(node, list) and node and all(isinstance(item, dict) for item in node):
        flat = {}
        for index, item in enumerate(node):
            flat.update(flatten(item, f"{prefix}{index}."))
        return flat
    return {prefix.rstrip("."): node}


def differences(seed: dict, ours: dict) -> list[str]:
    """Every way `ours` departs from `seed`, as readable lines; empty when they match."""
    problems = []
    for key in ("type", "additionalProperties"):
        if seed.get(key) != ours.get(key):
            problems.append(f"top level {key}: seed {seed.get(key)!r}, ours {ours.get(key)!r}")
    if sorted(seed.get("required", [])) != sorted(ours.get("required", [])):
        problems.append(f"required: seed {seed.get('required')}, ours {ours.get('required')}")
    seed_props = seed["properties"]
    our_props = {k: v for k, v in ours["properties"].items() if k not in OPENAI_ONLY}
    for name in sorted(set(seed_props) ^ set(our_props)):
        where = "seed" if name in seed_props else "ours"
        problems.append(f"{name}: only in {where}")
    for name in sorted(set(seed_props) & set(our_props)):
        want = flatten(normalise(seed_props[name]))
        got = flatten(normalise(our_props[name]))
        extra = TIGHTENED.get(name, {})
        for key, value in extra.items():
            if got.get(key) != value:
                problems.append(f"{name}.{key}: TIGHTENED says {value!r}, ours {got.get(key)!r}")
            got.pop(key, None)
        for key in sorted(set(want) | set(got)):
            if want.get(key, "<absent>") != got.get(key, "<absent>"):
                problems.append(
                    f"{name}.{key}: seed {want.get(key, '<absent>')!r}, ours {got.get(key, '<absent>')!r}"
                )
    return problems


@pytest.fixture(scope="module")
def seed() -> dict:
    return json.loads(SEED_PATH.read_text())


@pytest.fixture(scope="module")
def ours() -> dict:
    return ChatCompletionRequest.model_json_schema()


def test_generated_schema_matches_seed(seed: dict, ours: dict) -> None:
    assert differences(seed, ours) == []


def test_every_seed_property_is_a_field(seed: dict) -> None:
    assert set(seed["properties"]) == set(ChatCompletionRequest.model_fields) - OPENAI_ONLY
    assert len(seed["properties"]) == 43
    assert not OPENAI_ONLY & set(seed["properties"])


def test_sub_schemas_the_seed_names_exist_and_forbid_extra_keys(seed: dict, ours: dict) -> None:
    named = {
        value
        for prop in seed["properties"].values()
        for key, value in flatten(normalise(prop)).items()
        if key.endswith("$ref")
    }
    assert named == {
        "ChatCompletionMessage", "ResponseFormatText", "ResponseFormatJson",
        "ResponseFormatJsonObject", "ResponseFormatGrammar", "ResponseFormatStructuralTag",
        "StreamOptions", "ChatCompletionToolsParam", "ChatCompletionNamedToolChoiceParam",
        "DisaggregatedParams",
    }
    assert named <= set(ours["$defs"])
    for name, sub in ours["$defs"].items():
        if sub.get("type") == "object":
            assert sub.get("additionalProperties") is False, name


@pytest.mark.parametrize(
    "mutate, expected",
    [
        (lambda s: s["properties"]["temperature"].update(maximum=2), "temperature.maximum"),
        (lambda s: s["properties"]["top_p"].update(exclusiveMinimum=0.5), "top_p.exclusiveMinimum"),
        (lambda s: s["properties"]["max_tokens"].update(default=16), "max_tokens.default"),
        (lambda s: s["properties"]["stop"]["anyOf"][1].update(maxItems=4), "stop.anyOf.1.maxItems"),
        (lambda s: s["properties"]["tool_choice"]["anyOf"][0]["enum"].pop(), "tool_choice.anyOf.0.enum"),
        (lambda s: s["properties"]["logprobs"].update(type="integer"), "logprobs.type"),
        (lambda s: s["properties"]["stream_options"].update({"$ref": "#/x/Other"}), "stream_options.$ref"),
        (lambda s: s["properties"].pop("echo"), "echo: only in ours"),
        (lambda s: s["required"].append("stream"), "required"),
        (lambda s: s.update(additionalProperties=True), "additionalProperties"),
        (lambda s: s["properties"]["documents"]["items"].update(additionalProperties={"type": "number"}),
         "documents.items.additionalProperties.type"),
    ],
)
def test_comparison_catches_a_departure(seed: dict, ours: dict, mutate, expected: str) -> None:
    changed = copy.deepcopy(seed)
    mutate(changed)
    problems = differences(changed, ours)
    assert any(expected in line for line in problems), problems
