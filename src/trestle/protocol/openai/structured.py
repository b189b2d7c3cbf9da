"""What a request asks the output to follow: a `response_format` (text, JSON schema, JSON object,
grammar, structural tags) and the `tools` the model may call, with `tool_choice`'s named form.
Whether one can be enforced is the engine's question: it compiles them."""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import ConfigDict, Field, StringConstraints

from trestle.protocol.openai.wire import FunctionName, WireModel


class ResponseFormatText(WireModel):
    type: Literal["text"]


class JsonSchemaSpec(WireModel):
    """`response_format.json_schema`: OpenAI's structured-output object."""

    # `schema` would shadow a BaseModel attribute, hence the alias.
    model_config = ConfigDict(populate_by_name=True)

    name: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_\-]{1,64}$")]
    description: str | None = None
    json_schema: dict[str, Any] | None = Field(default=None, alias="schema")
    strict: bool | None = None


class ResponseFormatJson(WireModel):
    type: Literal["json_schema"]
    json_schema: JsonSchemaSpec


class ResponseFormatJsonObject(WireModel):
    type: Literal["json_object"]


class ResponseFormatGrammar(WireModel):
    """A grammar the output must match: GBNF (llama.cpp) or Lark, both as llguidance reads them."""

    type: Literal["grammar"]
    grammar: Annotated[str, StringConstraints(min_length=1)]


class StructuralTag(WireModel):
    """Once `begin` is generated, the text up to `end` must match `schema`."""

    model_config = ConfigDict(populate_by_name=True)

    begin: Annotated[str, StringConstraints(min_length=1)]
    tag_schema: dict[str, Any] | None = Field(default=None, alias="schema")
    end: str


class ResponseFormatStructuralTag(WireModel):
    type: Literal["structural_tag"]
    structures: Annotated[list[StructuralTag], Field(min_length=1)]
    triggers: Annotated[list[Annotated[str, StringConstraints(min_length=1)]], Field(min_length=1)]


ResponseFormat = Annotated[
    Union[
        ResponseFormatText,
        ResponseFormatJson,
        ResponseFormatJsonObject,
        ResponseFormatGrammar,
        ResponseFormatStructuralTag,
    ],
    Field(discriminator="type"),
]

# -- tools -------------------------------------------------------------------------------------


class FunctionDefinition(WireModel):
    name: FunctionName
    description: str | None = None
    parameters: dict[str, Any] | None = None  # a JSON schema
    strict: bool | None = None


class ChatCompletionToolsParam(WireModel):
    type: Literal["function"] = "function"
    function: FunctionDefinition


class ToolChoiceFunction(WireModel):
    name: FunctionName


class ChatCompletionNamedToolChoiceParam(WireModel):
    type: Literal["function"] = "function"
    function: ToolChoiceFunction
