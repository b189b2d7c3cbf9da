"""Text to chunks of at most `size` characters, consecutive chunks sharing about `overlap`
characters, never splitting a word.

    chunk_text(text, ChunkingOptions(size=1000, overlap=200)) -> list[str]

Words are runs of non-whitespace. A chunk is built from whole words up to `size` characters
(words joined by one space: runs of spaces and line breaks inside a chunk become one space; a
blank line — a paragraph break — is kept as a line break). The next chunk starts with as many of
the previous chunk's last words as fit in `overlap` characters. A single word longer than `size`
becomes a chunk of its own, whole (words are never cut).
"""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, Field, model_validator

_TOKEN = re.compile(r"\n\s*\n|\S+")
PARAGRAPH = "\n"


class ChunkingOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    size: int = Field(default=1000, ge=50, le=20_000)  # characters per chunk, at most
    overlap: int = Field(default=200, ge=0)  # characters shared with the previous chunk

    @model_validator(mode="after")
    def _overlap_below_size(self) -> ChunkingOptions:
        if self.overlap >= self.size:
            raise ValueError("overlap must be smaller than size")
        return self


def _words(text: str) -> list[str]:
    words: list[str] = []
    for match in _TOKEN.finditer(text):
        token = match.group()
        if token.strip():
            words.append(token)
        elif words and words[-1] != PARAGRAPH:
            words.append(PARAGRAPH)
    while words and words[-1] == PARAGRAPH:
        words.pop()
    return words


def _join(words: list[str]) -> str:
    out: list[str] = []
    for word in words:
        if word == PARAGRAPH:
            out.append("\n")
        else:
            if out and out[-1] != "\n":
                out.append(" ")
            out.append(word)
    return "".join(out).strip()


def _length(words: list[str]) -> int:
    return sum(len(w) for w in words) + max(len(words) - 1, 0)


def chunk_text(text: str, options: ChunkingOptions | None = None) -> list[str]:
    options = options or ChunkingOptions()
    words = _words(text)
    chunks: list[str] = []
    start = 0
    while start < len(words):
        end, length = start, -1
        while end < len(words) and (end == start or length + 1 + len(words[end]) <= options.size):
            length += 1 + len(words[end])
            end += 1
        chunk = _join(words[start:end])
        if chunk:
            chunks.append(chunk)
        if end >= len(words):
            break
        # Step back over as many trailing words as fit in `overlap`, but always move forward.
        back, shared = end, 0
        while back - 1 > start and shared + len(words[back - 1]) + 1 <= options.overlap:
            back -= 1
            shared += len(words[back]) + 1
        while back < end and words[back] == PARAGRAPH:
            back += 1
        start = back
    return chunks
