"""Chat messages as a request carries them: system (and developer), user, assistant (with its
earlier tool calls) and tool results; text content only."""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import Field, field_validator, model_validator
from typing_extensions import TypeAliasType

from trestle.protocol.openai.wire import FunctionName, WireModel


class TextContentPart(WireModel):
    """One part of a message's `content` array. Only text parts are served (no images/audio)."""

    type: Literal["text"]
    text: str


MessageContent = Union[str, list[TextContentPart]]

# Content part types OpenAI defines that a text-only model cannot take.
NON_TEXT_PARTS = ("image_url", "input_audio", "file")


def _text_only(content: Any) -> Any:
    """A content array with an image, audio or file part is refused in words, not by schema path."""
    if isinstance(content, list):
        for i, part in enumerate(content):
            kind = part.get("type") if isinstance(part, dict) else None
            if kind in NON_TEXT_PARTS:
                raise ValueError(
                    f"part {i} is of type {kind!r}, but this model takes text only: send the "
                    f"content as a string or as parts of type 'text'"
                )
    return content


class FunctionCall(WireModel):
    name: FunctionName
    arguments: str  # JSON text, as the model wrote it


class ToolCall(WireModel):
    """A tool call made by the assistant in an earlier turn."""

    id: str
    type: Literal["function"] = "function"
    function: FunctionCall


class _MessageBase(WireModel):
    @field_validator("content", mode="before", check_fields=False)
    @classmethod
    def _content_is_text(cls, value: Any) -> Any:
        return _text_only(value)

    def text(self) -> str:
        """The content as one string (text parts joined), "" when there is none."""
        content = getattr(self, "content", None)
        if content is None:
            return ""
        if isinstance(content, str):
            return content
        return "".join(part.text for part in content)


class SystemMessage(_MessageBase):
    """`developer` (OpenAI's newer name for the system role) is read as `system`."""

    role: Literal["system", "developer"]
    content: MessageContent
    name: str | None = None

    @field_validator("role")
    @classmethod
    def _developer_is_system(cls, value: str) -> str:
        return "system"


class UserMessage(_MessageBase):
    role: Literal["user"]
    content: MessageContent
    name: str | None = None


class AssistantMessage(_MessageBase):
    """An earlier assistant turn. Takes every field of OpenAI's own response message, so a
    client can send back `message.model_dump()`: `refusal` stands in for empty content,
    `annotations` are accepted and not rendered; `audio` and the deprecated `function_call`
    can only be null (this model answers in text, with `tool_calls`)."""

    role: Literal["assistant"]
    content: MessageContent | None = None
    name: str | None = None
    tool_calls: list[ToolCall] | None = None
    refusal: str | None = None
    annotations: list[dict[str, Any]] | None = None
    audio: dict[str, Any] | None = None
    function_call: FunctionCall | None = None

    @field_validator("audio")
    @classmethod
    def _no_audio(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is not None:
            raise ValueError("this model takes text only; an assistant audio reference cannot be used")
        return value

    @field_validator("function_call")
    @classmethod
    def _no_function_call(cls, value: FunctionCall | None) -> FunctionCall | None:
        if value is not None:
            raise ValueError("the deprecated function_call is not supported; send tool_calls")
        return value

    @model_validator(mode="after")
    def _content_or_tool_calls(self) -> "AssistantMessage":
        if self.content is None and self.refusal is not None:
            self.content = self.refusal
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

