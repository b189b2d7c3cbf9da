"""Translating between Anthropic's Messages API and OpenAI chat: pure functions, no I/O.

    to_chat(MessagesRequest) -> dict             the OpenAI chat request that asks the same
    to_message(ChatCompletion, ...) -> Message   a whole answer
    Events(...).start() / feed(chunk) / end()    `chat.completion.chunk`s in, Anthropic's events out
    whole_as_events(Message)                     a whole answer as the events of a stream

Blocks map onto OpenAI messages: `system` text blocks are content parts of a system message; an
assistant's `tool_use` blocks its `tool_calls` (arguments as JSON text); a user turn's
`tool_result` blocks `tool` messages (`is_error` as an `Error: ` prefix), its text a user message.
Back: `finish_reason` stop / length / tool_calls is `stop_reason` end_turn / max_tokens /
tool_use, and a stop string left at the end of the text (`stops`, see `trestle.gateway.bridge.anthropic`)
is taken out and reported as `stop_sequence`.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from trestle.errors import UpstreamError
from trestle.protocol import anthropic as a
from trestle.protocol.openai.responses import ChatCompletion, ChatCompletionChunk, Usage

STOP_REASONS = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use"}


# -- request: Anthropic -> OpenAI chat --------------------------------------------------------------
def _parts(blocks: list[a.TextBlock]) -> list[dict[str, str]]:
    return [{"type": "text", "text": block.text} for block in blocks]


def _tool_result(block: a.ToolResultBlock) -> dict[str, Any]:
    content: str | list[dict[str, str]] = (block.content if isinstance(block.content, str)
                                           else _parts(block.content or []))
    if block.is_error:
        content = f"Error: {content}" if isinstance(content, str) else [{"type": "text", "text": "Error: "}, *content]
    return {"role": "tool", "tool_call_id": block.tool_use_id, "content": content}


def _turn(message: a.MessageParam) -> list[dict[str, Any]]:
    """One Anthropic message as OpenAI messages: a user turn's tool results become `tool` messages."""
    if isinstance(message.content, str):
        return [{"role": message.role, "content": message.content}]
    if message.role == "assistant":
        text = [b for b in message.content if isinstance(b, a.TextBlock)]
        calls = [{"id": b.id, "type": "function", "function": {"name": b.name, "arguments": json.dumps(b.input)}}
                 for b in message.content if isinstance(b, a.ToolUseBlock)]
        out: dict[str, Any] = {"role": "assistant", "content": _parts(text) if text or not calls else None}
        if calls:
            out["tool_calls"] = calls
        return [out]
    turns: list[dict[str, Any]] = []
    text: list[a.TextBlock] = []
    for block in message.content:
        if isinstance(block, a.ToolResultBlock):
            if text:
                turns.append({"role": "user", "content": _parts(text)})
                text = []
            turns.append(_tool_result(block))
        else:
            text.append(block)  # a user turn has no tool_use blocks (MessageParam checks)
    if text or not turns:
        turns.append({"role": "user", "content": _parts(text)})
    return turns


def _tool_choice(choice: Any) -> tuple[Any, bool]:
    """OpenAI's `tool_choice` and `parallel_tool_calls` for Anthropic's `tool_choice`."""
    parallel = not getattr(choice, "disable_parallel_tool_use", False)
    if isinstance(choice, a.ToolChoiceTool):
        return {"type": "function", "function": {"name": choice.name}}, parallel
    return {"auto": "auto", "any": "required", "none": "none"}[choice.type], parallel


def to_chat(req: a.MessagesRequest) -> dict[str, Any]:
    """The OpenAI chat request that asks what `req` asks."""
    messages: list[dict[str, Any]] = []
    if req.system:
        messages.append({"role": "system",
                         "content": req.system if isinstance(req.system, str) else _parts(req.system)})
    for message in req.messages:
        messages += _turn(message)
    chat: dict[str, Any] = {"model": req.model, "messages": messages, "max_tokens": req.max_tokens}
    if req.stream:
        chat |= {"stream": True, "stream_options": {"include_usage": True}}
    for name in ("temperature", "top_p", "top_k"):
        if (value := getattr(req, name)) is not None:
            chat[name] = value
    if req.stop_sequences:
        chat["stop"] = req.stop_sequences
    if req.tools:
        chat["tools"] = [{"type": "function", "function": {
            "name": t.name, "parameters": t.input_schema, **({"description": t.description} if t.description else {})}}
            for t in req.tools]
    if req.tool_choice is not None and req.tools:
        chat["tool_choice"], parallel = _tool_choice(req.tool_choice)
        if not parallel:
            chat["parallel_tool_calls"] = False
    if req.metadata is not None and req.metadata.user_id:
        chat["user"] = req.metadata.user_id
    return chat


# -- response: OpenAI chat -> Anthropic -------------------------------------------------------------
def cut_at_stop(text: str, stops: list[str]) -> tuple[str, str | None]:
    """`text` up to the first stop sequence in it, and that sequence (None: none is in it). Of two
    that begin at the same place, the longer."""
    best: tuple[int, str] | None = None
    for stop in stops:
        at = text.find(stop)
        if at >= 0 and (best is None or at < best[0] or (at == best[0] and len(stop) > len(best[1]))):
            best = (at, stop)
    return (text, None) if best is None else (text[:best[0]], best[1])


def stop_of(finish: str | None, text: str, stops: list[str]) -> tuple[str, str | None, str]:
    """(stop_reason, stop_sequence, text less the stop sequence) at the end of the answer."""
    if finish in ("stop", "length"):
        for stop in sorted(stops, key=len, reverse=True):  # of two that end it, the longer began first
            if text.endswith(stop):
                return "stop_sequence", stop, text[: len(text) - len(stop)]
    return STOP_REASONS.get(finish or "stop", "end_turn"), None, text


def tool_input(arguments: str, finish: str | None) -> dict[str, Any]:
    """A call's arguments as the tool_use `input`; a call cut off by max_tokens has `{}`."""
    try:
        value = json.loads(arguments or "{}")
    except ValueError:
        value = None
    if isinstance(value, dict):
        return value
    if finish == "length":
        return {}
    raise UpstreamError("the model made a tool call whose arguments are not a JSON object")


def usage_of(usage: Usage | None) -> a.MessageUsage:
    return a.MessageUsage(input_tokens=usage.prompt_tokens if usage else 0,
                          output_tokens=usage.completion_tokens if usage else 0)


def to_message(completion: ChatCompletion, model: str, stops: list[str], cut: bool = False) -> a.Message:
    """`cut`: the stop sequences are matched here (the model was not given them): the text ends
    before the first one, and a tool call after it is dropped."""
    choice = completion.choices[0]
    calls = choice.message.tool_calls or []
    if cut:
        text, sequence = cut_at_stop(choice.message.content or "", stops)
        reason = "stop_sequence" if sequence else STOP_REASONS.get(choice.finish_reason or "stop", "end_turn")
        calls = [] if sequence else calls
    else:
        reason, sequence, text = stop_of(choice.finish_reason, choice.message.content or "", stops)
    content: list[Any] = [a.TextContent(text=text)] if text else []
    content += [a.ToolUseContent(id=call.id, name=call.function.name,
                                 input=tool_input(call.function.arguments, choice.finish_reason))
                for call in calls]
    return a.Message(model=model, content=content, stop_reason=reason, stop_sequence=sequence,
                     usage=usage_of(completion.usage))


class Events:
    """`chat.completion.chunk`s in, Anthropic's events out (each already framed as SSE).

    `cut`: the stop sequences are matched here (the model was not given them). Text that could be
    the beginning of one is held back until the next chunk says; at a match the text ends before
    it and `done` is set (the caller stops reading the model's stream)."""

    def __init__(self, model: str, stops: list[str], cut: bool = False):
        self.model = model
        self.stops = stops
        self.cut = cut and bool(stops)
        self.held = ""  # text held back: it may begin a stop sequence
        self.done = False
        self.index = -1  # of the open content block
        self.open: str | None = None  # its type
        self.calls: dict[int, int] = {}  # OpenAI tool-call index -> block index
        self.finish: str | None = None
        self.sequence: str | None = None
        self.usage: Usage | None = None

    def start(self) -> bytes:
        empty = a.Message(model=self.model, content=[], stop_reason=None, usage=usage_of(None))
        return a.sse(a.MessageStart(message=empty))

    def feed(self, chunk: ChatCompletionChunk) -> list[bytes]:
        out: list[bytes] = []
        self.usage = chunk.usage or self.usage
        for choice in chunk.choices[:1]:
            text = choice.delta.content or ""
            if self.cut:
                text = self._before_stop(text, final=bool(choice.finish_reason or choice.delta.tool_calls))
                if self.done:
                    self.finish = "stop"
                    return out + (self._text(text) if text else [])
                if choice.finish_reason:
                    self.finish = choice.finish_reason
            elif choice.finish_reason:
                self.finish = choice.finish_reason
                _, self.sequence, text = stop_of(choice.finish_reason, text, self.stops)
            if text:
                out += self._text(text)
            for call in choice.delta.tool_calls or ():
                if call.index not in self.calls:
                    out += self._begin(a.ToolUseContent(id=call.id or f"toolu_{uuid.uuid4().hex[:24]}",
                                                        name=call.function.name or "", input={}))
                    self.calls[call.index] = self.index
                if call.function.arguments:
                    delta = a.InputJsonDelta(partial_json=call.function.arguments)
                    out.append(a.sse(a.ContentBlockDelta(index=self.calls[call.index], delta=delta)))
        return out

    def _text(self, text: str) -> list[bytes]:
        out = self._begin(a.TextContent(text="")) if self.open != "text" else []
        return [*out, a.sse(a.ContentBlockDelta(index=self.index, delta=a.TextDelta(text=text)))]

    def _before_stop(self, text: str, final: bool) -> str:
        """Of the held text and `text`, what can be sent now; `done` once a stop sequence is in it."""
        pending = self.held + text
        before, self.sequence = cut_at_stop(pending, self.stops)
        if self.sequence is not None:
            self.held, self.done = "", True
            return before
        keep = 0 if final else min(len(pending), max(map(len, self.stops)) - 1)
        self.held = pending[len(pending) - keep:] if keep else ""
        return pending[:len(pending) - keep]

    def end(self) -> list[bytes]:
        reason = "stop_sequence" if self.sequence else STOP_REASONS.get(self.finish or "stop", "end_turn")
        stop = a.StopInfo(stop_reason=reason, stop_sequence=self.sequence)
        return [*self._close(), a.sse(a.MessageDelta(delta=stop, usage=usage_of(self.usage))),
                a.sse(a.MessageStop())]

    def _begin(self, block: a.TextContent | a.ToolUseContent) -> list[bytes]:
        out = self._close()
        self.index += 1
        self.open = block.type
        return [*out, a.sse(a.ContentBlockStart(index=self.index, content_block=block))]

    def _close(self) -> list[bytes]:
        if self.open is None:
            return []
        self.open = None
        return [a.sse(a.ContentBlockStop(index=self.index))]


def whole_as_events(message: a.Message) -> list[bytes]:
    """A whole answer as the events of a stream (for a deployment that did not stream)."""
    start = message.model_copy(update={"content": [], "stop_reason": None, "stop_sequence": None,
                                       "usage": usage_of(None)})
    out = [a.sse(a.MessageStart(message=start))]
    for i, block in enumerate(message.content):
        if isinstance(block, a.TextContent):
            empty, delta = a.TextContent(text=""), a.TextDelta(text=block.text)
        else:
            empty, delta = block.model_copy(update={"input": {}}), a.InputJsonDelta(partial_json=json.dumps(block.input))
        out += [a.sse(a.ContentBlockStart(index=i, content_block=empty)),
                a.sse(a.ContentBlockDelta(index=i, delta=delta)), a.sse(a.ContentBlockStop(index=i))]
    stop = a.StopInfo(stop_reason=message.stop_reason or "end_turn", stop_sequence=message.stop_sequence)
    return [*out, a.sse(a.MessageDelta(delta=stop, usage=message.usage)), a.sse(a.MessageStop())]
