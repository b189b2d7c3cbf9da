"""`trestle` commands. Every command takes -h; every command that reports something takes
`--output json` for scripts. Server address and key come from --url/TRESTLE_URL and
--api-key/TRESTLE_API_KEY (default: the key `trestle serve` wrote to TRESTLE_HOME/admin_key).

The group and `serve` are here; the other commands live by concept: `deployments` (push, promote,
deployments, environments), `models` (predict, models), `access` (keys, secrets), `endpoints`
(endpoints, prices, usage) and `datasets`, with what they share in `common`."""

from __future__ import annotations

from pathlib import Path

import click

from trestle.cli.access import keys, secrets
from trestle.cli.client import Client, default_url, resolve_api_key
from trestle.cli.common import CONTEXT
from trestle.cli.datasets import datasets
from trestle.cli.deployments import deployments, environments, promote, push
from trestle.cli.endpoints import endpoints, prices, usage
from trestle.cli.models import models, predict
from trestle.settings import DEFAULT_PORT, Limits, Settings, default_home, format_size, parse_size


@click.group(context_settings=CONTEXT)
@click.option("--url", default=default_url, show_default=False,
              help=f"the trestle server (env TRESTLE_URL; default http://127.0.0.1:{DEFAULT_PORT})")
@click.option("--api-key", default=None, help="API key (env TRESTLE_API_KEY)")
@click.version_option(package_name="trestle")
@click.pass_context
def cli(ctx: click.Context, url: str, api_key: str | None) -> None:
    """trestle: push a model, get production HTTP endpoints."""
    ctx.obj = Client(url.rstrip("/"), *resolve_api_key(api_key))


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


for command in (push, predict, promote, deployments, environments, models, keys, secrets,
                endpoints, prices, usage, datasets):
    cli.add_command(command)


def main() -> None:
    cli(prog_name="trestle")
