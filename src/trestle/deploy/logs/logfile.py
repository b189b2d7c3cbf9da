"""A deployment's log file: written with rotation by size, read by tail or byte range.

`RotatingLog` appends the workers' output (the local backend pumps their stdout/stderr into it)
and, when the file would pass `max_bytes`, renames it to `worker.log.1` (`.1` to `.2`, ... up to
`backups` old files; the oldest is dropped) and starts a new one. Other writers (trestle's own
lines about the deployment, a virtualenv build) append to whatever `worker.log` is then.

`tail` and `read_range` never read more than they return (plus one block): `tail` reads blocks
backwards from the end until it has the lines asked for or `max_bytes`, so a 150 MB log costs
no more memory to serve than a small one.
"""

from __future__ import annotations

import os
from pathlib import Path

BLOCK = 64 * 1024
DEFAULT_MAX_BYTES = 64 * 1024 * 1024
DEFAULT_BACKUPS = 3
TAIL_MAX_BYTES = 8 * 1024 * 1024


class RotatingLog:
    def __init__(self, path: Path, max_bytes: int = DEFAULT_MAX_BYTES, backups: int = DEFAULT_BACKUPS):
        self.path = Path(path)
        self.max_bytes = max_bytes
        self.backups = backups
        self._fd: int | None = None

    def write(self, data: bytes) -> None:
        if self._fd is None:
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        size = os.fstat(self._fd).st_size
        if size and size + len(data) > self.max_bytes:
            self._rotate()
        os.write(self._fd, data)

    def _rotate(self) -> None:
        self.close()
        if self.backups > 0:
            for i in range(self.backups - 1, 0, -1):
                older = self.path.with_name(f"{self.path.name}.{i}")
                if older.exists():
                    older.replace(self.path.with_name(f"{self.path.name}.{i + 1}"))
            self.path.replace(self.path.with_name(f"{self.path.name}.1"))
        else:
            self.path.unlink(missing_ok=True)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def tail(path: Path, lines: int, max_bytes: int = TAIL_MAX_BYTES) -> bytes:
    """The last `lines` lines of `path` (at most the last `max_bytes` bytes of it)."""
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        return b""
    with f:
        end = f.seek(0, os.SEEK_END)
        start = end
        chunks: list[bytes] = []
        newlines = 0
        # One more newline than lines asked for: the line before the first one we keep ends there.
        while start > 0 and newlines <= lines and end - start < max_bytes:
            step = min(BLOCK, start, max_bytes - (end - start))
            start -= step
            f.seek(start)
            chunk = f.read(step)
            chunks.append(chunk)
            newlines += chunk.count(b"\n")
    data = b"".join(reversed(chunks))
    body = data[:-1] if data.endswith(b"\n") else data
    kept = body.split(b"\n")[-lines:] if lines > 0 else []
    text = b"\n".join(kept)
    return text + b"\n" if kept and data.endswith(b"\n") else text


def read_range(path: Path, offset: int, limit: int) -> bytes:
    """At most `limit` bytes of `path` from byte `offset` (empty past its end)."""
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        return b""
    with f:
        f.seek(offset)
        return f.read(limit)
