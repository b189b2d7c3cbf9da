"""Tracebacks of user code, trimmed to the user's own frames.

When the model raises, the log should show where in *their* code it went wrong, not twenty
frames of trestle, starlette and asyncio around it. `user_traceback` drops every frame above the
first one whose file lies under the model folder (its `model/` and `packages/` dirs), keeping the
user's frames and whatever they called into (a library raising deep inside still shows where).
A traceback with no user frame at all is kept whole.
"""

from __future__ import annotations

import traceback
from collections.abc import Iterable
from pathlib import Path


def _under(filename: str, roots: tuple[str, ...]) -> bool:
    return filename.startswith(roots)


def _trim(te: traceback.TracebackException, roots: tuple[str, ...], seen: set[int]) -> None:
    if id(te) in seen:
        return
    seen.add(id(te))
    frames = list(te.stack)
    first_user = next((i for i, f in enumerate(frames) if _under(f.filename, roots)), None)
    if first_user is not None:
        # From the first user frame on: user frames and whatever they called into.
        te.stack = traceback.StackSummary.from_list(frames[first_user:])
    for chained in (te.__cause__, te.__context__):
        if chained is not None:
            _trim(chained, roots, seen)


def user_traceback(exc: BaseException, roots: Iterable[Path]) -> str:
    """The formatted traceback of `exc`, starting at the first frame under `roots`."""
    prefixes = tuple(str(Path(r).resolve()) + "/" for r in roots)
    te = traceback.TracebackException.from_exception(exc)
    _trim(te, prefixes, set())
    return "".join(te.format()).rstrip()
