"""Anthropic Messages API wire types: the request of `POST /v1/messages`, the `Message` it answers,
the streamed events, and the error envelope of that route.

    MessagesRequest   model, max_tokens, messages (text, tool_use, tool_result blocks), system,
                      stop_sequences, temperature, top_p, top_k, stream, tools, tool_choice, metadata
    Message           {"id": "msg_...", "type": "message", "role": "assistant", "model", "content",
                       "stop_reason", "stop_sequence", "usage": {"input_tokens", "output_tokens"}}
    events            message_start, content_block_start/delta/stop, message_delta, message_stop
                      (`sse(event)` frames one with its `event:` line, as Anthropic sends them)
    AnthropicError    {"type": "error", "error": {"type", "message"}}

Requests are parsed strictly (`WireModel`: unknown fields are a 400). What a text model cannot do is
refused in words: image, document and thinking blocks, server tools, extended thinking, prefill.
The translation onto the OpenAI chat path is `trestle.gateway.bridge.anthropic`.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, Field, StringConstraints, field_validator, model_validator
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse

from trestle.errors import BadRequest, TrestleError
from trestle.protocol.openai.wire import FunctionName, StopString, WireModel

# -- request ------------------------------------------------------------------------------------

# Block types Anthropic defines that a text model served here cannot take.
UNSUPPORTED_BLOCKS = {
    "image": "this model takes text only (no images)",
    "document": "this model takes text only (no documents)",
    "search_result": "search result blocks are not supported; send the text",
    "thinking": "extended thinking is not supported, so thinking blocks cannot be sent back",
    "redacted_thinking": "extended thinking is not supported, so thinking blocks cannot be sent back",
    "server_tool_use": "server tools are not supported; only client tools (with `input_schema`)",
    "web_search_tool_result": "server tools are not supported; only client tools (with `input_schema`)",
    "container_upload": "containers are not supported",
}


def _supported_blocks(content: Any) -> Any:
    """A list of blocks with a type this route cannot take is refused with the reason."""
    if isinstance(content, list):
        for i, block in enumerate(content):
            kind = block.get("type") if isinstance(block, dict) else None
            if kind in UNSUPPORTED_BLOCKS:
                raise ValueError(f"block {i} is of type {kind!r}: {UNSUPPORTED_BLOCKS[kind]}")
    return content


class CacheControl(WireModel):
    """Accepted and has no effect: trestle keeps no prompt cache that a client steers."""

    type: Literal["ephemeral"]
    ttl: Literal["5m", "1h"] | None = None


class TextBlock(WireModel):
    type: Literal["text"]
    text: str
    cache_control: CacheControl | None = None
    citations: list[dict[str, Any]] | None = None  # as a Message's own text block carries it; unused


class ToolUseBlock(WireModel):
    """A tool call of an earlier assistant turn (a Message's content sent back)."""

    type: Literal["tool_use"]
    id: Annotated[str, StringConstraints(min_length=1, max_length=200)]
    name: FunctionName
    input: dict[str, Any]
    cache_control: CacheControl | None = None


class ToolResultBlock(WireModel):
    """The result of a tool call, in a user turn. `is_error` reaches the model as an `Error: ` prefix."""

    type: Literal["tool_result"]
    tool_use_id: Annotated[str, StringConstraints(min_length=1, max_length=200)]
    content: str | list[TextBlock] | None = None
    is_error: bool = False
    cache_control: CacheControl | None = None

    @field_validator("content", mode="before")
    @classmethod
    def _supported(cls, value: Any) -> Any:
        return _supported_blocks(value)


ContentBlock = Annotated[Union[TextBlock, ToolUseBlock, ToolResultBlock], Field(discriminator="type")]


class MessageParam(WireModel):
    role: Literal["user", "assistant"]
    content: str | list[ContentBlock]

    @field_validator("content", mode="before")
    @classmethod
    def _supported(cls, value: Any) -> Any:
        return _supported_blocks(value)

    @model_validator(mode="after")
    def _blocks_of_the_role(self) -> "MessageParam":
        if isinstance(self.content, list):
            wrong = "tool_result" if self.role == "assistant" else "tool_use"
            if any(block.type == wrong for block in self.content):
                raise ValueError(f"a {self.role} message cannot have a {wrong} block")
        return self


class Tool(WireModel):
    """A client tool: the model may call it with an `input` that matches `input_schema`."""

    name: FunctionName
    description: str | None = None
    input_schema: dict[str, Any]
    type: Literal["custom"] | None = None
    cache_control: CacheControl | None = None
    strict: bool | None = None  # the input always follows the schema here

    @model_validator(mode="before")
    @classmethod
    def _client_tools_only(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("type") not in (None, "custom"):
            raise ValueError(f"server tools (type {str(data['type'])[:60]!r}) are not supported; "
                             "only client tools, with `name` and `input_schema`")
        return data

    @field_validator("input_schema")
    @classmethod
    def _an_object(cls, value: dict[str, Any]) -> dict[str, Any]:
        if value.get("type") != "object":
            raise ValueError('must be a JSON schema of type "object"')
        return value


class ToolChoiceAuto(WireModel):
    type: Literal["auto"]
    disable_parallel_tool_use: bool = False


class ToolChoiceAny(WireModel):
    type: Literal["any"]
    disable_parallel_tool_use: bool = False


class ToolChoiceTool(WireModel):
    type: Literal["tool"]
    name: FunctionName
    disable_parallel_tool_use: bool = False


class ToolChoiceNone(WireModel):
    type: Literal["none"]


ToolChoice = Annotated[Union[ToolChoiceAuto, ToolChoiceAny, ToolChoiceTool, ToolChoiceNone],
                       Field(discriminator="type")]


class Metadata(WireModel):
    user_id: Annotated[str, StringConstraints(max_length=256)] | None = None  # as OpenAI's `user`


class MessagesRequest(WireModel):
    """The body of `POST /v1/messages`."""

    model: Annotated[str, StringConstraints(min_length=1, max_length=400)]
    max_tokens: int = Field(ge=1, le=262144)
    messages: Annotated[list[MessageParam], Field(min_length=1)]
    system: str | list[TextBlock] | None = None
    stop_sequences: Annotated[list[StopString], Field(max_length=32)] | None = None
    temperature: float | None = Field(default=None, ge=0, le=1)
    top_p: float | None = Field(default=None, gt=0, le=1)
    top_k: int | None = Field(default=None, ge=0)
    stream: bool = False
    tools: list[Tool] | None = None
    tool_choice: ToolChoice | None = None
    metadata: Metadata | None = None
    thinking: dict[str, Any] | None = None  # only {"type": "disabled"}
    service_tier: Literal["auto", "standard_only"] | None = None  # one tier here
    cache_control: CacheControl | None = None

    @field_validator("thinking")
    @classmethod
    def _no_thinking(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is not None and value.get("type") != "disabled":
            raise ValueError('extended thinking is not supported by this model; leave it out or '
                             'send {"type": "disabled"}')
        return value

    @model_validator(mode="after")
    def _checks(self) -> "MessagesRequest":
        if self.messages[-1].role == "assistant":
            raise BadRequest("messages: prefill (a last message from the assistant) is not supported: "
                             "end `messages` with a user message", param="messages")
        choice = self.tool_choice
        if choice is not None and choice.type != "none":
            names = {tool.name for tool in self.tools or ()}
            if not names:
                raise BadRequest(f"tool_choice: {choice.type!r} needs `tools`", param="tool_choice")
            if isinstance(choice, ToolChoiceTool) and choice.name not in names:
                raise BadRequest(f"tool_choice: no tool named {choice.name!r} in `tools`", param="tool_choice")
        return self


# -- response -----------------------------------------------------------------------------------
def message_id() -> str:
    return f"msg_{uuid.uuid4().hex}"


StopReason = Literal["end_turn", "max_tokens", "stop_sequence", "tool_use"]


class TextContent(BaseModel):
    type: Literal["text"] = "text"
    text: str


class ToolUseContent(BaseModel):
    type: Literal["tool_use"] = "tool_use"
    id: str
    name: str
    input: dict[str, Any]


OutputBlock = Annotated[Union[TextContent, ToolUseContent], Field(discriminator="type")]


class MessageUsage(BaseModel):
    input_tokens: int
    output_tokens: int


class Message(BaseModel):
    id: str = Field(default_factory=message_id)
    type: Literal["message"] = "message"
    role: Literal["assistant"] = "assistant"
    model: str
    content: list[OutputBlock]
    stop_reason: StopReason | None
    stop_sequence: str | None = None
    usage: MessageUsage


# -- streamed events ----------------------------------------------------------------------------
class MessageStart(BaseModel):
    type: Literal["message_start"] = "message_start"
    message: Message


class ContentBlockStart(BaseModel):
    type: Literal["content_block_start"] = "content_block_start"
    index: int
    content_block: OutputBlock


class TextDelta(BaseModel):
    type: Literal["text_delta"] = "text_delta"
    text: str


class InputJsonDelta(BaseModel):
    type: Literal["input_json_delta"] = "input_json_delta"
    partial_json: str


class ContentBlockDelta(BaseModel):
    type: Literal["content_block_delta"] = "content_block_delta"
    index: int
    delta: Annotated[Union[TextDelta, InputJsonDelta], Field(discriminator="type")]


class ContentBlockStop(BaseModel):
    type: Literal["content_block_stop"] = "content_block_stop"
    index: int


class StopInfo(BaseModel):
    stop_reason: StopReason
    stop_sequence: str | None = None


class MessageDelta(BaseModel):
    """The last event before `message_stop`: why it stopped and the whole answer's usage."""

    type: Literal["message_delta"] = "message_delta"
    delta: StopInfo
    usage: MessageUsage


class MessageStop(BaseModel):
    type: Literal["message_stop"] = "message_stop"


# -- errors -------------------------------------------------------------------------------------
class AnthropicErrorDetail(BaseModel):
    type: str
    message: str


class AnthropicError(BaseModel):
    type: Literal["error"] = "error"
    error: AnthropicErrorDetail


Event = Union[MessageStart, ContentBlockStart, ContentBlockDelta, ContentBlockStop, MessageDelta,
              MessageStop, AnthropicError]

# The error types of Anthropic's API, by the status trestle answers.
ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
               404: "not_found_error", 405: "invalid_request_error", 409: "conflict_error",
               413: "request_too_large", 429: "rate_limit_error", 503: "overloaded_error",
               504: "timeout_error"}


def error_type(status: int) -> str:
    return ERROR_TYPES.get(status, "invalid_request_error" if status < 500 else "api_error")


def error_of(status: int, message: str) -> AnthropicError:
    return AnthropicError(error=AnthropicErrorDetail(type=error_type(status), message=message))


def error_response(exc: Exception, headers: dict[str, str] | None = None) -> JSONResponse:
    """A trestle error (or Starlette's HTTPException) in Anthropic's envelope, with its status."""
    if isinstance(exc, HTTPException):
        status, message = exc.status_code, str(exc.detail)
        headers = headers or exc.headers
    else:
        assert isinstance(exc, TrestleError)
        status, message = exc.status_code, exc.message
        headers = headers or exc.headers
    return JSONResponse(error_of(status, message).model_dump(), status_code=status, headers=headers)


def sse(event: Event) -> bytes:
    """One server-sent event, `event:` line first, as Anthropic frames them."""
    return f"event: {event.type}\ndata: ".encode() + event.model_dump_json().encode() + b"\n\n"
