"""`trestle predict` (call a model) and the `models` group."""

from __future__ import annotations

import json
import sys

import click
import httpx
from rich.console import Console
from rich.table import Table

from trestle.cli.client import Client, read_data
from trestle.cli.common import CONTEXT, emit, output_option, pass_client, resolve_model
from trestle.protocol import management as wire


@click.command()
@click.argument("model")
@click.option("--deployment", "deployment_id", default=None, help="a specific deployment")
@click.option("--environment", "-e", default="production", help="the environment to call")
@click.option("--data", "-d", default="{}", help="JSON input, @file or @- for stdin")
@click.option("--path", default="predict",
              help="worker route: predict, or sync/... e.g. sync/v1/chat/completions")
@click.option("--output", "-o", type=click.Choice(["text", "json"]), default="text",
              help="text: the answer as it arrives; json: one JSON document (a stream's events "
                   "as a list)")
@pass_client
def predict(client: Client, model: str, deployment_id: str | None, environment: str,
            data: str, path: str, output: str) -> None:
    """Call a model by id or name and print its answer.

    A streamed answer is printed as it arrives (with --output text)."""
    model_id = resolve_model(client, model)
    target = f"deployment/{deployment_id}" if deployment_id else f"environments/{environment}"
    url = f"/model/{model_id}/{target}/{path.lstrip('/')}"
    body = read_data(data)
    with client.http(timeout=None) as http:
        try:
            with http.stream("POST", url, content=body,
                             headers={"Content-Type": "application/json"}) as resp:
                if not resp.is_success:
                    resp.read()
                    client.check(resp)
                if output == "json":
                    click.echo(json.dumps(as_json(resp), indent=2))
                    return
                for chunk in resp.iter_raw():
                    sys.stdout.buffer.write(chunk)
                    sys.stdout.flush()
        except httpx.ConnectError:
            raise click.ClickException(f"cannot reach trestle at {client.url}") from None
    click.echo()


def as_json(resp) -> object:
    """The answer as one JSON value: the body itself, or a stream's events as a list."""
    resp.read()
    if resp.headers.get("content-type", "").startswith("text/event-stream"):
        events = []
        for line in resp.text.splitlines():
            if line.startswith("data:"):
                payload = line[5:].strip()
                try:
                    events.append(json.loads(payload))
                except ValueError:
                    events.append(payload)  # e.g. [DONE]
        return events
    try:
        return resp.json()
    except ValueError:
        return resp.text


@click.group(context_settings=CONTEXT)
def models() -> None:
    """List models and their environments."""


@models.command("list")
@output_option
@pass_client
def models_list(client: Client, output: str) -> None:
    """List models with the deployment each environment points at."""
    data = client.request("GET", "/api/v1/models").json()

    def text() -> None:
        table = Table("model", "name", "environments")
        for m in wire.ModelOutList.model_validate(data).models:
            table.add_row(m.id, m.name, ", ".join(f"{k}={v}" for k, v in m.environments.items()))
        Console().print(table)

    emit(output, data, text)
