"""`trestle datasets ...`: datastores from the command line, over the datasets API.

    trestle datasets create handbook
    trestle datasets upload handbook faq.md policy.pdf --metadata '{"team": "hr"}'
    trestle datasets search handbook "how many vacation days?" --top-k 3
    trestle datasets rows handbook
    trestle datasets delete-document handbook DOCUMENT_ID
    trestle datasets delete handbook --yes

A dataset is named by its id or its name. Every command takes `--output json`.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import click
import httpx
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, SpinnerColumn, TextColumn
from rich.table import Table

from trestle.cli.client import Client
from trestle.cli.common import CONTEXT, confirm, emit, output_option, pass_client, yes_option

UPLOAD_TIMEOUT_S = 3600.0  # embedding a large upload on CPU takes a while
SLICE = 256 * 1024


def _path(dataset: str, *rest: str) -> str:
    return "/".join(["/api/datasets", quote(dataset, safe=""), *(quote(r, safe="") for r in rest)])


def _json_option(value: str | None, what: str) -> dict | None:
    if value is None:
        return None
    try:
        parsed = json.loads(value)
    except ValueError:
        raise click.BadParameter(f"{what} must be a JSON object, e.g. '{{\"team\": \"hr\"}}'") from None
    if not isinstance(parsed, dict):
        raise click.BadParameter(f"{what} must be a JSON object")
    return parsed


@click.group(context_settings=CONTEXT)
def datasets() -> None:
    """Datastores: upload documents, search them (used by prompt endpoints)."""


@datasets.command("create")
@click.argument("name")
@output_option
@pass_client
def create(client: Client, name: str, output: str) -> None:
    """Create an empty dataset."""
    data = client.request("POST", "/api/datasets", json={"name": name}).json()
    emit(output, data, lambda: click.echo(f"created dataset {data['name']} ({data['id']})"))


@datasets.command("list")
@output_option
@pass_client
def list_(client: Client, output: str) -> None:
    """List datasets."""
    data = client.request("GET", "/api/datasets").json()

    def text() -> None:
        table = Table("id", "name", "embedding model", "created")
        for d in data["data"]:
            table.add_row(d["id"], d["name"], d["embedding_model"], str(d["created_at"])[:19])
        Console().print(table)

    emit(output, data, text)


def multipart(files: list[Path], fields: dict[str, str]) -> tuple[bytes, str]:
    """The multipart/form-data body of an upload (`files` parts, then the fields)."""
    boundary = uuid.uuid4().hex
    parts = []
    for path in files:
        name = path.name.replace('"', "%22").replace("\r", "").replace("\n", "")
        parts.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="{name}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n".encode() + path.read_bytes() + b"\r\n"
        )
    for key, value in fields.items():
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{key}"\r\n\r\n'
                     f"{value}\r\n".encode())
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


@datasets.command("upload")
@click.argument("dataset")
@click.argument("files", nargs=-1, required=True,
                type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--metadata", default=None, help="JSON object kept with every file's document "
              "(a `url` key sets the documents' url)")
@click.option("--chunk-size", type=int, default=None, help="characters per chunk [server: 1000]")
@click.option("--chunk-overlap", type=int, default=None,
              help="characters repeated from the previous chunk [server: 200]")
@output_option
@pass_client
def upload(client: Client, dataset: str, files: tuple[Path, ...], metadata: str | None,
           chunk_size: int | None, chunk_overlap: int | None, output: str) -> None:
    """Upload text, Markdown, PDF and CSV files, all or none.

    If one file cannot be read, none is stored. Shows the bytes sent, then waits while the
    server embeds the chunks."""
    fields = {}
    if metadata is not None:
        fields["metadata"] = json.dumps(_json_option(metadata, "--metadata"))
    if chunk_size is not None:
        fields["chunk_size"] = str(chunk_size)
    if chunk_overlap is not None:
        fields["chunk_overlap"] = str(chunk_overlap)
    body, content_type = multipart(list(files), fields)
    progress = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
                        DownloadColumn(), console=Console(stderr=True),
                        disable=output == "json", transient=True)

    def slices(task) -> Iterator[bytes]:
        for start in range(0, len(body), SLICE):
            yield body[start:start + SLICE]
            progress.update(task, advance=min(SLICE, len(body) - start))
        progress.update(task, description="parsing, chunking and embedding on the server")

    with progress:
        task = progress.add_task(f"sending {len(files)} file(s)", total=len(body))
        try:
            with client.http(timeout=UPLOAD_TIMEOUT_S) as http:
                resp = http.post(_path(dataset, "upload"), content=slices(task), headers={
                    "Content-Type": content_type, "Content-Length": str(len(body))})
        except httpx.ConnectError:
            raise click.ClickException(f"cannot reach trestle at {client.url}") from None
    client.check(resp)
    data = resp.json()

    def text() -> None:
        table = Table("document id", "file", "rows", "url")
        for d in data["documents"]:
            table.add_row(d["id"], d["name"], str(d["rows"]), d["metadata"].get("url", ""))
        Console().print(table)

    emit(output, data, text)


@datasets.command("search")
@click.argument("dataset")
@click.argument("query")
@click.option("--top-k", type=int, default=5, help="how many results")
@click.option("--alpha", type=float, default=0.5, help="1: vectors only, 0: keywords only")
@click.option("--filter", "filter_", default=None,
              help='metadata filter, a JSON object: \'{"team": "hr"}\', \'{"year": [2023, 2024]}\'')
@output_option
@pass_client
def search(client: Client, dataset: str, query: str, top_k: int, alpha: float,
           filter_: str | None, output: str) -> None:
    """Hybrid search: the chunks that best answer QUERY, best first."""
    body = {"query": query, "top_k": top_k, "alpha": alpha,
            "filter": _json_option(filter_, "--filter")}
    data = client.request("POST", _path(dataset, "search"), json=body).json()

    def text() -> None:
        table = Table("confidence", "row", "document", "text")
        for r in data["results"]:
            table.add_row(f"{r['confidence']:.3f}", str(r["metadata"]["rowId"]),
                          r["metadata"]["documentId"], r["data"]["text"][:200])
        Console().print(table)

    emit(output, data, text)


@datasets.command("rows")
@click.argument("dataset")
@click.option("--limit", type=int, default=100, help="rows per page (at most 1000)")
@click.option("--after", type=int, default=0, help="start after this row id (see next_after)")
@click.option("--document", default=None, help="only this document's rows")
@output_option
@pass_client
def rows(client: Client, dataset: str, limit: int, after: int, document: str | None,
         output: str) -> None:
    """List a dataset's rows (chunks), in id order, one page at a time."""
    params = {"limit": limit, "after": after} | ({"document_id": document} if document else {})
    data = client.request("GET", _path(dataset, "rows"), params=params).json()

    def text() -> None:
        table = Table("row", "document", "text")
        for r in data["data"]:
            table.add_row(str(r["id"]), r["document_id"], r["data"]["text"][:200])
        Console().print(table)
        if data["next_after"] is not None:
            click.echo(f"more: --after {data['next_after']}")

    emit(output, data, text)


@datasets.command("documents")
@click.argument("dataset")
@output_option
@pass_client
def documents(client: Client, dataset: str, output: str) -> None:
    """List a dataset's documents."""
    data = client.request("GET", _path(dataset, "documents")).json()

    def text() -> None:
        table = Table("document id", "name", "rows", "url")
        for d in data["data"]:
            table.add_row(d["id"], d["name"], str(d["rows"]), d["metadata"].get("url", ""))
        Console().print(table)

    emit(output, data, text)


@datasets.command("delete-document")
@click.argument("dataset")
@click.argument("document_id")
@output_option
@pass_client
def delete_document(client: Client, dataset: str, document_id: str, output: str) -> None:
    """Delete a document with its rows and their vectors."""
    data = client.request("DELETE", _path(dataset, "documents", document_id)).json()
    emit(output, data, lambda: click.echo(f"deleted document {data['id']} ({data['name']}, "
                                          f"{data['rows']} rows)"))


@datasets.command("delete")
@click.argument("dataset")
@yes_option
@output_option
@pass_client
def delete(client: Client, dataset: str, yes: bool, output: str) -> None:
    """Delete a dataset with all its documents and rows."""
    confirm(f"Delete dataset {dataset} with all its documents?", yes)
    data = client.request("DELETE", _path(dataset)).json()
    emit(output, data, lambda: click.echo(f"deleted dataset {data['name']} ({data['id']})"))
