"""`trestle` commands. Every command takes -h; every command that reports something takes
`--output json` for scripts. Server address and key come from --url/TRESTLE_URL and
--api-key/TRESTLE_API_KEY (default: the key `trestle serve` wrote to TRESTLE_HOME/admin_key)."""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from pathlib import Path

import click
import httpx
from rich.console import Console
from rich.table import Table

from trestle.cli.client import Client, default_url, read_data, resolve_api_key
from trestle.deploy.config import ModelConfig
from trestle.deploy.build.package import pack
from trestle.errors import TrestleError
from trestle.protocol import management as wire
from trestle.settings import DEFAULT_PORT, Limits, Settings, default_home, format_size, parse_size

CONTEXT = {"help_option_names": ["-h", "--help"], "auto_envvar_prefix": "TRESTLE",
           "show_default": True, "terminal_width": 100, "max_content_width": 100}
console = Console(stderr=True)


def output_option(fn):
    return click.option("--output", "-o", type=click.Choice(["text", "json"]), default="text",
                        show_default=True, help="text for people, json for scripts")(fn)


def yes_option(fn):
    """`--yes` / `-y`: every destructive command takes it, so that scripts need no terminal."""
    return click.option("--yes", "-y", is_flag=True, help="do it without asking for confirmation")(fn)


def confirm(question: str, yes: bool) -> None:
    """Ask `question` on the terminal; without one (a script), refuse unless --yes was given."""
    if yes:
        return
    if not sys.stdin.isatty():
        raise click.ClickException(f"{question} Not done: pass --yes to confirm "
                                   "(there is no terminal to ask on).")
    click.confirm(question, abort=True, err=True)


def emit(output: str, data, text_fn) -> None:
    if output == "json":
        click.echo(json.dumps(data, indent=2, default=str))
    else:
        text_fn()


@click.group(context_settings=CONTEXT)
@click.option("--url", default=default_url, show_default=False,
              help=f"the trestle server (env TRESTLE_URL; default http://127.0.0.1:{DEFAULT_PORT})")
@click.option("--api-key", default=None, help="API key (env TRESTLE_API_KEY)")
@click.version_option(package_name="trestle")
@click.pass_context
def cli(ctx: click.Context, url: str, api_key: str | None) -> None:
    """trestle: push a model, get production HTTP endpoints."""
    ctx.obj = Client(url.rstrip("/"), *resolve_api_key(api_key))


pass_client = click.make_pass_decorator(Client)


class Size(click.ParamType):
    """A byte count: 65536, 64K, 200M, 2G (powers of 1024)."""

    name = "size"

    def convert(self, value, param, ctx) -> int:
        try:
            size = parse_size(value)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)
        if size < 1:
            self.fail("must be at least 1 byte", param, ctx)
        return size


LIMIT_HELP = {
    "upload_bytes": "largest push body (the gzip tar as sent)",
    "unpacked_bytes": "largest pushed folder, all files together, unpacked",
    "upload_files": "most files and folders in a pushed folder",
    "config_bytes": "largest config.yaml, also with its YAML aliases expanded",
    "config_depth": "deepest nesting in config.yaml",
}


def limit_options(fn):
    """One `--max-...` option per `Limits` field, each also read from TRESTLE_MAX_...."""
    defaults = Limits()
    for name in reversed(Limits.names()):
        value = getattr(defaults, name)
        sized = name.endswith("_bytes")
        fn = click.option(
            Limits.option(name), name, type=Size() if sized else click.IntRange(min=1),
            default=format_size(value) if sized else value, show_default=True,
            envvar=Limits.envvar(name), show_envvar=True, help=LIMIT_HELP[name],
        )(fn)
    return fn


@cli.command()
@click.option("--host", default="127.0.0.1", help="address to listen on")
@click.option("--port", default=DEFAULT_PORT, type=int, help="port to listen on")
@click.option("--home", type=click.Path(path_type=Path), default=None,
              help="data directory (env TRESTLE_HOME, default ~/.trestle)")
@click.option("--no-auth", is_flag=True, help="serve without API keys (local use only)")
@click.option("--no-builtin", is_flag=True, help="do not deploy the built-in Model APIs")
@click.option("--no-builtin-embeddings", is_flag=True,
              help="do not deploy the built-in embeddings model (saves ~1.5 GiB of memory)")
@click.option("--database-url", default=None, help="SQLAlchemy URL (env TRESTLE_DATABASE_URL)")
@click.option("--redis-url", default=None, envvar="TRESTLE_REDIS_URL", show_envvar=True,
              help="Redis for rate limits shared by several gateways (default: counted in memory)")
@click.option("--drain-timeout", type=click.FloatRange(0, 86400), default=30.0, show_default=True,
              envvar="TRESTLE_DRAIN_TIMEOUT", show_envvar=True,
              help="seconds that requests and streams in flight get to finish on SIGTERM or "
                   "Ctrl-C, before the workers are stopped")
@click.option("--backend", type=click.Choice(["local", "ray"]), default="local", show_default=True,
              envvar="TRESTLE_BACKEND", show_envvar=True,
              help="what runs the workers of a deployment whose config.yaml has no "
                   "runtime.backend: processes on this machine, or actors on a Ray cluster")
@click.option("--ray-address", default=None, envvar="TRESTLE_RAY_ADDRESS", show_envvar=True,
              help="the Ray cluster to join for deployments on Ray (host:port of its head; "
                   "default: start a local Ray when the first one starts)")
@limit_options
def serve(host, port, home, no_auth, no_builtin, no_builtin_embeddings, database_url, redis_url,
          drain_timeout, backend, ray_address, **limits) -> None:
    """Run the gateway (and its workers) in the foreground.

    SIGTERM or Ctrl-C stops it gracefully (a second Ctrl-C: at once)."""
    from trestle.gateway.app import CannotStart, run

    settings = Settings(home=home or default_home(), host=host, port=port, auth=not no_auth,
                        builtin_models=not no_builtin,
                        builtin_embeddings=not no_builtin_embeddings, database_url=database_url,
                        redis_url=redis_url, drain_timeout=drain_timeout, backend=backend,
                        ray_address=ray_address, limits=Limits(**limits))
    try:
        run(settings)
    except CannotStart as exc:
        raise click.ClickException(str(exc)) from None


@cli.command()
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


@cli.group(context_settings=CONTEXT)
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


@cli.group(context_settings=CONTEXT)
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


@cli.command()
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
        except __import__("httpx").ConnectError:
            raise click.ClickException(f"cannot reach trestle at {client.url}") from None
    click.echo()


def resolve_model(client: Client, model: str) -> str:
    """A model id, given its id or its name (as is when neither is listed: the server then says
    there is no such model; also when this key may not list models)."""
    try:
        models = wire.ModelOutList.model_validate(client.request("GET", "/api/v1/models").json())
    except click.ClickException:
        return model
    if any(m.id == model for m in models.models):
        return model
    return next((m.id for m in models.models if m.name == model), model)


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


@cli.command()
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


@cli.group(context_settings=CONTEXT)
def keys() -> None:
    """Create, list, update (rate limits) and revoke API keys."""


@keys.command("create")
@click.argument("name")
@click.option("--scope", type=click.Choice(["invoke", "admin"]), default="invoke", show_default=True,
              help="invoke: call models and endpoints only; admin: everything (push, keys, secrets)")
@click.option("--model", "models", multiple=True, metavar="ID",
              help="limit an invoke key to this model id (repeat for several)")
@click.option("--endpoint", "endpoints", multiple=True, metavar="ID",
              help="limit an invoke key to this prompt endpoint id (repeat for several)")
@click.option("--rpm", type=click.IntRange(0), default=None, metavar="N",
              help="requests per minute this key may make (default: no limit)")
@click.option("--tpm", type=click.IntRange(0), default=None, metavar="N",
              help="tokens per minute this key's answers may use (default: no limit)")
@output_option
@pass_client
def keys_create(client: Client, name: str, scope: str, models: tuple[str, ...],
                endpoints: tuple[str, ...], rpm: int | None, tpm: int | None, output: str) -> None:
    """Create a key; it is shown once, here."""
    body = {"name": name, "scope": scope}
    if models or endpoints:
        body |= {"models": list(models), "endpoints": list(endpoints)}
    body |= {k: v for k, v in (("rpm", rpm), ("tpm", tpm)) if v is not None}
    data = client.request("POST", "/api/v1/keys", json=body).json()
    emit(output, data, lambda: click.echo(
        f"key {data['id']} ({name}, scope {scope}{_limits_text(data)}):\n{data['key']}\n"
        "Store it now: it is not shown again."))


@keys.command("update")
@click.argument("key_id")
@click.option("--rpm", type=click.IntRange(0), default=None, metavar="N",
              help="requests per minute (0: no limit)")
@click.option("--tpm", type=click.IntRange(0), default=None, metavar="N",
              help="tokens per minute (0: no limit)")
@output_option
@pass_client
def keys_update(client: Client, key_id: str, rpm: int | None, tpm: int | None, output: str) -> None:
    """Change a key's rate limits; every gateway applies them at once."""
    body = {k: v for k, v in (("rpm", rpm), ("tpm", tpm)) if v is not None}
    if not body:
        raise click.UsageError("nothing to change: give --rpm N and/or --tpm N")
    data = client.request("PATCH", f"/api/v1/keys/{key_id}", json=body).json()
    emit(output, data, lambda: click.echo(f"{key_id}: {_rates_text(data)}"))


def _rates_text(key: dict) -> str:
    rpm, tpm = key.get("rpm"), key.get("tpm")
    return (f"{rpm or 'unlimited'} requests/min, {tpm or 'unlimited'} tokens/min"
            if rpm or tpm else "no rate limits")


def _limits_text(key: dict) -> str:
    if key.get("models") is None and key.get("endpoints") is None:
        return ""
    listed = [f"model {m}" for m in key.get("models") or []]
    listed += [f"endpoint {e}" for e in key.get("endpoints") or []]
    return f", limited to {', '.join(listed) or 'nothing'}"


@keys.command("list")
@output_option
@pass_client
def keys_list(client: Client, output: str) -> None:
    """List keys with their scope (never their secret part)."""
    data = client.request("GET", "/api/v1/keys").json()

    def text() -> None:
        table = Table("id", "name", "prefix", "scope", "limited to", "rate limits", "created",
                      "revoked")
        for k in wire.KeyList.model_validate(data).keys:
            table.add_row(k.id, k.name, k.prefix, k.scope,
                          _limits_text(k.model_dump()).removeprefix(", limited to "),
                          _rates_text(k.model_dump()) if k.rpm or k.tpm else "",
                          str(k.created_at)[:19], str(k.revoked_at)[:19] if k.revoked_at else "")
        Console().print(table)

    emit(output, data, text)


@keys.command("revoke")
@click.argument("key_id")
@yes_option
@output_option
@pass_client
def keys_revoke(client: Client, key_id: str, yes: bool, output: str) -> None:
    """Revoke a key: it stops working at once. Asks first when it is the key this CLI uses or
    the last admin key."""
    listed = wire.KeyList.model_validate(client.request("GET", "/api/v1/keys").json()).keys
    target = next((k for k in listed if k.id == key_id), None)
    if target is not None and target.revoked_at is None:
        admins = [k for k in listed if k.scope == "admin" and k.revoked_at is None]
        if target.prefix == client.key_prefix:
            confirm(f"{key_id} is the key this CLI is using: after this, it cannot reach the "
                    "server with it. Revoke it?", yes)
        elif admins == [target]:
            confirm(f"{key_id} is the last admin key: after this, nobody can push or manage keys "
                    "until `trestle keys recover` is run on the server's machine. Revoke it?", yes)
    data = client.request("DELETE", f"/api/v1/keys/{key_id}").json()
    emit(output, data, lambda: click.echo(f"revoked {key_id}"))


@keys.command("recover")
@click.option("--home", type=click.Path(path_type=Path), default=None,
              help="the server's data directory (env TRESTLE_HOME, default ~/.trestle)")
@click.option("--database-url", default=None, help="SQLAlchemy URL (env TRESTLE_DATABASE_URL)")
@yes_option
@output_option
def keys_recover(home: Path | None, database_url: str | None, yes: bool, output: str) -> None:
    """Create a new admin key with direct access to the store (every admin key lost).

    Run it on the server's machine (the server may be running). The key is written to
    TRESTLE_HOME/admin_key (readable by you only), where the CLI on that machine finds it."""
    import asyncio

    from trestle.store import Store, keys as key_material

    settings = Settings(home=home or default_home(), database_url=database_url)
    path = settings.admin_key_file
    if not settings.database_url and not os.environ.get("TRESTLE_DATABASE_URL") and not (
        settings.home / "trestle.db"
    ).exists():
        raise click.ClickException(f"no trestle store in {settings.home}: pass --home (or set "
                                   "TRESTLE_HOME) to the server's data directory")
    if path.exists():
        confirm(f"{path} exists; replace it with a new admin key? (the key in it stays valid "
                "until you revoke it)", yes)

    async def create() -> tuple[object, str]:
        async with await Store.open(settings.db_url) as store:
            return await store.create_api_key(
                f"admin (recovered {time.strftime('%Y-%m-%d %H:%M')})", scope=key_material.ADMIN)

    key, plaintext = asyncio.run(create())
    key_material.write_key_file(path, plaintext)
    data = {"id": key.id, "name": key.name, "prefix": key.prefix, "scope": key.scope,
            "admin_key_file": str(path)}
    emit(output, data, lambda: click.echo(
        f"new admin key {key.id} written to {path}\n"
        "The CLI on this machine uses it; elsewhere: export TRESTLE_API_KEY=$(cat that file)."))


@cli.group(context_settings=CONTEXT)
def secrets() -> None:
    """Secrets that models read through `Model(secrets=...)`."""


@secrets.command("set")
@click.argument("name")
@click.option("--value", default=None, help="the value (default: prompt, hidden, or stdin)")
@output_option
@pass_client
def secrets_set(client: Client, name: str, value: str | None, output: str) -> None:
    """Set a secret. Running deployments see it when they are next deployed."""
    if value is None:
        value = (sys.stdin.read().rstrip("\n") if not sys.stdin.isatty()
                 else click.prompt(f"value of {name}", hide_input=True))
    data = client.request("PUT", f"/api/v1/secrets/{name}", json={"value": value}).json()
    emit(output, data, lambda: click.echo(f"secret {name} set"))


@secrets.command("list")
@output_option
@pass_client
def secrets_list(client: Client, output: str) -> None:
    """List secret names (never values)."""
    data = client.request("GET", "/api/v1/secrets").json()
    emit(output, data, lambda: click.echo("\n".join(data["secrets"]) or "(no secrets)"))


@cli.group(context_settings=CONTEXT)
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


import trestle.cli.endpoints  # noqa: E402, F401  (endpoints, prices, usage)


def main() -> None:
    cli(prog_name="trestle")


from trestle.cli.datasets import datasets  # noqa: E402  (a module of its own: it imports this one)

cli.add_command(datasets)


