"""Request bodies of the OpenAI-compatible Model API: `/v1/chat/completions` and `/v1/completions`.

`ChatCompletionRequest` is seed 004 field for field (names, types, defaults, ranges,
`additionalProperties: false`); `tests/protocol/test_seed004_schema.py` compares the JSON schema
generated from it with the seed's. It also knows every field of OpenAI's own Chat Completions API
(`OpenAIOnlyFields`: honoured, accepted with no effect, or refused saying why), so only a field
neither defines is "unknown". An explicit `null` means the field's default. `CompletionRequest`
is the prompt-style sibling. Fields the two share are defined once, on `SamplingRequest`. Their
parts live by concept: messages in `messages`, `response_format` and `tools` in `structured`,
the base model and shared scalars in `wire`.

Parse a body with `trestle.protocol.validation.parse_body(ChatCompletionRequest, raw)`: it turns
every problem into `trestle.errors.BadRequest` with `param` naming the field.

A few checks need more than one field (`top_logprobs` needs `logprobs`, `stream_options` needs
`stream`, `min_tokens <= max_tokens`); they raise `BadRequest` directly from a model validator so
that `param` names the field at fault. Whether a schema or grammar in `response_format` or
`tools` can be enforced is the engine's question (it compiles them): a 400 from there names the
field too (see docs/model-api-fields.md).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, StringConstraints, field_validator, model_validator

from trestle.errors import BadRequest
from trestle.protocol.openai.messages import ChatCompletionMessage, MessageContent
from trestle.protocol.openai.structured import (
    ChatCompletionNamedToolChoiceParam,
    ChatCompletionToolsParam,
    ResponseFormat,
)
from trestle.protocol.openai.wire import StopString, TokenId, WireModel


# -- streaming, disaggregation, predicted outputs --------------------------------------------------


class StreamOptions(WireModel):
    include_usage: bool = False  # a last chunk with `usage` and empty `choices`
    # vLLM's extension: every chunk also carries the usage so far (a client that stops reading
    # early knows how many tokens were generated)
    continuous_usage_stats: bool = False


class DisaggregatedParams(WireModel):
    """Prefill/decode split parameters (TensorRT-LLM style). Accepted and ignored by trestle,
    which runs prefill and decode in one process."""

    request_type: Literal["context_only", "generation_only", "context_and_generation"] | None = None
    first_gen_tokens: list[TokenId] | None = None
    ctx_request_id: int | None = None
    opaque_state: str | None = None
    draft_tokens: list[TokenId] | None = None


class PredictionContent(WireModel):
    """OpenAI's Predicted Outputs hint: text the answer will probably repeat."""

    type: Literal["content"]
    content: MessageContent


MetadataKey = Annotated[str, StringConstraints(max_length=64)]
MetadataValue = Annotated[str, StringConstraints(max_length=512)]


class OpenAIOnlyFields(WireModel):
    """Chat Completions fields that OpenAI defines and seed 004 does not. Each one is either
    honoured, accepted with no effect, or refused with a 400 saying why (docs/model-api-fields.md
    has the table). None of them reaches a log except as a hash (`user`), and `metadata`,
    `safety_identifier`, `prompt_cache_key` not at all."""

    max_completion_tokens: int | None = Field(default=None, ge=1, le=262144)  # = max_tokens
    store: bool | None = None  # only false: completions are not stored
    metadata: Annotated[dict[MetadataKey, MetadataValue], Field(max_length=16)] | None = None
    service_tier: Literal["auto", "default", "flex", "scale", "priority", "fast"] | None = None
    prediction: PredictionContent | None = None  # a speed hint; the output does not depend on it
    modalities: list[Literal["text", "audio"]] | None = None  # only ["text"]
    audio: dict[str, Any] | None = None  # refused: text only
    reasoning_effort: Literal["none", "minimal", "low", "medium", "high", "xhigh", "max"] | None = None
    verbosity: Literal["low", "medium", "high"] | None = None  # refused
    web_search_options: dict[str, Any] | None = None  # refused
    moderation: dict[str, Any] | None = None  # refused
    functions: list[dict[str, Any]] | None = None  # deprecated: refused, use tools
    function_call: Any = None  # deprecated: refused, use tool_choice
    safety_identifier: Annotated[str, StringConstraints(max_length=64)] | None = None
    prompt_cache_key: str | None = None
    prompt_cache_retention: Literal["in_memory", "24h"] | None = None
    prompt_cache_options: dict[str, Any] | None = None

    @model_validator(mode="before")
    @classmethod
    def _one_max_tokens(cls, data: Any) -> Any:
        """`max_completion_tokens` is `max_tokens` under OpenAI's newer name."""
        if not isinstance(data, dict):
            return data
        mct, mt = data.get("max_completion_tokens"), data.get("max_tokens")
        if type(mct) is not int:
            return data  # absent, null, or wrong: the field's own validation says so
        if mt is not None and mt != mct:
            raise BadRequest(
                f"max_completion_tokens ({mct}) and max_tokens ({mt}) differ; send one of them",
                param="max_completion_tokens",
            )
        return {**data, "max_tokens": mct}

    @model_validator(mode="after")
    def _what_this_model_cannot_do(self) -> "OpenAIOnlyFields":
        refusals = {
            "store": (self.store, "completions are not stored by trestle; send false or leave it out"),
            "service_tier": (
                self.service_tier not in (None, "auto", "default"),
                f"trestle has one service tier; {self.service_tier!r} is not available "
                "(send 'auto' or 'default', or leave it out)",
            ),
            "modalities": (
                self.modalities is not None and self.modalities != ["text"],
                'this model produces text only; send ["text"] or leave it out',
            ),
            "audio": (self.audio is not None, "this model produces text only (no audio output)"),
            "reasoning_effort": (
                self.reasoning_effort not in (None, "none"),
                "this model has no reasoning-effort setting (a chat template option, if it has "
                "one, goes in chat_template_args)",
            ),
            "verbosity": (self.verbosity is not None, "this model has no verbosity setting; use max_tokens"),
            "web_search_options": (self.web_search_options is not None, "this model cannot search the web"),
            "moderation": (self.moderation is not None, "trestle does not run moderation"),
            "functions": (self.functions is not None, "the deprecated functions is not supported; send tools"),
            "function_call": (
                self.function_call is not None,
                "the deprecated function_call is not supported; send tool_choice",
            ),
        }
        for param, (refused, why) in refusals.items():
            if refused:
                raise BadRequest(f"{param}: {why}", param=param)
        return self


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


# Variables the chat template gets from trestle itself (see trestle.engine.chat.template.render_chat);
# `chat_template_args` may not set them.
RESERVED_TEMPLATE_VARIABLES = frozenset(
    {"messages", "add_generation_prompt", "tools", "documents", "bos_token", "eos_token", "template"}
)


class ChatCompletionRequest(SamplingRequest, OpenAIOnlyFields):
    """Request body for creating a chat completion: seed 004's fields, and OpenAI's own
    (`OpenAIOnlyFields`)."""

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
    response_format: ResponseFormat | None = Field(
        default=None, title="Response Format", description="Constrain the output (as on chat)."
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
