"""Tool calls: how `tools` reach the prompt, the grammar a call must follow, and reading calls back.

One tool-call syntax, the one of the ChatML family (Hermes, Qwen2.5 and the templates derived
from them): each call is a JSON object in `<tool_call>` tags, compact, `name` first,

    <tool_call>
    {"name":"get_weather","arguments":{"city":"Paris"}}
    </tool_call>

several calls one right after the other (`</tool_call><tool_call>`, no separator: after a
closing tag a newline would invite a small model to open call after call, while the end token
competes well with `<`), and nothing after the last one.

**Prompt.** A chat template that handles tools itself (it reads the `tools` variable and writes
`<tool_call>`) gets `tools` and the messages as they are. Any other template, SmolLM2's included,
gets plain messages: the tool list goes into the system message as `DEFAULT_TOOLS_BLOCK` (added
to the request's own system message, or as a new first one), an assistant turn's `tool_calls`
are written into its content in the syntax above, and a `tool` message becomes a user turn
`<tool_response>\\n...\\n</tool_response>`.

**Grammar** (`call_grammar`): `required` and a named function allow only calls; `auto` allows free
text, and once the text reaches `<tool_call>` the rest must be calls (the trigger is a lazy
lexeme, so the text before a call never contains it); `parallel_tool_calls: false` allows one
call. The arguments are constrained to the declared tool's `parameters` schema.

With a `response_format` beside `auto`, the answer is either calls or entirely in the response
format (`@response`, the response format's own grammar): it cannot start with free text, and
its calls, if any, open it - so the parser reads calls only at the very start (`calls_first`),
and a JSON answer that happens to contain `<tool_call>` in a string stays content.

**Reading back** (`ToolCallParser`): the same incremental parser serves streamed and whole
answers, so a stream's `content` and argument fragments, concatenated, equal the whole answer's.
Text that could still be the start of `<tool_call>` is held back, so no markup reaches `content`.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass, field
from typing import Any

TRIGGER = "<tool_call>"
CALL_END = "\n</tool_call>"
_ARGS_END = "}" + CALL_END  # the call object's closing brace, then the closing tag
_HEAD = re.compile(r'\n\{"name":"([A-Za-z0-9_.\-]{1,64})","arguments":')

DEFAULT_TOOLS_BLOCK = """# Tools

You can call functions to help answer the user. Their signatures, one JSON object per line:
<tools>
{tools}
</tools>

To call a function, reply with its name and arguments as one JSON object inside <tool_call></tool_call> tags:
<tool_call>
{{"name": <function name>, "arguments": <JSON object of the arguments>}}
</tool_call>
Several calls may follow one another. Results come back inside <tool_response></tool_response> tags."""


def call_id() -> str:
    return f"call_{uuid.uuid4().hex[:24]}"


def template_supports_tools(template: str) -> bool:
    """A template that renders `tools` itself and uses the `<tool_call>` syntax."""
    return re.search(r"\btools\b", template) is not None and TRIGGER in template


def _tool_dict(tool) -> dict[str, Any]:
    return tool.model_dump(exclude_none=True, by_alias=True)


def tools_block(tools) -> str:
    lines = "\n".join(json.dumps(_tool_dict(t), ensure_ascii=False) for t in tools)
    return DEFAULT_TOOLS_BLOCK.format(tools=lines)


def format_call(name: str, arguments: str) -> str:
    """One call in the tool-call syntax (`arguments` is JSON text)."""
    return f'{TRIGGER}\n{{"name":{json.dumps(name)},"arguments":{arguments.strip() or "{}"}}}{CALL_END}'


def plain_messages(messages, tools) -> list[dict[str, Any]]:
    """Messages for a template without tool support (see the module docstring)."""
    out: list[dict[str, Any]] = []
    for m in messages:
        d = m.model_dump(exclude_none=True)
        d["content"] = m.text()
        if m.role == "assistant" and m.tool_calls:
            calls = "".join(format_call(c.function.name, c.function.arguments) for c in m.tool_calls)
            d["content"] = f"{d['content']}\n{calls}" if d["content"] else calls
            d.pop("tool_calls")
        elif m.role == "tool":
            d = {"role": "user", "content": f"<tool_response>\n{d['content']}\n</tool_response>"}
        out.append(d)
    if tools:
        block = tools_block(tools)
        if out and out[0]["role"] == "system":
            out[0] = {**out[0], "content": f"{out[0]['content']}\n\n{block}"}
        else:
            out.insert(0, {"role": "system", "content": block})
    return out


def call_schema(tools) -> dict[str, Any]:
    """JSON schema of one call: `{"name": <a declared tool>, "arguments": <its parameters>}`."""
    options = [
        {
            "type": "object",
            "properties": {
                "name": {"const": t.function.name},
                "arguments": t.function.parameters if t.function.parameters is not None else {"type": "object"},
            },
            "required": ["name", "arguments"],
            "additionalProperties": False,
        }
        for t in tools
    ]
    return options[0] if len(options) == 1 else {"anyOf": options}


def call_grammar(
    call_schema_compact: dict[str, Any], *, free_text: bool, parallel: bool, response: str | None = None
) -> str:
    """The Lark grammar of an answer made of calls, or else (`free_text`) free text that may end
    in calls, or else (`response`) the grammar `@<response>` - an answer either opens with
    calls or is entirely in the response format."""
    trigger = json.dumps(TRIGGER)
    more = f" ({trigger} call)*" if parallel else ""
    if response is not None:
        start = f"@{response} | {trigger} call{more}"
    elif free_text:
        start = f"TEXT | lead call{more}"
    else:
        start = f"{trigger} call{more}"
    lines = [
        "%llguidance {}",
        f"start: {start}",
        f"call: \"\\n\" body {json.dumps(CALL_END)}",
        f"body: %json {json.dumps(call_schema_compact)}",
    ]
    if free_text and response is None:
        lines += [f"lead[lazy]: TEXT {trigger}", r"TEXT: /(.|\n)*/"]
    return "\n".join(lines) + "\n"


# -- reading calls back ------------------------------------------------------------------------
@dataclass
class CallStart:
    index: int
    id: str
    name: str


@dataclass
class ArgsDelta:
    index: int
    text: str


@dataclass
class ParsedCall:
    id: str
    name: str
    arguments: str = ""


@dataclass
class Parsed:
    content: str = ""
    calls: list[ParsedCall] = field(default_factory=list)


def _held_prefix(buf: str, marker: str) -> int:
    """Length of the longest suffix of `buf` that is a proper prefix of `marker`."""
    for k in range(min(len(marker) - 1, len(buf)), 0, -1):
        if buf.endswith(marker[:k]):
            return k
    return 0


class ToolCallParser:
    """Split generated text into content and tool calls, incrementally.

    `feed(text)` and `finish()` return a list of events: `str` (content), `CallStart`,
    `ArgsDelta`. `parsed` accumulates the same events into a whole answer.
    """

    def __init__(self, *, calls_first: bool = False):
        # calls_first: calls can only open the answer (a response format beside tools); once
        # the text starts otherwise, all of it is content, whatever it holds.
        # states: start | content (calls_first only), text | head | args | between
        self._state = "start" if calls_first else "text"
        self._buf = ""
        self._index = -1
        self.parsed = Parsed()

    def _emit(self, events: list, ev) -> None:
        if isinstance(ev, str):
            if not ev:
                return
            self.parsed.content += ev
        elif isinstance(ev, CallStart):
            self.parsed.calls.append(ParsedCall(ev.id, ev.name))
        else:
            if not ev.text:
                return
            self.parsed.calls[ev.index].arguments += ev.text
        events.append(ev)

    def feed(self, text: str) -> list:
        events: list = []
        self._buf += text
        while True:
            buf = self._buf
            if self._state == "start":
                if buf.startswith(TRIGGER):
                    self._state = "text"
                    continue
                if TRIGGER.startswith(buf):
                    return events  # could still open a call
                self._state = "content"
            if self._state == "content":
                self._emit(events, buf)
                self._buf = ""
                return events
            if self._state in ("text", "between"):
                i = buf.find(TRIGGER)
                if i < 0:
                    keep = _held_prefix(buf, TRIGGER)
                    if self._state == "text":
                        self._emit(events, buf[: len(buf) - keep])
                    self._buf = buf[len(buf) - keep :]
                    return events
                if self._state == "text":
                    self._emit(events, buf[:i])
                self._buf = buf[i + len(TRIGGER) :]
                self._state = "head"
            elif self._state == "head":
                m = _HEAD.match(buf)
                if m is None:
                    return events
                self._index += 1
                self._emit(events, CallStart(self._index, call_id(), m.group(1)))
                self._buf = buf[m.end() :]
                self._state = "args"
            else:  # args
                i = buf.find(_ARGS_END)
                if i < 0:
                    keep = _held_prefix(buf, _ARGS_END)
                    self._emit(events, ArgsDelta(self._index, buf[: len(buf) - keep]))
                    self._buf = buf[len(buf) - keep :]
                    return events
                self._emit(events, ArgsDelta(self._index, buf[:i]))
                self._buf = buf[i + len(_ARGS_END) :]
                self._state = "between"

    def finish(self) -> list:
        """The end of the output: text held back was not markup after all (or a cut-off call)."""
        events: list = []
        held, self._buf = self._buf, ""
        if self._state in ("text", "start", "content"):
            self._emit(events, held)
        elif self._state == "args":
            self._emit(events, ArgsDelta(self._index, held))
        return events


def parse(text: str, *, calls_first: bool = False) -> Parsed:
    p = ToolCallParser(calls_first=calls_first)
    p.feed(text)
    p.finish()
    return p.parsed
