"""`trestle endpoints`, `trestle prices`, `trestle usage`: prompt endpoints, what their models
cost, and what their calls used (the management API of `trestle.gateway.endpoints.prompt_admin`).

    trestle endpoints create FILE        an endpoint file, YAML or JSON (docs/prompt-endpoints.md)
    trestle endpoints list | show ID | update ID FILE | delete ID
    trestle prices set MODEL --prompt X --completion Y      per 1M tokens
    trestle prices list
    trestle usage [--endpoint ID] [--since 24h] [--limit N]
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote

import click
import yaml
from rich.console import Console
from rich.table import Table

from trestle.cli.client import Client
from trestle.cli.common import CONTEXT, confirm, emit, output_option, pass_client, yes_option

MAX_FILE_BYTES = 1024 * 1024


def read_definition(path: Path) -> dict:
    """The endpoint file as a dict (YAML, of which JSON is a part)."""
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise click.ClickException(f"{path} is {size} bytes; an endpoint file is at most {MAX_FILE_BYTES}")
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise click.ClickException(f"cannot read {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise click.ClickException(f"{path} is not valid YAML or JSON: {exc}") from None
    if not isinstance(data, dict):
        raise click.ClickException(f"{path} must hold a mapping (name, model, messages or prompt, ...)")
    return data


def _summary(data: dict) -> str:
    variables = ", ".join(data["variables"]) or "(none)"
    searches = ", ".join(f"{s['variable']} <- {s['dataset']}" for s in data.get("search") or []) or "(none)"
    return (f"endpoint {data['id']} ({data['name']}), version {data['version']}, model {data['model']}\n"
            f"variables: {variables}\nsearch: {searches}")


@click.group(context_settings=CONTEXT)
def endpoints() -> None:
    """Prompt endpoints: a template, a model and datastores behind one URL."""


@endpoints.command("create")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@output_option
@pass_client
def endpoints_create(client: Client, file: Path, output: str) -> None:
    """Create an endpoint from FILE (YAML or JSON); prints its id."""
    data = client.request("POST", "/api/v1/endpoints", json=read_definition(file)).json()
    emit(output, data, lambda: click.echo(
        f"created {_summary(data)}\ncall it: POST {client.url}/api/endpoints/{data['id']}/completions"))


@endpoints.command("list")
@output_option
@pass_client
def endpoints_list(client: Client, output: str) -> None:
    """List endpoints at their newest version."""
    data = client.request("GET", "/api/v1/endpoints").json()

    def text() -> None:
        table = Table("id", "name", "version", "model", "variables", "updated")
        for e in data["endpoints"]:
            table.add_row(e["id"], e["name"], str(e["version"]), e["model"], ", ".join(e["variables"]),
                          e["updated_at"][:19])
        Console().print(table)

    emit(output, data, text)


@endpoints.command("show")
@click.argument("endpoint_id")
@click.option("--version", type=click.IntRange(min=1), default=None, help="an older version")
@output_option
@pass_client
def endpoints_show(client: Client, endpoint_id: str, version: int | None, output: str) -> None:
    """Show an endpoint's definition (id or name)."""
    params = {"version": version} if version else None
    data = client.request("GET", f"/api/v1/endpoints/{quote(endpoint_id, safe='')}", params=params).json()
    keys = ("name", "model", "messages", "prompt", "defaults", "search")
    emit(output, data, lambda: click.echo(
        _summary(data) + "\n---\n"
        + yaml.safe_dump({k: data[k] for k in keys if data.get(k) is not None}, sort_keys=False,
                         allow_unicode=True)))


@endpoints.command("update")
@click.argument("endpoint_id")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@output_option
@pass_client
def endpoints_update(client: Client, endpoint_id: str, file: Path, output: str) -> None:
    """Make FILE the endpoint's next version (calls record the version they used)."""
    data = client.request("PUT", f"/api/v1/endpoints/{quote(endpoint_id, safe='')}",
                          json=read_definition(file)).json()
    emit(output, data, lambda: click.echo(f"updated {_summary(data)}"))


@endpoints.command("delete")
@click.argument("endpoint_id")
@yes_option
@output_option
@pass_client
def endpoints_delete(client: Client, endpoint_id: str, yes: bool, output: str) -> None:
    """Delete an endpoint and its versions (its usage records stay)."""
    confirm(f"delete endpoint {endpoint_id}? Calls to it will fail.", yes)
    data = client.request("DELETE", f"/api/v1/endpoints/{quote(endpoint_id, safe='')}").json()
    emit(output, data, lambda: click.echo(f"deleted endpoint {data['id']} ({data['name']})"))


@click.group(context_settings=CONTEXT)
def prices() -> None:
    """What models cost, per 1M tokens (prompt endpoints report costs with them)."""


@prices.command("set")
@click.argument("model")
@click.option("--prompt", "prompt", type=click.FloatRange(min=0), required=True,
              help="price of 1M prompt tokens")
@click.option("--completion", "completion", type=click.FloatRange(min=0), required=True,
              help="price of 1M completion tokens")
@output_option
@pass_client
def prices_set(client: Client, model: str, prompt: float, completion: float, output: str) -> None:
    """Set MODEL's prices (MODEL as endpoints name it: a slug or baseten/MODEL_ID)."""
    data = client.request("PUT", f"/api/v1/prices/{quote(model, safe='/')}",
                          json={"prompt": prompt, "completion": completion}).json()
    emit(output, data, lambda: click.echo(
        f"{model}: {prompt:g} per 1M prompt tokens, {completion:g} per 1M completion tokens"))


@prices.command("list")
@output_option
@pass_client
def prices_list(client: Client, output: str) -> None:
    """List the prices set."""
    data = client.request("GET", "/api/v1/prices").json()

    def text() -> None:
        table = Table("model", "prompt / 1M", "completion / 1M", "updated")
        for p in data["prices"]:
            table.add_row(p["model"], f"{p['prompt']:g}", f"{p['completion']:g}", p["updated_at"][:19])
        Console().print(table)

    emit(output, data, text)


@click.command(context_settings=CONTEXT)
@click.option("--endpoint", default=None, help="only this endpoint (id or name)")
@click.option("--since", default=None, help="only calls since then: 30m, 24h, 7d, or an ISO time")
@click.option("--limit", type=click.IntRange(1, 10_000), default=100, help="records listed (totals count all)")
@output_option
@pass_client
def usage(client: Client, endpoint: str | None, since: str | None, limit: int, output: str) -> None:
    """List prompt-endpoint calls, newest first, and sum their tokens and costs."""
    params = {k: v for k, v in {"endpoint": endpoint, "since": since, "limit": limit}.items() if v}
    data = client.request("GET", "/api/v1/usage", params=params).json()

    def text() -> None:
        table = Table("time", "endpoint", "ver", "status", "user", "prompt", "completion", "cost", "ms")
        for r in data["records"]:
            table.add_row(r["created_at"][:19], r["endpoint_id"], str(r["endpoint_version"]), r["status"],
                          r["user"] or "", str(r["prompt_tokens"]), str(r["completion_tokens"]),
                          f"{r['prompt_cost'] + r['completion_cost']:.6g}", f"{r['latency_ms']:.0f}")
        Console().print(table)
        t = data["totals"]
        click.echo(f"{t['calls']} calls, {t['prompt_tokens']} prompt + {t['completion_tokens']} completion "
                   f"tokens, cost {t['cost']:.6g} (prompt {t['prompt_cost']:.6g}, "
                   f"completion {t['completion_cost']:.6g})")

    emit(output, data, text)
