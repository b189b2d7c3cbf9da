"""Request bodies of the OpenAI-compatible Model API: `/v1/chat/completions` and `/v1/completions`.

`ChatCompletionRequest` is seed 004 field for field (names, types, defaults, ranges,
`additionalProperties: false`); `tests/protocol/test_seed004_schema.py` compares the JSON schema
generated from it with the seed's. `CompletionRequest` is the prompt-style sibling. Fields the two
share are defined once, on `SamplingRequest`.

Parse a body with `trestle.protocol.validation.parse_body(ChatCompletionRequest, raw)`: it turns
every problem into `trestle.errors.BadRequest` with `param` naming the field.

A few checks need more than one field (`top_logprobs` needs `logprobs`, `stream_options` needs
`stream`, `min_tokens <= max_tokens`); they raise `BadRequest` directly from a model validator so
that `param` names the field at fault. Fields that are valid but that the engine does not serve
(`tools`, non-text `response_format`, ...) are *not* refused here: the engine refuses them with a
400 that names the field (see docs/model-api-fields.md).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator, model_validator
from typing_extensions import TypeAliasType

from trestle.errors import BadRequest

# -- building blocks ---------------------------------------------------------------------------


class WireModel(BaseModel):
    """Base of every request type: unknown keys are errors, no type coercion ("1" is not 1)."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


TokenId = Annotated[int, Field(ge=0)]
StopString = Annotated[str, StringConstraints(min_length=1, max_length=1000)]
# Tool and function names as OpenAI accepts them.
FunctionName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.\-]{1,64}$")]


# -- messages ----------------------------------------------------------------------------------


class TextContentPart(WireModel):
    """One part of a message's `content` array. Only text parts are served (no images/audio)."""

    type: Literal["text"]
    text: str


MessageContent = Union[str, list[TextContentPart]]


class FunctionCall(WireModel):
    name: FunctionName
    arguments: str  # JSON text, as the model wrote it


class ToolCall(WireModel):
    """A tool call made by the assistant in an earlier turn."""

    id: str
    type: Literal["function"] = "function"
    function: FunctionCall


class _MessageBase(WireModel):
    def text(self) -> str:
        """The content as one string (text parts joined), "" when there is none."""
        content = getattr(self, "content", None)
        if content is None:
            return ""
        if isinstance(content, str):
            return content
        return "".join(part.text for part in content)


class SystemMessage(_MessageBase):
    role: Literal["system"]
    content: MessageContent
    name: str | None = None


class UserMessage(_MessageBase):
    role: Literal["user"]
    content: MessageContent
    name: str | None = None


class AssistantMessage(_MessageBase):
    role: Literal["assistant"]
    content: MessageContent | None = None
    name: str | None = None
    tool_calls: list[ToolCall] | None = None

    @model_validator(mode="after")
    def _content_or_tool_calls(self) -> "AssistantMessage":
        if self.content is None and not self.tool_calls:
            raise ValueError("an assistant message needs `content` or `tool_calls`")
        return self


class ToolMessage(_MessageBase):
    role: Literal["tool"]
    content: MessageContent
    tool_call_id: str


ChatCompletionMessage = TypeAliasType(
    "ChatCompletionMessage",
    Annotated[
        Union[SystemMessage, UserMessage, AssistantMessage, ToolMessage],
        Field(discriminator="role"),
    ],
)

# -- response_format ---------------------------------------------------------------------------


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

# -- streaming, tools, disaggregation ----------------------------------------------------------


class StreamOptions(WireModel):
    include_usage: bool = False  # a last chunk with `usage` and empty `choices`


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


class DisaggregatedParams(WireModel):
    """Prefill/decode split parameters (TensorRT-LLM style). Accepted and ignored by trestle,
    which runs prefill and decode in one process."""

    request_type: Literal["context_only", "generation_only", "context_and_generation"] | None = None
    first_gen_tokens: list[TokenId] | None = None
    ctx_request_id: int | None = None
    opaque_state: str | None = None
    draft_tokens: list[TokenId] | None = None


# -- the requests ------------------------------------------------------------------------------


class SamplingRequest(WireModel):
    """Fields shared by chat and prompt-style completions, each defined once.

    Ranges beyond the seed's JSON schema are the ones its descriptions state (e.g. `top_logprobs`
    0-20, `logit_bias` -100..100) or values that have no meaning (a negative `min_tokens`); the
    schema test lists each of them.
    """

    model: str = Field(
        title="Model",
        description="The model slug to use for completion, such as `deepseek-ai/DeepSeek-V4-Pro`.",
    )
    frequency_penalty: float = Field(default=0, ge=-2, le=2, title="Frequency Penalty")
    logit_bias: dict[str, Annotated[float, Field(ge=-100, le=100)]] | None = Field(
        default=None, title="Logit Bias"
    )
    max_tokens: int = Field(default=4096, ge=1, le=262144, title="Max Tokens")
    n: int = Field(default=1, title="N", description="Only `1` is supported.")
    presence_penalty: float = Field(default=0, ge=-2, le=2, title="Presence Penalty")
    seed: int | None = Field(default=None, ge=-(2**63), le=2**63 - 1, title="Seed")  # OpenAI: int64
    stop: StopString | Annotated[list[StopString], Field(max_length=32)] | None = Field(
        default=None, title="Stop"
    )
    stream: bool = Field(default=False, title="Stream")
    stream_options: StreamOptions | None = None
    temperature: float | None = Field(default=None, ge=0, le=4, title="Temperature")
    top_p: float = Field(default=1, gt=0, le=1, title="Top P")
    user: str | None = Field(default=None, title="User")
    best_of: int | None = Field(default=None, ge=1, le=1, title="Best Of")
    top_k: int = Field(default=50, ge=-1, title="Top K", description="-1 (or 0) disables top-k.")
    top_p_min: float = Field(default=0, ge=0, le=1, title="Top P Min")
    min_p: float = Field(default=0, ge=0, le=1, title="Min P")
    repetition_penalty: float = Field(default=1, gt=0, title="Repetition Penalty")
    length_penalty: float = Field(default=1, title="Length Penalty")
    early_stopping: bool = Field(default=False, title="Early Stopping")
    bad: str | list[str] | None = Field(default=None, title="Bad")
    bad_token_ids: list[TokenId] | None = Field(default=None, title="Bad Token Ids")
    stop_token_ids: list[TokenId] | None = Field(default=None, title="Stop Token Ids")
    include_stop_str_in_output: bool = Field(default=False, title="Include Stop Str In Output")
    ignore_eos: bool = Field(default=False, title="Ignore Eos")
    min_tokens: int = Field(default=0, ge=0, title="Min Tokens")
    skip_special_tokens: bool = Field(default=True, title="Skip Special Tokens")
    spaces_between_special_tokens: bool = Field(default=True, title="Spaces Between Special Tokens")
    truncate_prompt_tokens: int | None = Field(default=None, ge=1, title="Truncate Prompt Tokens")

    @field_validator("n")
    @classmethod
    def _only_one_choice(cls, value: int) -> int:
        if value != 1:
            raise ValueError("only 1 is supported")
        return value

    @field_validator("logit_bias")
    @classmethod
    def _token_id_keys(cls, value: dict[str, float] | None) -> dict[str, float] | None:
        for key in value or {}:
            if not (key.isascii() and key.isdigit() and len(key) <= 10):
                raise ValueError(f"keys must be token ids (non-negative integers), got {key[:20]!r}")
        return value

    @field_validator("repetition_penalty")
    @classmethod
    def _usable_penalty(cls, value: float) -> float:
        # logits are divided or multiplied by it: past this range they overflow to infinity
        if not 1e-2 <= value <= 1e2:
            raise ValueError(f"must be between 0.01 and 100, got {value:g}")
        return value

    @model_validator(mode="after")
    def _cross_field_checks(self) -> "SamplingRequest":
        if self.stream_options is not None and not self.stream:
            raise BadRequest(
                "stream_options is only allowed when stream is true", param="stream_options"
            )
        if self.min_tokens > self.max_tokens:
            raise BadRequest(
                f"min_tokens ({self.min_tokens}) must not exceed max_tokens ({self.max_tokens})",
                param="min_tokens",
            )
        return self

    @property
    def stop_list(self) -> list[str]:
        """`stop` as a list (empty when unset)."""
        if self.stop is None:
            return []
        return [self.stop] if isinstance(self.stop, str) else list(self.stop)


# Variables the chat template gets from trestle itself (see trestle.engine.template.render_chat);
# `chat_template_args` may not set them.
RESERVED_TEMPLATE_VARIABLES = frozenset(
    {"messages", "add_generation_prompt", "tools", "documents", "bos_token", "eos_token", "template"}
)


class ChatCompletionRequest(SamplingRequest):
    """Request body for creating a chat completion (seed 004)."""

    model_config = ConfigDict(title="ChatCompletionRequest")

    messages: Annotated[list[ChatCompletionMessage], Field(min_length=1)]
    logprobs: bool = Field(default=False, title="Logprobs")
    top_logprobs: int = Field(default=0, ge=0, le=20, title="Top Logprobs")
    response_format: ResponseFormat | None = Field(default=None, title="Response Format")
    tools: list[ChatCompletionToolsParam] | None = Field(default=None, title="Tools")
    tool_choice: Literal["none", "required", "auto"] | ChatCompletionNamedToolChoiceParam | None = (
        Field(default=None, title="Tool Choice")
    )
    parallel_tool_calls: bool = Field(default=True, title="Parallel Tool Calls")
    echo: bool = Field(
        default=False,
        title="Echo",
        description="If the last message is the assistant's, start the output with its content.",
    )
    add_generation_prompt: bool = Field(default=True, title="Add Generation Prompt")
    add_special_tokens: bool = Field(default=False, title="Add Special Tokens")
    documents: list[dict[str, str]] | None = Field(default=None, title="Documents")
    chat_template: str | None = Field(default=None, title="Chat Template")
    chat_template_args: dict[str, Any] | None = Field(default=None, title="Chat Template Args")
    disaggregated_params: DisaggregatedParams | None = None

    @field_validator("chat_template_args")
    @classmethod
    def _no_reserved_variables(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        clash = sorted(set(value or {}) & RESERVED_TEMPLATE_VARIABLES)
        if clash:
            raise ValueError(
                f"{', '.join(clash)} cannot be set here; trestle sets it from the request"
            )
        return value

    @model_validator(mode="after")
    def _logprobs_checks(self) -> "ChatCompletionRequest":
        if self.top_logprobs > 0 and not self.logprobs:
            raise BadRequest("top_logprobs requires logprobs: true", param="top_logprobs")
        if self.tool_choice is not None and self.tool_choice != "none" and not self.tools:
            raise BadRequest(f"tool_choice {self.tool_choice!r} needs `tools`", param="tool_choice")
        return self


PromptTokens = Annotated[list[TokenId], Field(min_length=1)]


class CompletionRequest(SamplingRequest):
    """Request body of `/v1/completions` (prompt style). One prompt per request.

    After validation `prompt` is a string or a list of token ids (a one-element list of strings
    becomes its string).
    """

    prompt: str | PromptTokens | list[str] = Field(title="Prompt")
    logprobs: int | None = Field(
        default=None, ge=0, le=5, title="Logprobs",
        description="Return the log probabilities of this many most likely tokens per position.",
    )
    echo: bool = Field(default=False, title="Echo", description="Return the prompt before the output.")
    suffix: str | None = Field(default=None, title="Suffix", description="Not supported.")
    add_special_tokens: bool = Field(
        default=True, title="Add Special Tokens", description="Add BOS (as the model wants) to the prompt."
    )

    @field_validator("prompt", mode="before")
    @classmethod
    def _one_prompt(cls, value: Any) -> Any:
        if isinstance(value, list) and value and isinstance(value[0], (str, list)):
            if len(value) != 1:
                raise ValueError(f"only one prompt per request is supported, got {len(value)}")
            if isinstance(value[0], list):
                return value[0]  # [[token ids]] -> [token ids]
        return value

    @field_validator("prompt")
    @classmethod
    def _flatten(cls, value: str | list[int] | list[str]) -> str | list[int]:
        if isinstance(value, list) and value and isinstance(value[0], str):
            return value[0]
        if isinstance(value, list) and not value:
            raise ValueError("must not be an empty list")
        return value

    @field_validator("suffix")
    @classmethod
    def _no_suffix(cls, value: str | None) -> str | None:
        if value is not None:
            raise ValueError("not supported")
        return value
