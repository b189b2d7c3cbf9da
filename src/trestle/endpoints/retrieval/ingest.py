"""Uploads into a dataset: parse → chunk → embed → store, all files or none.

    documents = await ingest(datasets, index, embedder, dataset, files, ChunkingOptions())

Parsing and chunking run in a thread (PDF extraction is CPU work), embedding in the embeddings
worker (`trestle.endpoints.retrieval.embedder`), storing in one transaction
(`DatasetStore.add_documents`). Anything that fails — a file that does not parse, the worker, the
database — fails the whole upload and nothing of it is stored.

Limits (`PayloadTooLarge` naming the limit, else `BadRequest` naming the file): `MAX_FILES`
files, `MAX_FILE_BYTES` each, `MAX_UPLOAD_BYTES` in all, `MAX_CHUNKS` chunks, metadata a JSON
object of at most `MAX_METADATA_BYTES`. Each document's metadata gets a `url` unless it has one:
`/{document_id}/{file name}`.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from trestle.endpoints.retrieval.chunking import ChunkingOptions, chunk_text
from trestle.endpoints.retrieval.embedder import Embedder, Progress
from trestle.endpoints.retrieval.parsing import Piece, file_format, parse_file
from trestle.endpoints.retrieval.search import SearchIndex
from trestle.errors import BadRequest, PayloadTooLarge
from trestle.store.datasets import DatasetStore, NewChunk, NewDocument
from trestle.store.records import Dataset, Document

MAX_FILES = 100
MAX_FILE_BYTES = 20 * 1024 * 1024
MAX_UPLOAD_BYTES = 100 * 1024 * 1024
MAX_CHUNKS = 50_000
MAX_METADATA_BYTES = 16 * 1024


@dataclass(frozen=True)
class UploadedFile:
    name: str
    content: bytes = field(repr=False)
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass
class _Parsed:
    file: UploadedFile
    id: str
    chunks: list[NewChunk]


def check_files(files: list[UploadedFile]) -> None:
    if not files:
        raise BadRequest("no files to upload", param="files")
    if len(files) > MAX_FILES:
        raise PayloadTooLarge(f"at most {MAX_FILES} files per upload", param="files")
    total = 0
    for f in files:
        if not isinstance(f.name, str) or not f.name.strip() or len(f.name) > 255:
            raise BadRequest("every file needs a name of 1-255 characters", param="files")
        file_format(f.name)
        if len(f.content) > MAX_FILE_BYTES:
            raise PayloadTooLarge(
                f"{f.name}: larger than the {MAX_FILE_BYTES // (1024 * 1024)} MiB limit per file",
                param="files",
            )
        total += len(f.content)
        check_metadata(f.name, f.metadata)
    if total > MAX_UPLOAD_BYTES:
        raise PayloadTooLarge(
            f"the upload is larger than the {MAX_UPLOAD_BYTES // (1024 * 1024)} MiB limit",
            param="files",
        )


def check_metadata(what: str, metadata: Any) -> None:
    """A document's metadata: a JSON object of at most MAX_METADATA_BYTES, `url` a string."""
    if not isinstance(metadata, dict):
        raise BadRequest(f"{what}: metadata must be a JSON object", param="metadata")
    try:
        encoded = json.dumps(metadata, allow_nan=False)
    except (TypeError, ValueError, RecursionError) as exc:
        raise BadRequest(f"{what}: metadata is not JSON ({exc})", param="metadata") from None
    if len(encoded) > MAX_METADATA_BYTES:
        raise PayloadTooLarge(
            f"{what}: metadata larger than {MAX_METADATA_BYTES} bytes", param="metadata"
        )
    if "url" in metadata and not isinstance(metadata["url"], str):
        raise BadRequest(f"{what}: metadata.url must be a string", param="metadata.url")


def chunks_of(pieces: list[Piece], options: ChunkingOptions) -> list[NewChunk]:
    chunks = []
    for piece in pieces:
        texts = chunk_text(piece.text, options) if piece.splittable else [piece.text.strip()]
        for text in texts:
            if text:
                chunks.append(NewChunk(text=text, data={"text": text, **piece.data}, embedding=text))
    return chunks


def _parse_all(files: list[UploadedFile], options: ChunkingOptions) -> list[_Parsed]:
    parsed, total = [], 0
    for f in files:
        chunks = chunks_of(parse_file(f.name, f.content), options)
        total += len(chunks)
        if total > MAX_CHUNKS:
            raise PayloadTooLarge(f"the upload makes more than {MAX_CHUNKS} chunks", param="files")
        parsed.append(_Parsed(f, str(uuid.uuid4()), chunks))
    return parsed


async def ingest(
    datasets: DatasetStore, index: SearchIndex, embedder: Embedder, dataset: Dataset,
    files: list[UploadedFile], options: ChunkingOptions | None = None,
    progress: Progress | None = None,
) -> list[Document]:
    check_files(files)
    options = options or ChunkingOptions()
    parsed = await asyncio.to_thread(_parse_all, files, options)
    texts = [c.embedding for p in parsed for c in p.chunks]
    vectors = await embedder.embed(texts, progress) if texts else np.zeros(
        (0, dataset.dimensions), np.float32
    )
    documents, start = [], 0
    for p in parsed:
        metadata = {**p.file.metadata}
        metadata.setdefault("url", f"/{p.id}/{p.file.name}")
        end = start + len(p.chunks)
        documents.append(NewDocument(p.file.name, metadata, p.chunks, vectors[start:end], id=p.id))
        start = end
    added, change = await datasets.add_documents(dataset.id, documents, index=index.writer)
    index.apply(dataset.id, change)
    return added
