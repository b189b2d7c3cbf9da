"""The streaming client of the prompt-endpoint docs' Next.js example, ported line for line.

`nextjs_text(chunks)` is what that example's route handler (`/api/completions/chat/route.ts`)
enqueues into its `ReadableStream`, given the chunks of the upstream body as `fetch` yields them:
`eventsource-parser`'s `createParser` (v1) fed with each chunk decoded on its own, and the
example's `onParse`:

    if (event.type === "event") {
      const data = event.data;
      if (data === "[DONE]") { controller.close(); return; }
      try {
        const json = JSON.parse(data);
        const text = json.choices[0].delta?.content || json.choices[0].text || "";
        controller.enqueue(encoder.encode(text));
      } catch (e) { controller.error(e); }
    }

An exception thrown out of `onParse` ends `start`, whose rejection errors the stream (a no-op
once it is closed). The `ReadableStreamDefaultController` behaves as the WHATWG Streams standard says: `enqueue`
or `close` on a closed stream throws a TypeError; `error` on a stream that is not readable does
nothing; `error` on a readable one errors it (the reader then fails, as `StreamErrored` here).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import Any

BOM = "\ufeff"


class StreamErrored(Exception):
    """The example's stream was errored by `controller.error(e)`: its reader fails."""


class Controller:
    def __init__(self) -> None:
        self.state = "readable"
        self.queue: list[bytes] = []
        self.stored_error: Any = None

    def enqueue(self, chunk: bytes) -> None:
        if self.state != "readable":
            raise TypeError("Invalid state: Controller is already closed")
        self.queue.append(chunk)

    def close(self) -> None:
        if self.state != "readable":
            raise TypeError("Invalid state: Controller is already closed")
        self.state = "closed"

    def error(self, e: Any) -> None:
        if self.state != "readable":
            return
        self.state = "errored"
        self.stored_error = e


class JSError(Exception):
    """What JavaScript would throw: JSON.parse's SyntaxError, a TypeError reading `undefined`."""


def js_get(value: Any, key: Any) -> Any:
    """`value[key]` in JavaScript: a TypeError on undefined/null, undefined (None) when absent."""
    if value is None:
        raise JSError(f"TypeError: Cannot read properties of undefined (reading '{key}')")
    if isinstance(value, list):
        return value[key] if isinstance(key, int) and 0 <= key < len(value) else None
    if isinstance(value, dict):
        return value.get(key)
    return None


def js_optional(value: Any, key: str) -> Any:
    """`value?.[key]`."""
    return None if value is None else js_get(value, key)


def js_or(*values: Any) -> Any:
    """`a || b || c`: the first truthy value (JavaScript truthiness), else the last."""
    for value in values[:-1]:
        if value not in (None, "", 0, False) and value == value:
            return value
    return values[-1]


def create_parser(on_parse: Callable[[dict[str, Any]], None]):
    """eventsource-parser 1.x's `createParser`, line for line."""
    state: dict[str, Any] = {}

    def reset() -> None:
        state.update(is_first_chunk=True, buffer="", starting_position=0, starting_field_length=-1,
                     event_id=None, event_name=None, data="")

    def feed(chunk: str) -> None:
        state["buffer"] = state["buffer"] + chunk if state["buffer"] else chunk
        if state["is_first_chunk"] and state["buffer"].startswith(BOM):
            state["buffer"] = state["buffer"][len(BOM):]
        state["is_first_chunk"] = False
        buffer = state["buffer"]
        length = len(buffer)
        position = 0
        discard_trailing_newline = False
        while position < length:
            if discard_trailing_newline:
                if buffer[position] == "\n":
                    position += 1
                discard_trailing_newline = False
            line_length = -1
            field_length = state["starting_field_length"]
            index = state["starting_position"]
            while line_length < 0 and index < length:
                character = buffer[index]
                if character == ":" and field_length < 0:
                    field_length = index - position
                elif character == "\r":
                    discard_trailing_newline = True
                    line_length = index - position
                elif character == "\n":
                    line_length = index - position
                index += 1
            if line_length < 0:
                state["starting_position"] = length - position
                state["starting_field_length"] = field_length
                break
            state["starting_position"] = 0
            state["starting_field_length"] = -1
            parse_event_stream_line(buffer, position, field_length, line_length)
            position += line_length + 1
        if position == length:
            state["buffer"] = ""
        elif position > 0:
            state["buffer"] = buffer[position:]

    def parse_event_stream_line(line_buffer: str, index: int, field_length: int, line_length: int) -> None:
        if line_length == 0:
            if len(state["data"]) > 0:
                on_parse({"type": "event", "id": state["event_id"], "event": state["event_name"] or None,
                          "data": state["data"][:-1]})
                state["data"] = ""
                state["event_id"] = None
            state["event_name"] = None
            return
        no_value = field_length < 0
        field = line_buffer[index:index + (line_length if no_value else field_length)]
        if no_value:
            step = line_length
        elif index + field_length + 1 < len(line_buffer) and line_buffer[index + field_length + 1] == " ":
            step = field_length + 2
        else:
            step = field_length + 1
        position = index + step
        value_length = line_length - step
        value = line_buffer[position:position + value_length]
        if field == "data":
            state["data"] += f"{value}\n" if value else "\n"
        elif field == "event":
            state["event_name"] = value
        elif field == "id" and "\u0000" not in value:
            state["event_id"] = value
        elif field == "retry":
            try:
                on_parse({"type": "reconnect-interval", "value": int(value)})
            except ValueError:
                pass

    reset()
    return feed


def nextjs_text(chunks: Iterable[bytes]) -> str:
    """The text the example's stream carries; StreamErrored if the example would fail."""
    controller = Controller()

    def on_parse(event: dict[str, Any]) -> None:
        if event["type"] == "event":
            data = event["data"]
            if data == "[DONE]":
                controller.close()
                return
            try:
                try:
                    parsed = json.loads(data)
                except ValueError as exc:
                    raise JSError(f"SyntaxError: {exc}") from None
                first = js_get(js_get(parsed, "choices"), 0)
                text = js_or(js_optional(js_get(first, "delta"), "content"), js_get(first, "text"), "")
                controller.enqueue(str(text).encode())
            except (JSError, TypeError) as e:
                controller.error(e)

    feed = create_parser(on_parse)
    try:
        for chunk in chunks:
            feed(chunk.decode("utf-8", "replace"))  # `decoder.decode(chunk)`, one chunk at a time
    except TypeError as e:  # thrown out of `start` (e.g. close() on an errored stream): it rejects,
        controller.error(e)  # which errors the stream unless it is closed already
    if controller.state == "errored":
        raise StreamErrored(controller.stored_error)
    return b"".join(controller.queue).decode("utf-8", "replace")
