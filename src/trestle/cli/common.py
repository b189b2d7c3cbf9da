"""What every `trestle` command module shares: context settings, the client, `--output`, `--yes`."""

from __future__ import annotations

import json
import sys

import click
from rich.console import Console

from trestle.cli.client import Client
from trestle.protocol import management as wire

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


pass_client = click.make_pass_decorator(Client)


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
