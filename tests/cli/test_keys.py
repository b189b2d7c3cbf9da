"""`trestle keys` as a user meets it: a missing key explained, confirmation before revoking the
key in use or the last admin key (`--yes` for scripts), and recovering a lost admin key."""

from __future__ import annotations

import os
import pty
import stat
import subprocess
import sys

import httpx
import pytest

from support import Server, start_server
from trestle.cli.main import cli


@pytest.fixture(scope="module")
def own(tmp_path_factory) -> Server:
    srv = start_server(tmp_path_factory.mktemp("home"), "--no-builtin")
    yield srv
    srv.stop()


def run_cli(server: Server, *args: str, env: dict | None = None, stdin=None,
            input: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "trestle", *args], capture_output=stdin is None,
                          stdout=subprocess.PIPE if stdin is not None else None,
                          stderr=subprocess.PIPE if stdin is not None else None, stdin=stdin,
                          input=input, text=True, env={**server.env(), **(env or {})}, timeout=300)


def works(server: Server, key: str) -> bool:
    resp = httpx.get(f"{server.url}/api/v1/keys", headers={"Authorization": f"Api-Key {key}"})
    return resp.status_code == 200


def test_without_a_key_the_cli_says_where_it_looked(own, tmp_path):
    res = run_cli(own, "models", "list", env={"TRESTLE_HOME": str(tmp_path)})
    assert res.returncode == 1
    assert ("no API key found: set TRESTLE_API_KEY or run on the server's machine "
            f"(TRESTLE_HOME={tmp_path}") in res.stderr
    assert "401" not in res.stderr
    wrong = run_cli(own, "models", "list", env={"TRESTLE_API_KEY": "tr_abcdefgh_wrong"})
    assert wrong.returncode == 1
    assert "401: invalid or revoked API key (the key from --api-key / TRESTLE_API_KEY)" in wrong.stderr


def test_revoking_the_key_in_use_needs_yes_without_a_terminal(own):
    created = own.cli_json("keys", "create", "ops", "--scope", "admin")
    env = {"TRESTLE_API_KEY": created["key"]}
    refused = run_cli(own, "keys", "revoke", created["id"], env=env)
    assert refused.returncode == 1
    assert "is the key this CLI is using" in refused.stderr and "pass --yes" in refused.stderr
    assert works(own, created["key"])
    done = run_cli(own, "keys", "revoke", created["id"], "--yes", env=env)
    assert done.returncode == 0, done.stderr
    assert not works(own, created["key"])


def test_other_keys_are_revoked_without_asking(own):
    created = own.cli_json("keys", "create", "app")
    assert run_cli(own, "keys", "revoke", created["id"]).returncode == 0


def test_on_a_terminal_the_cli_asks_first(own):
    created = own.cli_json("keys", "create", "ops2", "--scope", "admin")
    env = {"TRESTLE_API_KEY": created["key"]}
    for answer, revoked in (("n", False), ("y", True)):
        primary, secondary = pty.openpty()
        try:
            os.write(primary, f"{answer}\n".encode())
            res = run_cli(own, "keys", "revoke", created["id"], env=env, stdin=secondary)
        finally:
            os.close(primary)
            os.close(secondary)
        assert "Revoke it? [y/N]" in res.stderr
        assert res.returncode == (0 if revoked else 1), res.stderr
        assert works(own, created["key"]) is not revoked


def test_revoking_the_last_admin_key_asks_first(tmp_path):
    server = start_server(tmp_path / "open", "--no-builtin", "--no-auth")
    try:
        only = server.cli_json("keys", "create", "only-admin", "--scope", "admin")
        refused = run_cli(server, "keys", "revoke", only["id"])
        assert refused.returncode == 1
        assert "is the last admin key" in refused.stderr and "trestle keys recover" in refused.stderr
        assert run_cli(server, "keys", "revoke", only["id"], "--yes").returncode == 0
    finally:
        server.stop()


def test_a_lost_admin_key_is_recovered_on_the_servers_machine(own):
    old = own.api_key
    (own.home / "admin_key").unlink()
    lost = run_cli(own, "keys", "list")
    assert lost.returncode == 1 and "no API key found" in lost.stderr
    res = run_cli(own, "keys", "recover", "--output", "json")
    assert res.returncode == 0, res.stderr
    new = own.api_key
    assert new and new != old
    assert stat.S_IMODE((own.home / "admin_key").stat().st_mode) == 0o600
    assert works(own, new) and works(own, old)  # the old key stays until it is revoked
    keys = own.cli_json("keys", "list")["keys"]
    recovered = next(k for k in keys if k["prefix"] == new.split("_")[1])
    assert recovered["scope"] == "admin" and recovered["name"].startswith("admin (recovered")
    again = run_cli(own, "keys", "recover")
    assert again.returncode == 1 and "pass --yes" in again.stderr and own.api_key == new
    assert run_cli(own, "keys", "recover", "--yes").returncode == 0 and own.api_key != new


def test_recover_refuses_a_folder_without_a_store(own, tmp_path):
    res = run_cli(own, "keys", "recover", "--home", str(tmp_path / "nothing"))
    assert res.returncode == 1 and "no trestle store in" in res.stderr


DESTRUCTIVE = [("keys", "revoke"), ("keys", "recover")]


@pytest.mark.parametrize("path", DESTRUCTIVE, ids=" ".join)
def test_destructive_commands_take_yes(path):
    cmd = cli
    for name in path:
        cmd = cmd.commands[name]
    assert any(o.name == "yes" for o in cmd.params)
