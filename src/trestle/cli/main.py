"""`trestle` commands. Every command takes -h; every command that reports something takes
`--output json` for scripts. Server address and key come from --url/TRESTLE_URL and
--api-key/TRESTLE_API_KEY (default: the key `trestle serve` wrote to TRESTLE_HOME/admin_key)."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from trestle.cli.client import Client, check, default_url, read_data, resolve_api_key
from trestle.deploy.config import ModelConfig
from trestle.deploy.package import pack
from trestle.errors import TrestleError
from trestle.protocol import management as wire
from trestle.settings import DEFAULT_PORT, Limits, Settings, default_home, format_size, parse_size

CONTEXT = {"help_option_names": ["-h", "--help"], "auto_envvar_prefix": "TRESTLE"}
console = Console(stderr=True)


def output_option(fn):
    return click.option("--output", "-o", type=click.Choice(["text", "json"]), default="text",
                        show_default=True, help="text for people, json for scripts")(fn)


def emit(output: str, data, text_fn) -> None:
    if output == "json":
        click.echo(json.dumps(data, indent=2, default=str))
    else:
        text_fn()


@click.group(context_settings=CONTEXT)
@click.option("--url", default=default_url, show_default=f"http://127.0.0.1:{DEFAULT_PORT}",
              help="the trestle server (env TRESTLE_URL)")
@click.option("--api-key", default=None, help="API key (env TRESTLE_API_KEY)")
@click.version_option(package_name="trestle")
@click.pass_context
def cli(ctx: click.Context, url: str, api_key: str | None) -> None:
    """trestle: push a model, get production HTTP endpoints."""
    ctx.obj = Client(url.rstrip("/"), resolve_api_key(api_key))


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
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=DEFAULT_PORT, show_default=True, type=int)
@click.option("--home", type=click.Path(path_type=Path), default=None,
              help="data directory (env TRESTLE_HOME, default ~/.trestle)")
@click.option("--no-auth", is_flag=True, help="serve without API keys (local use only)")
@click.option("--no-builtin", is_flag=True, help="do not deploy the built-in Model APIs")
@click.option("--database-url", default=None, help="SQLAlchemy URL (env TRESTLE_DATABASE_URL)")
@limit_options
def serve(host, port, home, no_auth, no_builtin, database_url, **limits) -> None:
    """Run the gateway (and its workers) in the foreground."""
    from trestle.gateway.app import run

    settings = Settings(home=home or default_home(), host=host, port=port, auth=not no_auth,
                        builtin_models=not no_builtin, database_url=database_url,
                        limits=Limits(**limits))
    run(settings)


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
    """Push a Truss-style model folder (config.yaml + model/model.py) as a new deployment."""
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
    with console.status("deploying") as status:
        while True:
            dep = wire.DeploymentOut.model_validate(
                client.request("GET", f"/api/v1/deployments/{deployment_id}").json()
            )
            status.update(f"deployment {dep.id}: {dep.status}")
            if dep.status.settled:
                return dep
            time.sleep(0.5)


def print_push(result: wire.PushResponse, dep: wire.DeploymentOut) -> None:
    click.echo(f"model id:      {result.model.id}  ({result.model.name})")
    click.echo(f"deployment id: {dep.id}  [{dep.status}]")
    if dep.error:
        click.echo(f"error:         {dep.error}")
        click.echo(f"logs:          trestle deployments logs {dep.id}")
    click.echo(f"environments:  {', '.join(result.environments)}")
    for name, url in result.urls.items():
        click.echo(f"{name + ':':<15}{url}")
    if result.ignored_keys:
        click.echo(f"not used:      {', '.join(result.ignored_keys)}  (Truss keys trestle accepts "
                   "and ignores)")


@cli.group(context_settings=CONTEXT)
def deployments() -> None:
    """List deployments and read their logs."""


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


@deployments.command("logs")
@click.argument("deployment_id")
@pass_client
def deployments_logs(client: Client, deployment_id: str) -> None:
    """Print a deployment's build and worker log."""
    click.echo(client.request("GET", f"/api/v1/deployments/{deployment_id}/logs").text, nl=False)


@cli.command()
@click.argument("model_id")
@click.option("--deployment", "deployment_id", default=None, help="a specific deployment")
@click.option("--environment", "-e", default="production", show_default=True)
@click.option("--data", "-d", default="{}", show_default=True,
              help="JSON input, @file or @- for stdin")
@click.option("--path", default="predict", show_default=True,
              help="worker route: predict, or sync/... e.g. sync/v1/chat/completions")
@pass_client
def predict(client: Client, model_id: str, deployment_id: str | None, environment: str,
            data: str, path: str) -> None:
    """Call a model; streamed answers are printed as they arrive."""
    target = f"deployment/{deployment_id}" if deployment_id else f"environments/{environment}"
    url = f"/model/{model_id}/{target}/{path.lstrip('/')}"
    body = read_data(data)
    with client.http(timeout=None) as http:
        try:
            with http.stream("POST", url, content=body,
                             headers={"Content-Type": "application/json"}) as resp:
                if not resp.is_success:
                    resp.read()
                    check(resp)
                for chunk in resp.iter_raw():
                    sys.stdout.buffer.write(chunk)
                    sys.stdout.flush()
        except __import__("httpx").ConnectError:
            raise click.ClickException(f"cannot reach trestle at {client.url}") from None
    click.echo()


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
    """Create, list and revoke API keys."""


@keys.command("create")
@click.argument("name")
@output_option
@pass_client
def keys_create(client: Client, name: str, output: str) -> None:
    """Create a key; it is shown once, here."""
    data = client.request("POST", "/api/v1/keys", json={"name": name}).json()
    emit(output, data, lambda: click.echo(
        f"key {data['id']} ({name}):\n{data['key']}\nStore it now: it is not shown again."))


@keys.command("list")
@output_option
@pass_client
def keys_list(client: Client, output: str) -> None:
    """List keys (never their secret part)."""
    data = client.request("GET", "/api/v1/keys").json()

    def text() -> None:
        table = Table("id", "name", "prefix", "created", "revoked")
        for k in wire.KeyList.model_validate(data).keys:
            table.add_row(k.id, k.name, k.prefix, str(k.created_at)[:19],
                          str(k.revoked_at)[:19] if k.revoked_at else "")
        Console().print(table)

    emit(output, data, text)


@keys.command("revoke")
@click.argument("key_id")
@output_option
@pass_client
def keys_revoke(client: Client, key_id: str, output: str) -> None:
    """Revoke a key: it stops working at once."""
    data = client.request("DELETE", f"/api/v1/keys/{key_id}").json()
    emit(output, data, lambda: click.echo(f"revoked {key_id}"))


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


def main() -> None:
    cli(prog_name="trestle")


