"""Uploaded files to text: plain text, Markdown, PDF (pypdf) and CSV (the stdlib csv module).

    parse_file(filename, content) -> list[Piece]

The format comes from the file name's extension (`.txt`, `.text`, `.md`, `.markdown`, `.pdf`,
`.csv`). Text and Markdown give one piece (Markdown is kept as written: its markup is words to
search too); a PDF gives one piece per page with `data.page`; a CSV gives one piece per row whose
`data` holds the row's columns (all strings) and whose text is `column: value` lines, so that every
column is searchable. Each piece is chunked afterwards (`trestle.endpoints.retrieval.chunking`); CSV
rows are never split.

Bad input is a `BadRequest` naming the file: an unknown extension, text that is not UTF-8, a PDF
pypdf cannot read, a CSV without a header row or with more than `MAX_CSV_COLUMNS` columns.
Parsing is CPU work: callers run it off the event loop (`trestle.endpoints.retrieval.ingest` does).
"""

from __future__ import annotations

import csv
import io
import logging
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

from trestle.errors import BadRequest

FORMATS = {
    ".txt": "text", ".text": "text", ".md": "markdown", ".markdown": "markdown",
    ".pdf": "pdf", ".csv": "csv",
}
MAX_CSV_COLUMNS = 256
MAX_CSV_FIELD = 1_000_000  # characters in one CSV field
MAX_PDF_PAGES = 2_000


@dataclass(frozen=True)
class Piece:
    """A unit of a document before chunking: its text, and the `data` fields its chunks inherit."""

    text: str
    data: dict[str, Any] = field(default_factory=dict)
    splittable: bool = True  # False: one chunk whatever its length (a CSV row)


def file_format(filename: str) -> str:
    suffix = PurePosixPath(filename).suffix.lower()
    if suffix not in FORMATS:
        raise BadRequest(
            f"{filename}: unsupported file type {suffix or '(none)'!r}; upload "
            + ", ".join(sorted(FORMATS)),
            param="files",
        )
    return FORMATS[suffix]


def parse_file(filename: str, content: bytes) -> list[Piece]:
    kind = file_format(filename)
    if kind == "pdf":
        return _pdf(filename, content)
    text = _decode(filename, content)
    if kind == "csv":
        return _csv(filename, text)
    return [Piece(text)] if text.strip() else []


def _decode(filename: str, content: bytes) -> str:
    try:
        text = content.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise BadRequest(
            f"{filename}: not UTF-8 text (byte {exc.start} is invalid)", param="files"
        ) from None
    return text.replace("\x00", "")


def _pdf(filename: str, content: bytes) -> list[Piece]:
    from pypdf import PdfReader
    from pypdf.errors import PyPdfError

    logging.getLogger("pypdf").setLevel(logging.ERROR)  # it warns about every odd object
    try:
        reader = PdfReader(io.BytesIO(content), strict=False)
        if reader.is_encrypted:
            raise BadRequest(f"{filename}: the PDF is encrypted", param="files")
        if len(reader.pages) > MAX_PDF_PAGES:
            raise BadRequest(
                f"{filename}: more than {MAX_PDF_PAGES} pages", param="files"
            )
        pieces = []
        for number, page in enumerate(reader.pages, start=1):
            text = (page.extract_text() or "").replace("\x00", "")
            if text.strip():
                pieces.append(Piece(text, {"page": number}))
    except BadRequest:
        raise
    except (PyPdfError, ValueError, KeyError, TypeError, AttributeError, IndexError) as exc:
        raise BadRequest(f"{filename}: not a readable PDF ({type(exc).__name__})",
                         param="files") from None
    return pieces


def _csv(filename: str, text: str) -> list[Piece]:
    csv.field_size_limit(MAX_CSV_FIELD)
    try:
        dialect = csv.Sniffer().sniff(text[:4096], delimiters=",;\t|")
    except csv.Error:
        dialect = csv.excel
    reader = csv.reader(io.StringIO(text), dialect)
    try:
        header = next(reader, None)
        if not header or not any(h.strip() for h in header):
            raise BadRequest(f"{filename}: the CSV has no header row", param="files")
        if len(header) > MAX_CSV_COLUMNS:
            raise BadRequest(f"{filename}: more than {MAX_CSV_COLUMNS} columns", param="files")
        columns = [h.strip() or f"column_{i + 1}" for i, h in enumerate(header)]
        pieces = []
        for row in reader:
            if not any(cell.strip() for cell in row):
                continue
            data = {col: cell for col, cell in zip(columns, row, strict=False)}
            line = "\n".join(f"{col}: {value}" for col, value in data.items() if value.strip())
            pieces.append(Piece(line, data, splittable=False))
    except csv.Error as exc:
        raise BadRequest(f"{filename}: not a readable CSV ({exc})", param="files") from None
    return pieces
