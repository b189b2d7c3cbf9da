"""Limits on one chat-template render: wall-clock time, cancellation, and what it may build.

A chat template is code that any key holder can send (`chat_template`), so one render must not
starve the engine. `engine/template.py` renders inside `RenderLimits`:

- **Time.** A render ends after `RENDER_SECONDS`, or as soon as its client has left (its
  `cancel` event is set). The clock is read on every iteration of every `{% for %}` loop (the
  template's loops are compiled to iterate through `guarded_iter`) and at every call, filter
  and operator the sandbox sees, so no loop or recursion runs on; no single step runs long,
  because of:
- **Size.** Every operation that can build a value much larger than its inputs is checked
  *before* it runs: `~` and `+`, `*` (counting nested items, so `[[1] * 10**6] * 60` counts 60
  million), `%` and `str.format` (fields and widths), `center`/`ljust`/`rjust`/`zfill`/
  `expandtabs`/`replace`/`join`/`translate`, the `center`, `indent`, `format`, `replace`,
  `join`, `sum`, `wordwrap`, `batch`, `slice`, `tojson` filters, `**` and `*` on integers, and
  the buffers that macros and `{% set %}`/`{% filter %}` blocks join. One value may hold at most
  `MAX_VALUE` characters (or items); everything a render builds counts against
  `MAX_RENDER_UNITS` in all (about bytes), and `range` against `MAX_RANGE_ITEMS`.

A breach raises `TemplateLimit`; a cancelled render raises `RenderCancelled`. `render_chat`
turns both into a 400 naming `chat_template`.
"""

from __future__ import annotations

import functools
import re
import string
import threading
import time
from contextvars import ContextVar
from typing import Any, Callable, Iterable, Iterator

from jinja2.exceptions import TemplateError
from jinja2.runtime import Namespace
from jinja2.utils import _PassArg

RENDER_SECONDS = 1.0
MAX_VALUE = 1_000_000  # characters of one string, items of one list (nested items included)
MAX_BUFFER = 4_000_000  # characters a macro, `{% set %}` or `{% filter %}` block may join
MAX_RENDER_UNITS = 32_000_000  # everything one render builds together (about bytes)
MAX_RANGE_ITEMS = 1_000_000  # all `range(...)` calls of one render together
MAX_INT_BITS = 100_000  # integers built by `*` and `**`
_PIECE_COST = 56  # what a short string costs besides its characters
_TICKS = 64  # loop iterations between two readings of the clock


class TemplateLimit(TemplateError):
    """The render went past one of the limits above."""


class RenderCancelled(TemplateError):
    """The render was abandoned: its client left."""


class RenderLimits:
    """The budget of one render; `with limits:` runs the render under it (on this thread)."""

    def __init__(self, cancel: threading.Event | None = None, seconds: float = RENDER_SECONDS):
        self.cancel = cancel
        self.seconds = seconds
        self.deadline = time.monotonic() + seconds
        self.units = MAX_RENDER_UNITS
        self.range_items = MAX_RANGE_ITEMS
        self.ticks = _TICKS
        self._token = None

    def check_time(self) -> None:
        if self.cancel is not None and self.cancel.is_set():
            raise RenderCancelled("the client went away")
        if time.monotonic() > self.deadline:
            raise TemplateLimit(f"the render took longer than {self.seconds:g} s")

    def charge(self, units: int) -> None:
        self.units -= units
        if self.units < 0:
            raise TemplateLimit(f"the render built more than {MAX_RENDER_UNITS:,} bytes in all")

    def iterate(self, iterable: Iterable[Any]) -> Iterator[Any]:
        for item in iterable:
            self.ticks -= 1
            if self.ticks <= 0:
                self.ticks = _TICKS
                self.check_time()
            yield item

    def __enter__(self) -> "RenderLimits":
        self.deadline = time.monotonic() + self.seconds
        self._token = _current.set(self)
        return self

    def __exit__(self, *exc: Any) -> None:
        _current.reset(self._token)


_current: ContextVar[RenderLimits | None] = ContextVar("chat_template_limits", default=None)


def check_time() -> None:
    limits = _current.get()
    if limits is not None:
        limits.check_time()


def guarded_iter(iterable: Iterable[Any]) -> Iterable[Any]:
    """What a `{% for %}` loop iterates: `iterable`, reading the clock as it goes."""
    limits = _current.get()
    return iterable if limits is None else limits.iterate(iterable)


def build(units: int, what: str, limit: int = MAX_VALUE) -> None:
    """About to build a value of `units` characters/items with `what`: refuse it past `limit`,
    and charge it to the render."""
    if units > limit:
        raise TemplateLimit(f"{what} would build a value larger than {limit:,} characters or items")
    limits = _current.get()
    if limits is not None:
        limits.check_time()
        limits.charge(units)


def charge_result(value: Any) -> Any:
    """Charge a value some call has just built (its size was bounded by its inputs)."""
    limits = _current.get()
    if limits is not None and isinstance(value, (str, bytes, list, tuple, dict)):
        limits.charge(len(value) * (8 if isinstance(value, (list, tuple, dict)) else 1))
    return value


def take_range(n: int) -> None:
    limits = _current.get()
    if limits is not None:
        limits.range_items -= n
        if limits.range_items < 0:
            raise TemplateLimit(f"range() produced more than {MAX_RANGE_ITEMS:,} items in one render")


def weight(value: Any, limit: int = MAX_VALUE, indent: int = 0) -> int:
    """About how many characters `str(value)` (or its JSON, with `indent`) has; counting stops
    once past `limit`. Containers count every nested item, shared ones as often as they occur."""
    total = 0
    stack = [(value, 0)]
    seen = 0
    while stack:
        v, depth = stack.pop()
        if isinstance(v, (str, bytes)):
            total += len(v)
        elif isinstance(v, (list, tuple, set, frozenset, dict, Namespace)):
            if isinstance(v, Namespace):
                v = v._Namespace__attrs  # type: ignore[attr-defined]
            items = list(v.items()) if isinstance(v, dict) else v
            total += 2 + len(items) * (2 + indent * (depth + 1))
            if total > limit:
                return total
            stack.extend((item, depth + 1) for item in items)
        elif isinstance(v, int) and not isinstance(v, bool):
            total += v.bit_length() // 3 + 1
        else:
            total += 8
        seen += 1
        if total > limit:
            return total
        if seen % 65536 == 0:
            check_time()
    return total


# -- operators ---------------------------------------------------------------------------------
def checked_binop(operator: str, left: Any, right: Any) -> None:
    """Refuse `left <operator> right` when it would build too much."""
    if operator == "*":
        if isinstance(left, int) and isinstance(right, int):
            if left.bit_length() + right.bit_length() > MAX_INT_BITS:
                raise TemplateLimit(f"'*' would build an integer of more than {MAX_INT_BITS:,} bits")
            return
        for seq, count in ((left, right), (right, left)):
            if isinstance(seq, (str, bytes, list, tuple)) and isinstance(count, int) and count > 0:
                each = len(seq) if isinstance(seq, (str, bytes)) else weight(seq, MAX_VALUE // count + 1)
                build(each * count, "'*'")
    elif operator == "**":
        if isinstance(left, int) and isinstance(right, int) and right > 0:
            if max(left.bit_length(), 1) * right > MAX_INT_BITS and abs(left) > 1:
                raise TemplateLimit(f"'**' would build an integer of more than {MAX_INT_BITS:,} bits")
    elif operator == "+":
        if isinstance(left, (str, bytes)) and isinstance(right, (str, bytes)):
            build(len(left) + len(right), "'+'")
        elif isinstance(left, (list, tuple)) and isinstance(right, (list, tuple)):
            build(weight(left) + weight(right), "'+'")
    elif operator == "%" and isinstance(left, str):
        build(percent_size(left, right), "'%' formatting")


def sized_join(join: Callable[[Any], str], values: tuple) -> str:
    """`a ~ b ~ ...`: each value as text, joined, once the total is known to be small enough."""
    build(sum(weight(v) for v in values), "'~'")
    return join(values)


def sized_concat(pieces: Any) -> str:
    """The text of a buffer (a macro's output, `{% set %}` and `{% filter %}` blocks)."""
    pieces = pieces if isinstance(pieces, list) else list(pieces)
    build(sum(len(p) for p in pieces), "a block", MAX_BUFFER)
    return "".join(pieces)


def finalize(value: Any) -> Any:
    """Every `{{ ... }}` output, before it becomes text."""
    build(weight(value), "'{{ }}'")
    limits = _current.get()
    if limits is not None:
        limits.charge(_PIECE_COST)
    return value


# -- format strings ----------------------------------------------------------------------------
_PERCENT = re.compile(r"%(?:\([^)]*\))?[-#0 +]*(\*|\d+)?(?:\.(\*|\d+))?[hlL]?(.)", re.S)


def _width(text: str | None) -> int:
    if not text:
        return 0
    if text == "*" or len(text) > 7:
        raise TemplateLimit("format widths must be written out and below 10,000,000")
    return int(text)


def _largest(args: Any) -> int:
    values = args.values() if isinstance(args, dict) else args if isinstance(args, tuple) else (args,)
    return max((weight(v) for v in values), default=0)


def percent_size(fmt: str, args: Any) -> int:
    """About how long `fmt % args` is: the format, its widths, each field as long as the
    largest argument."""
    size, fields = len(fmt), 0
    for m in _PERCENT.finditer(fmt):
        if m.group(3) != "%":
            size += _width(m.group(1)) + _width(m.group(2))
            fields += 1
    return size + fields * _largest(args)


def format_size(fmt: str, args: tuple, kwargs: dict) -> int:
    """About how long `fmt.format(*args, **kwargs)` is."""
    size, fields = len(fmt), 0
    for _, field, spec, _ in string.Formatter().parse(fmt):
        if field is None:
            continue
        fields += 1
        if spec:
            if "{" in spec:
                raise TemplateLimit("nested fields in a format spec are not allowed")
            size += sum(_width(w) for w in re.findall(r"\d+", spec))
    return size + fields * max(_largest(args), _largest(kwargs))


# -- methods of str and bytes ------------------------------------------------------------------
def _pad(s: Any, width: Any = 0, *_: Any) -> int:
    return max(len(s), width if isinstance(width, int) else 0)


def _replace_size(s: Any, old: Any = "", new: Any = "", count: Any = -1, *_: Any) -> int:
    if not isinstance(old, (str, bytes)) or not isinstance(new, (str, bytes)):
        return len(s)
    n = len(s) + 1 if not old else s.count(old)
    if isinstance(count, int) and count >= 0:
        n = min(n, count)
    return len(s) + n * max(0, len(new) - len(old))


def _join_size(sep: Any, items: Any = (), *_: Any) -> int:
    items = list(items) if not isinstance(items, (list, tuple)) else items
    return weight(items) + len(sep) * len(items)


def _expandtabs_size(s: Any, tabsize: Any = 8, *_: Any) -> int:
    return len(s) + s.count("\t" if isinstance(s, str) else b"\t") * (tabsize if isinstance(tabsize, int) else 8)


def _translate_size(s: Any, table: Any = None, *_: Any) -> int:
    longest = 1
    if isinstance(table, dict):
        longest = max((len(v) for v in table.values() if isinstance(v, (str, bytes))), default=1)
    return len(s) * max(longest, 1)


_METHOD_SIZES: dict[str, Callable[..., int]] = {
    "center": _pad, "ljust": _pad, "rjust": _pad, "zfill": _pad,
    "expandtabs": _expandtabs_size, "replace": _replace_size,
    "join": _join_size, "translate": _translate_size,
}


def check_method_call(obj: Any, args: tuple, kwargs: dict) -> tuple:
    """Refuse a str/bytes method call that would build too much; returns the arguments to use
    (a generator passed to `join` is read once, here)."""
    owner = getattr(obj, "__self__", None)
    name = getattr(obj, "__name__", "")
    if isinstance(owner, (str, bytes)) and name in _METHOD_SIZES:
        if name == "join" and args and not isinstance(args[0], (list, tuple)):
            args = (list(args[0]), *args[1:])
        build(_METHOD_SIZES[name](owner, *args, *kwargs.values()), f"{name}()")
    return args


def checked_format(fmt: str, wrapper: Callable[..., str], is_map: bool) -> Callable[..., str]:
    """`str.format` / `format_map`, sized before it runs."""

    def format(*args: Any, **kwargs: Any) -> str:
        if is_map:
            build(format_size(fmt, (), args[0] if args and isinstance(args[0], dict) else {}), "format_map()")
        else:
            build(format_size(fmt, args, kwargs), "format()")
        return wrapper(*args, **kwargs)

    return format


# -- filters -----------------------------------------------------------------------------------
def _center(value: Any, width: int = 80, *_: Any, **__: Any) -> None:
    build(_pad(str(value), width), "center")


def _indent(s: Any, width: Any = 4, *_: Any, **__: Any) -> None:
    w = len(width) if isinstance(width, str) else width if isinstance(width, int) else 0
    text = str(s)
    build(len(text) + (text.count("\n") + 2) * w, "indent")


def _format(value: Any, *args: Any, **kwargs: Any) -> None:
    build(percent_size(str(value), kwargs or args), "format")


def _replace(s: Any, old: Any = "", new: Any = "", count: Any = None, *_: Any, **__: Any) -> None:
    text = str(s)
    build(_replace_size(text, str(old), str(new), -1 if count is None else count), "replace")


def _wordwrap(s: Any, width: int = 79, break_long_words: bool = True, wrapstring: Any = None,
              *_: Any, **__: Any) -> None:
    text = str(s)
    build(len(text) * (1 + len(wrapstring or "\n")), "wordwrap")


def _batch(value: Any, linecount: Any = 1, *_: Any, **__: Any) -> None:
    if isinstance(linecount, int):
        build(linecount, "batch")


def _slice(value: Any, slices: Any = 1, *_: Any, **__: Any) -> None:
    if isinstance(slices, int):
        build(slices * 8, "slice")


def _stringify(value: Any, *_: Any, **__: Any) -> None:
    build(weight(value), "converting to text")


_FILTER_SIZES: dict[str, Callable[..., None]] = {
    "center": _center, "indent": _indent, "format": _format, "replace": _replace,
    "wordwrap": _wordwrap, "batch": _batch, "slice": _slice,
    "string": _stringify, "pprint": _stringify, "urlencode": _stringify, "xmlattr": _stringify,
    "e": _stringify, "escape": _stringify, "forceescape": _stringify, "list": _stringify,
}
# no use in a chat template, and output far larger than their input
_REMOVED_FILTERS = ("urlize",)


def _checked_join(eval_ctx: Any, value: Any, d: Any = "", attribute: Any = None) -> str:
    from jinja2.filters import sync_do_join

    items = list(value)
    build(weight(items) + len(str(d)) * len(items), "join")
    return sync_do_join(eval_ctx, items, d, attribute)


def _checked_sum(environment: Any, iterable: Any, attribute: Any = None, start: Any = 0) -> Any:
    """`sum`, in linear time: lists and tuples are extended, not added pairwise."""
    from jinja2.filters import make_attrgetter

    items = list(iterable)
    if attribute is not None:
        items = list(map(make_attrgetter(environment, attribute), items))
    if not isinstance(start, (list, tuple)):
        return sum(items, start)
    build(weight(start) + sum(weight(i) for i in items), "sum")
    out = list(start)
    for item in items:
        if not isinstance(item, (list, tuple)):
            raise TypeError(f"can only add lists or tuples to a {type(start).__name__}")
        out.extend(item)
    return tuple(out) if isinstance(start, tuple) else out


_checked_join.jinja_pass_arg = _PassArg.eval_context  # type: ignore[attr-defined]
_checked_sum.jinja_pass_arg = _PassArg.environment  # type: ignore[attr-defined]


def checked_filters(filters: dict[str, Callable[..., Any]]) -> dict[str, Callable[..., Any]]:
    """Jinja's filters with the size checks above; every result is charged to the render."""
    out = {}
    for name, fn in filters.items():
        if name in _REMOVED_FILTERS:
            continue
        if name == "join":
            fn = _checked_join
        elif name == "sum":
            fn = _checked_sum
        out[name] = _guarded(fn, _FILTER_SIZES.get(name))
    return out


def _guarded(fn: Callable[..., Any], size: Callable[..., None] | None) -> Callable[..., Any]:
    skip = 1 if _PassArg.from_obj(fn) is not None else 0

    @functools.wraps(fn)
    def filter(*args: Any, **kwargs: Any) -> Any:
        if size is not None:
            size(*args[skip:], **kwargs)
        else:
            check_time()
        return charge_result(fn(*args, **kwargs))

    return filter
