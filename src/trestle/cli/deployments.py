"""`trestle push`, `trestle promote`, and the `deployments` and `environments` groups."""

from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path

import click
import httpx
from rich.console import Console
from rich.table import Table

from trestle.cli.client import Client
from trestle.cli.common import (CONTEXT, confirm, console, emit, output_option, pass_client,
                                resolve_model, yes_option)
from trestle.deploy.build.package import pack
from trestle.deploy.config import ModelConfig
from trestle.errors import TrestleError
from trestle.protocol import management as wire


@click.command()
@click.argument("folder", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--promote", is_flag=True, help="move production to this deployment once it is active")
@click.option("--environment", "-e", default=None, help="also point this environment at it")
@click.option("--wait/--no-wait", default=True, show_default=True,
              help="wait until the deployment is active (or failed)")
@click.option("--output", "-o", type=click.Choice(["text", "json", "id"]), default="text",
              show_default=True, help="text for people, json for scripts, id for the model id only")
@pass_client
def push(client: Client, folder: Path, promote: bool, environment: str | None, wait: bool,
         output: str) -> None:
    """Deploy a model folder as a new deployment.

    FOLDER holds config.yaml and model/model.py with a Model class (Truss-style), or a
    config.yaml with an `engine:` section (a GGUF served by llama.cpp)."""
    try:
        ModelConfig.load(folder)  # fail early, locally, on a broken config.yaml
        archive = pack(folder)
    except TrestleError as exc:
        raise click.ClickException(f"{folder}: {exc.message}") from None
    except ValueError as exc:  # a link in the folder
        raise click.ClickException(str(exc)) from None
    params = {"promote": int(promote), "name": folder.resolve().name}
    if environment:
        params["environment"] = environment
    with console.status(f"uploading {folder}"):
        resp = client.request("POST", "/api/v1/push", params=params, content=archive,
                              headers={"Content-Type": "application/gzip"})
    result = wire.PushResponse.model_validate(resp.json())
    dep = result.deployment
    if wait:
        dep = wait_for(client, dep.id)
    data = result.model_dump(mode="json") | {"deployment": dep.model_dump(mode="json")}
    if output == "id":
        click.echo(result.model.id)
    else:
        emit(output, data, lambda: print_push(result, dep))
    if dep.status == wire.Status.FAILED:
        sys.exit(1)


def wait_for(client: Client, deployment_id: str) -> wire.DeploymentOut:
    """Poll the deployment until it is active or failed, printing its build output (pip's,
    the build commands') on stderr as it is written."""
    done = threading.Event()
    threading.Thread(target=print_build_output, args=(client, deployment_id, done), daemon=True).start()
    try:
        with console.status("deploying") as status:
            while True:
                dep = wire.DeploymentOut.model_validate(
                    client.request("GET", f"/api/v1/deployments/{deployment_id}").json()
                )
                status.update(f"deployment {dep.id}: {dep.status}")
                if dep.status.settled:
                    return dep
                time.sleep(0.5)
    finally:
        done.set()


def print_build_output(client: Client, deployment_id: str, done: threading.Event) -> None:
    """Follow the deployment's log and print its `build` lines on stderr until `done` (a thread
    of `wait_for`: the build output is a convenience, so a lost stream just ends it)."""
    url = f"/api/v1/deployments/{deployment_id}/logs"
    params = {"format": "json", "tail": 10_000, "follow": 1}
    try:
        with client.http(timeout=None) as http, http.stream("GET", url, params=params) as resp:
            if not resp.is_success:
                return
            for line in resp.iter_lines():
                if done.is_set():
                    return
                record = json.loads(line) if line else {}
                if record.get("source") == "build":
                    console.print(f"build | {record.get('message', '')}", markup=False,
                                  highlight=False, soft_wrap=True)
    except (httpx.HTTPError, ValueError):
        return


def print_push(result: wire.PushResponse, dep: wire.DeploymentOut) -> None:
    """One `label: value` line each; URLs only when the deployment can answer them."""
    lines = [("model id", f"{result.model.id}  ({result.model.name})"),
             ("deployment id", f"{dep.id}  [{dep.status}]")]
    if dep.error:
        lines += [("error", dep.error), ("logs", f"trestle deployments logs {dep.id}")]
    lines.append(("environments", ", ".join(result.environments)))
    lines += [("note", note) for note in result.notes]
    if result.ignored_keys:
        lines.append(("not used", f"{', '.join(result.ignored_keys)}  (Truss keys trestle accepts "
                                  "and ignores)"))
    if dep.status != wire.Status.FAILED:
        if result.slug:
            lines.append(("model", f"{result.slug}  (send as `model` to the OpenAI routes)"))
        lines += [(name.replace("_", " "), url) for name, url in result.urls.items()]
    width = max(len(label) for label, _ in lines) + 2
    for label, value in lines:
        click.echo(f"{label + ':':<{width}}{value}")


@click.group(context_settings=CONTEXT)
def deployments() -> None:
    """Deployments: list, logs, promote, rollback, deactivate, activate, delete."""


@deployments.command("list")
@click.option("--model", "model_id", default=None, help="only this model's deployments")
@output_option
@pass_client
def deployments_list(client: Client, model_id: str | None, output: str) -> None:
    """List deployments, newest last."""
    params = {"model_id": model_id} if model_id else {}
    data = client.request("GET", "/api/v1/deployments", params=params).json()
    deps = wire.DeploymentList.model_validate(data).deployments

    def text() -> None:
        table = Table("deployment", "model", "status", "environments", "created")
        for d in deps:
            table.add_row(d.id, d.model_id, d.status, ", ".join(d.environments),
                          d.created_at.strftime("%Y-%m-%d %H:%M:%S"))
        Console().print(table)

    emit(output, data, text)


@deployments.command("scale")
@click.argument("deployment_id")
@click.option("--min", "min_replicas", type=int, required=True, help="replicas kept running (0: scale to zero)")
@click.option("--max", "max_replicas", type=int, required=True, help="most replicas under load")
@click.option("--target-concurrency", type=int, default=None,
              help="in-flight requests per replica before another starts")
@click.option("--scale-down-delay", type=float, default=None,
              help="seconds of low load before replicas above the minimum stop")
@output_option
@pass_client
def deployments_scale(client: Client, deployment_id: str, min_replicas: int, max_replicas: int,
                      target_concurrency: int | None, scale_down_delay: float | None, output: str) -> None:
    """Set a deployment's replica bounds (its config.yaml `scaling`), applied at once."""
    body = {"min_replicas": min_replicas, "max_replicas": max_replicas,
            "target_concurrency": target_concurrency, "scale_down_delay": scale_down_delay}
    data = client.request("POST", f"/api/v1/deployments/{deployment_id}/scale",
                          json={k: v for k, v in body.items() if v is not None}).json()
    dep = wire.DeploymentOut.model_validate(data)

    def text() -> None:
        scaling = (dep.config or {}).get("scaling", {})
        click.echo(f"{dep.id}: scaling {json.dumps(scaling, sort_keys=True)}")
        table = Table("replica", "state", "in flight", "restarts")
        for r in dep.replicas or []:
            table.add_row(str(r.index), r.state, str(r.in_flight), str(r.restarts))
        Console().print(table)

    emit(output, data, text)


@deployments.command("logs")
@click.argument("deployment_id")
@click.option("--follow", "-f", is_flag=True, help="keep printing new lines until Ctrl-C")
@click.option("--since", default=None, metavar="WHEN",
              help="only lines from then on: a duration (30s, 5m, 2h, 1d) or a time "
                   "(2026-11-22T13:00:00Z)")
@click.option("--tail", "-n", type=click.IntRange(0, 100_000), default=1000, show_default=True,
              help="at most this many lines from the end")
@click.option("--raw", is_flag=True, help="the log file's own text instead of JSON lines")
@pass_client
def deployments_logs(client: Client, deployment_id: str, follow: bool, since: str | None, tail: int,
                     raw: bool) -> None:
    """Print a deployment's log: build, load and request lines, as JSON lines.

    Each line: {"time", "source", "level", "request_id", "replica", "logger", "message"};
    source is trestle (deployment events), build, worker or output (what the model printed)."""
    url = f"/api/v1/deployments/{deployment_id}/logs"
    if raw:
        if follow or since:
            raise click.UsageError("--raw prints the file as it is: no --follow or --since")
        click.echo(client.request("GET", url, params={"tail": tail}).text, nl=False)
        return
    params = {"format": "json", "tail": tail}
    if since:
        params["since"] = since
    if not follow:
        click.echo(client.request("GET", url, params=params).text, nl=False)
        return
    params["follow"] = 1
    try:
        with client.http(timeout=None) as http, http.stream("GET", url, params=params) as resp:
            if not resp.is_success:
                resp.read()
                client.check(resp)
            for line in resp.iter_lines():
                if line:
                    click.echo(line)
    except KeyboardInterrupt:
        pass
    except __import__("httpx").TransportError:
        raise click.ClickException(f"lost the connection to trestle at {client.url}") from None


def print_environment(env: dict, what: str) -> None:
    line = f"{what}: {env['name']} of {env['model_id']} -> {env['deployment_id']}"
    if env.get("serving") and env["serving"] != env["deployment_id"]:
        line += f" (serving {env['serving']} until it is active)"
    click.echo(line)


@deployments.command("promote")
@click.argument("deployment_id")
@click.option("--environment", "-e", default="production", show_default=True,
              help="the environment to point at it (created if new)")
@output_option
@pass_client
def deployments_promote(client: Client, deployment_id: str, environment: str, output: str) -> None:
    """Point an environment at DEPLOYMENT_ID. Requests move to it once it is active."""
    data = client.request("POST", f"/api/v1/deployments/{deployment_id}/promote",
                          json={"environment": environment}).json()
    emit(output, data, lambda: print_environment(data, "promoted"))


@deployments.command("rollback")
@click.argument("model")
@click.option("--environment", "-e", default="production", show_default=True)
@output_option
@pass_client
def deployments_rollback(client: Client, model: str, environment: str, output: str) -> None:
    """Point back at the deployment used before.

    MODEL is a model id or name; the environment goes back to the last active deployment it
    pointed at before the current one (again: further back)."""
    model_id = resolve_model(client, model)
    data = client.request("POST", f"/api/v1/models/{model_id}/environments/{environment}/rollback").json()
    emit(output, data, lambda: print_environment(data, "rolled back"))


@deployments.command("deactivate")
@click.argument("deployment_id")
@output_option
@pass_client
def deployments_deactivate(client: Client, deployment_id: str, output: str) -> None:
    """Stop a deployment's replicas, keeping its record.

    Requests to it get a 503 until it is activated again."""
    data = client.request("POST", f"/api/v1/deployments/{deployment_id}/deactivate").json()
    emit(output, data, lambda: click.echo(f"deployment {deployment_id}: {data['status']}"))


@deployments.command("activate")
@click.argument("deployment_id")
@click.option("--wait/--no-wait", default=True, show_default=True,
              help="wait until the deployment is active (or failed)")
@output_option
@pass_client
def deployments_activate(client: Client, deployment_id: str, wait: bool, output: str) -> None:
    """Bring an inactive deployment back."""
    data = client.request("POST", f"/api/v1/deployments/{deployment_id}/activate").json()
    if wait:
        data = wait_for(client, deployment_id).model_dump(mode="json")
    emit(output, data, lambda: click.echo(f"deployment {deployment_id}: {data['status']}"
                                          + (f" ({data['error']})" if data.get("error") else "")))
    if data["status"] == wire.Status.FAILED:
        sys.exit(1)


@deployments.command("delete")
@click.argument("deployment_id")
@yes_option
@output_option
@pass_client
def deployments_delete(client: Client, deployment_id: str, yes: bool, output: str) -> None:
    """Delete a deployment: its replicas, record and files. Refused while an environment points
    at it."""
    confirm(f"Delete deployment {deployment_id} and its files?", yes)
    data = client.request("DELETE", f"/api/v1/deployments/{deployment_id}").json()
    emit(output, data, lambda: click.echo(f"deleted deployment {deployment_id}"))


@click.group(context_settings=CONTEXT)
def environments() -> None:
    """A model's environments: production, development and named ones."""


@environments.command("list")
@click.argument("model")
@output_option
@pass_client
def environments_list(client: Client, model: str, output: str) -> None:
    """List MODEL's environments (by id or name) and what each points at."""
    model_id = resolve_model(client, model)
    data = client.request("GET", f"/api/v1/models/{model_id}/environments").json()

    def text() -> None:
        table = Table("environment", "deployment", "serving", "history")
        for e in wire.EnvironmentList.model_validate(data).environments:
            table.add_row(e.name, e.deployment_id, e.serving or "(none yet)", " ".join(e.history))
        Console().print(table)

    emit(output, data, text)


@environments.command("create")
@click.argument("model")
@click.argument("name")
@click.option("--deployment", "deployment_id", default=None,
              help="the deployment it points at (default: production's)")
@output_option
@pass_client
def environments_create(client: Client, model: str, name: str, deployment_id: str | None,
                        output: str) -> None:
    """Create environment NAME for MODEL (by id or name).

    It is served at /model/{model_id}/environments/NAME/..."""
    model_id = resolve_model(client, model)
    data = client.request("POST", f"/api/v1/models/{model_id}/environments",
                          json={"name": name, "deployment_id": deployment_id}).json()
    emit(output, data, lambda: print_environment(data, "created"))


@environments.command("delete")
@click.argument("model")
@click.argument("name")
@yes_option
@output_option
@pass_client
def environments_delete(client: Client, model: str, name: str, yes: bool, output: str) -> None:
    """Delete environment NAME of MODEL; its deployment keeps running."""
    model_id = resolve_model(client, model)
    confirm(f"Delete environment {name} of {model_id}? Its URLs stop working.", yes)
    data = client.request("DELETE", f"/api/v1/models/{model_id}/environments/{name}").json()
    emit(output, data, lambda: click.echo(f"deleted environment {name} of {model_id}"))


@click.command()
@click.argument("model_id")
@click.argument("deployment_id")
@click.option("--environment", "-e", default="production", show_default=True)
@output_option
@pass_client
def promote(client: Client, model_id: str, deployment_id: str, environment: str,
            output: str) -> None:
    """Point an environment (production by default) at a deployment."""
    data = client.request("POST", f"/api/v1/models/{model_id}/environments/{environment}",
                          json={"deployment_id": deployment_id}).json()
    emit(output, data, lambda: click.echo(f"{environment} of {model_id} -> {deployment_id}"))
