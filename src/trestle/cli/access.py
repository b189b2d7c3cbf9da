"""The `keys` (API keys, and recovering an admin key) and `secrets` groups."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from trestle.cli.client import Client
from trestle.cli.common import CONTEXT, confirm, emit, output_option, pass_client, yes_option
from trestle.protocol import management as wire
from trestle.settings import Settings, default_home


@click.group(context_settings=CONTEXT)
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


@click.group(context_settings=CONTEXT)
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
