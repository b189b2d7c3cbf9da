"""docs/model-api-fields.md lists every request field with the default the code has."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from pydantic import BaseModel

from trestle.protocol.openai.requests import ChatCompletionRequest, CompletionRequest, SamplingRequest

DOC = Path(__file__).parents[2] / "docs" / "model-api-fields.md"


def table_after(heading: str) -> dict[str, str]:
    """field -> default cell of the first table after `heading`."""
    text = DOC.read_text()
    start = text.index(heading)
    rows: dict[str, str] = {}
    for line in text[start:].splitlines()[1:]:
        if rows and not line.startswith("|"):
            break
        match = re.match(r"\| `(\w+)` \|[^|]*\| ([^|]+) \|", line)
        if match:
            rows[match.group(1)] = match.group(2).strip()
    return rows


@pytest.mark.parametrize(
    "heading, model_cls, fields",
    [
        ("## `ChatCompletionRequest`", ChatCompletionRequest, set(ChatCompletionRequest.model_fields)),
        ("## `CompletionRequest`", CompletionRequest,
         set(CompletionRequest.model_fields) - set(SamplingRequest.model_fields)),
    ],
)
def test_doc_table_matches_the_model(heading: str, model_cls: type[BaseModel], fields: set[str]) -> None:
    rows = table_after(heading)
    assert set(rows) == fields
    for name, cell in rows.items():
        field = model_cls.model_fields[name]
        if field.is_required():
            assert cell == "required", name
        else:
            assert cell == f"`{json.dumps(field.default)}`", name


def test_shared_fields_are_named_in_the_completions_section() -> None:
    text = DOC.read_text()
    section = text[text.index("## `CompletionRequest`"):]
    for name in SamplingRequest.model_fields:
        assert f"`{name}`" in section, name
