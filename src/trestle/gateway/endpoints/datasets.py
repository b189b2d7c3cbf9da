"""The datasets API: `/api/datasets/...`, over the gateway's `Datastore`.

    GET    /api/datasets                                  list
    POST   /api/datasets                                  create {"name"}
    GET    /api/datasets/{dataset}                        one (with document and row counts)
    DELETE /api/datasets/{dataset}                        delete, with its documents and rows
    POST   /api/datasets/{dataset}/upload                 multipart: files, metadata, chunk_size, chunk_overlap
    POST   /api/datasets/{dataset}/search                 {"query", "top_k", "alpha", "filter"}
    GET    /api/datasets/{dataset}/rows?limit&after&document_id   rows (chunks), keyset-paged
    POST   /api/datasets/{dataset}/rows/upsert            {"rows": [{"id"?, "data", "metadata"?}]}
    GET    /api/datasets/{dataset}/documents              documents
    DELETE /api/datasets/{dataset}/documents/{document_id}

`{dataset}` is a dataset's id or name. Writes need an `admin` key; `search` an `admin` key or an
`invoke` key that is not limited to some models or endpoints (`trestle.gateway.access.auth`).

Errors (`trestle.protocol.errors.error_for`) carry the message twice: `{"message": ...,
"error": {"message", "type", "param", "code"}}` — the top-level `message` is what prompt-endpoint clients read, `error` is the
envelope of the rest of the API.

An upload's body is bounded by the gateway's body limit for this route
(`trestle.settings.DATASET_UPLOAD_BYTES`: the 100 MiB of files of
`trestle.endpoints.retrieval.ingest` and the form around them); past it, a 413 while it streams in.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, ValidationError
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from trestle.endpoints.retrieval.chunking import ChunkingOptions
from trestle.endpoints.retrieval.ingest import MAX_FILES, UploadedFile
from trestle.errors import BadRequest, PayloadTooLarge
from trestle.gateway.context import Gateway
from trestle.protocol import datasets as wire
from trestle.protocol.validation import parse_body, to_bad_request

PREFIX = "/api/datasets"

def _json(model: BaseModel, status_code: int = 200) -> JSONResponse:
    return JSONResponse(model.model_dump(mode="json"), status_code=status_code)


def _int_param(request: Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise BadRequest(f"{name} must be an integer from {low} to {high}", param=name) from None
    if not low <= value <= high:
        raise BadRequest(f"{name} must be an integer from {low} to {high}", param=name)
    return value


class DatasetRoutes:
    def __init__(self, gateway: Gateway):
        self.gateway = gateway

    async def list(self, request: Request) -> Response:
        datastore = await self.gateway.datastore()
        return _json(wire.DatasetList(data=[wire.DatasetOut.of(d) for d in await datastore.list_datasets()]))

    async def create(self, request: Request) -> Response:
        body = parse_body(wire.DatasetCreate, await request.body())
        datastore = await self.gateway.datastore()
        return _json(wire.DatasetOut.of(await datastore.create_dataset(body.name), documents=0, rows=0),
                     status_code=201)

    async def get(self, request: Request) -> Response:
        datastore = await self.gateway.datastore()
        dataset = await datastore.get_dataset(request.path_params["dataset"])
        documents = await datastore.documents(dataset.id)
        return _json(wire.DatasetOut.of(dataset, documents=len(documents),
                                        rows=sum(d.chunks for d in documents)))

    async def delete(self, request: Request) -> Response:
        datastore = await self.gateway.datastore()
        return _json(wire.DatasetOut.of(await datastore.delete_dataset(request.path_params["dataset"])))

    async def upload(self, request: Request) -> Response:
        datastore = await self.gateway.datastore()
        dataset = await datastore.get_dataset(request.path_params["dataset"])
        files, chunking = await read_upload(request)
        documents = await datastore.upload(dataset.id, files, chunking)
        return _json(wire.UploadOut(dataset_id=dataset.id,
                                    documents=[wire.DocumentOut.of(d) for d in documents]),
                     status_code=201)

    async def search(self, request: Request) -> Response:
        body = parse_body(wire.SearchRequest, await request.body())
        datastore = await self.gateway.datastore()
        results = await datastore.search(request.path_params["dataset"], body.query,
                                         top_k=body.top_k, alpha=body.alpha, filter=body.filter)
        return _json(wire.SearchResponse(
            query=body.query, results=[r.wire(variable=None, query=body.query) for r in results]))

    async def rows(self, request: Request) -> Response:
        limit = _int_param(request, "limit", 100, 1, 1000)
        after = _int_param(request, "after", 0, 0, 2**63 - 1)
        datastore = await self.gateway.datastore()
        rows = await datastore.rows(request.path_params["dataset"], limit=limit, after=after,
                                    document_id=request.query_params.get("document_id"))
        return _json(wire.RowPage(data=[wire.RowOut.of(r) for r in rows],
                                  next_after=rows[-1].id if len(rows) == limit else None))

    async def upsert(self, request: Request) -> Response:
        body = parse_body(wire.RowUpsert, await request.body())
        datastore = await self.gateway.datastore()
        rows = await datastore.upsert_rows(request.path_params["dataset"],
                                           [r.model_dump() for r in body.rows])
        return _json(wire.RowUpsertOut(data=[wire.RowOut.of(r) for r in rows]))

    async def documents(self, request: Request) -> Response:
        datastore = await self.gateway.datastore()
        docs = await datastore.documents(request.path_params["dataset"])
        return _json(wire.DocumentList(data=[wire.DocumentOut.of(d) for d in docs]))

    async def delete_document(self, request: Request) -> Response:
        datastore = await self.gateway.datastore()
        document = await datastore.delete_document(request.path_params["dataset"],
                                                   request.path_params["document_id"])
        return _json(wire.DocumentOut.of(document))


async def read_upload(request: Request) -> tuple[list[UploadedFile], ChunkingOptions]:
    """The upload's files (with their metadata) and chunking options, from the multipart form:
    `files` (one part per file), `metadata` (a JSON object for every file, or one per file in
    the files' order), `chunk_size`, `chunk_overlap`."""
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise BadRequest("an upload is a multipart/form-data body with one `files` part per file",
                         param="files")
    try:
        async with request.form(max_files=MAX_FILES, max_fields=MAX_FILES + 10) as form:
            parts = form.getlist("files")
            if any(not isinstance(p, UploadFile) for p in parts):
                raise BadRequest("`files` parts must be files (with a filename)", param="files")
            contents = [(p.filename or "", await p.read()) for p in parts]
            metadata = [_metadata(m) for m in form.getlist("metadata")]
            chunking = _chunking(form.get("chunk_size"), form.get("chunk_overlap"))
            unknown = sorted(set(form.keys()) - {"files", "metadata", "chunk_size", "chunk_overlap"})
    except (MultiPartException, HTTPException) as exc:  # Starlette raises the second in an app
        detail = str(getattr(exc, "message", None) or getattr(exc, "detail", ""))
        if detail.startswith("Too many files"):
            raise PayloadTooLarge(f"at most {MAX_FILES} files per upload", param="files") from None
        raise BadRequest(f"the multipart body could not be read: {detail}") from None
    if unknown:
        raise BadRequest(f"unknown form field {unknown[0]!r} (expected files, metadata, "
                         "chunk_size, chunk_overlap)", param=unknown[0])
    if not contents:
        raise BadRequest("no files to upload: send one `files` part per file", param="files")
    if len(metadata) > 1 and len(metadata) != len(contents):
        raise BadRequest(f"{len(metadata)} metadata fields for {len(contents)} files: send one "
                         "for all files, or one per file", param="metadata")
    per_file = metadata if len(metadata) > 1 else [metadata[0] if metadata else {}] * len(contents)
    files = [UploadedFile(name, data, dict(meta)) for (name, data), meta in zip(contents, per_file)]
    return files, chunking


def _metadata(value: Any) -> dict[str, Any]:
    if not isinstance(value, str):
        raise BadRequest("metadata must be a form field holding a JSON object", param="metadata")
    try:
        parsed = json.loads(value)
    except (ValueError, RecursionError):
        raise BadRequest("metadata is not valid JSON", param="metadata") from None
    if not isinstance(parsed, dict):
        raise BadRequest("metadata must be a JSON object", param="metadata")
    return parsed


def _chunking(size: Any, overlap: Any) -> ChunkingOptions:
    given: dict[str, Any] = {}
    for name, value in (("size", size), ("overlap", overlap)):
        if value is None:
            continue
        if not isinstance(value, str) or not value.strip().isdigit():
            raise BadRequest(f"chunk_{name} must be a whole number", param=f"chunk_{name}")
        given[name] = int(value)
    try:
        return ChunkingOptions(**given)
    except ValidationError as exc:
        bad = to_bad_request(exc, ChunkingOptions)
        if bad.param:
            raise BadRequest(f"chunk_{bad.message}", param=f"chunk_{bad.param}") from None
        raise BadRequest(bad.message, param="chunk_overlap") from None


def routes(gateway: Gateway) -> list[Route]:
    h = DatasetRoutes(gateway)
    one = PREFIX + "/{dataset}"
    return [
        Route(PREFIX, h.list, methods=["GET"]),
        Route(PREFIX, h.create, methods=["POST"]),
        Route(one, h.get, methods=["GET"]),
        Route(one, h.delete, methods=["DELETE"]),
        Route(one + "/upload", h.upload, methods=["POST"]),
        Route(one + "/search", h.search, methods=["POST"]),
        Route(one + "/rows", h.rows, methods=["GET"]),
        Route(one + "/rows/upsert", h.upsert, methods=["POST"]),
        Route(one + "/documents", h.documents, methods=["GET"]),
        Route(one + "/documents/{document_id}", h.delete_document, methods=["DELETE"]),
    ]
