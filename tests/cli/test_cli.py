"""The `trestle` command line: help everywhere, JSON output for scripts, secrets, logs."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import datetime

import click
import pytest

from support import EXAMPLES
from trestle.cli.main import cli


def _commands(group: click.Group, prefix: tuple[str, ...] = ()):
    for name, cmd in group.commands.items():
        yield prefix + (name,)
        if isinstance(cmd, click.Group):
            yield from _commands(cmd, prefix + (name,))


ALL = [()] + list(_commands(cli))


@pytest.mark.parametrize("path", ALL, ids=lambda p: " ".join(p) or "trestle")
def test_dash_h_works_everywhere(path):
    res = subprocess.run([sys.executable, "-m", "trestle", *path, "-h"], capture_output=True,
                         text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert "Usage: trestle" in res.stdout
    assert "-h, --help" in res.stdout
    # defaults shown plainly, nothing cut short
    assert "[default: (" not in res.stdout
    commands = res.stdout.partition("Commands:")[2]
    assert not any(line.endswith("...") for line in commands.splitlines()), commands


def test_every_reporting_command_has_json_output():
    reporting = {p for p in ALL if p and not isinstance(_lookup(p), click.Group)}
    without = {p for p in reporting
               if not any(o.name == "output" for o in _lookup(p).params)}
    # serve runs the server, logs prints a log
    assert without == {("serve",), ("deployments", "logs")}


def _lookup(path):
    cmd = cli
    for name in path:
        cmd = cmd.commands[name]
    return cmd


def test_json_output_carries_the_listed_records(server, pushed):
    m = pushed("hello")["model"]["id"]
    server.cli("secrets", "set", "cli_json_probe", input="probe-value\n")

    models = server.cli_json("models", "list")["models"]
    hello = next(x for x in models if x["id"] == m)
    assert hello["name"] == "hello"
    production = hello["environments"]["production"]
    datetime.fromisoformat(hello["created_at"])

    deps = server.cli_json("deployments", "list", "--model", m)["deployments"]
    assert deps and {d["model_id"] for d in deps} == {m}
    dep = next(d for d in deps if d["id"] == production)
    assert dep["status"] == "active" and dep["error"] is None
    assert "production" in dep["environments"]
    assert datetime.fromisoformat(dep["updated_at"]) >= datetime.fromisoformat(dep["created_at"])

    keys = server.cli_json("keys", "list")["keys"]
    admin = next(k for k in keys if k["prefix"] == server.api_key.split("_")[1])
    assert admin["name"] == "admin" and admin["revoked_at"] is None
    assert all("key" not in k for k in keys)  # the plaintext is shown once, at creation
    assert server.api_key.split("_", 2)[2] not in json.dumps(keys)

    secrets = server.cli_json("secrets", "list")
    assert "cli_json_probe" in secrets["secrets"]
    assert "probe-value" not in json.dumps(secrets)


def test_predict_prints_the_answer(server, pushed):
    m = pushed("hello")["model"]["id"]
    res = server.cli("predict", m, "-d", '{"name": "cli"}')
    assert json.loads(res.stdout) == {"message": "Hello, cli!"}
    res = server.cli("predict", m, "-d", "@-", input='{"name": "stdin"}')
    assert json.loads(res.stdout) == {"message": "Hello, stdin!"}


def test_predict_takes_a_model_name_and_json_output(server, pushed):
    pushed("hello")
    res = server.cli("predict", "hello", "-d", '{"name": "by name"}', "--output", "json")
    assert json.loads(res.stdout) == {"message": "Hello, by name!"}
    assert res.stdout.startswith("{\n  ")  # one indented document, for people and jq alike
    # a streamed answer becomes the list of its events
    pushed("openai_methods")
    body = '{"model": "m", "stream": true, "messages": [{"role": "user", "content": "a b"}]}'
    res = server.cli("predict", "echo-chat", "--path", "sync/v1/chat/completions", "-d", body,
                     "-o", "json")
    events = json.loads(res.stdout)
    assert events[-1] == "[DONE]"
    text = "".join(e["choices"][0]["delta"].get("content", "") for e in events[:-1])
    assert text == "You said: a b"


def test_secrets_reach_the_model_and_are_never_listed_by_value(server):
    server.cli("secrets", "set", "webhook_token", input="s3cr3t-value\n")
    listed = server.cli_json("secrets", "list")
    assert "webhook_token" in listed["secrets"]
    assert "s3cr3t-value" not in json.dumps(listed)
    push = server.push(EXAMPLES / "secrets_env")
    assert push["deployment"]["status"] == "active"
    m = push["model"]["id"]
    good = json.loads(server.cli("predict", m, "-d", '{"token": "s3cr3t-value"}').stdout)
    assert good == {"model": "secrets-env", "style": "formal", "environment": "production",
                    "authorized": True}
    bad = json.loads(server.cli("predict", m, "-d", '{"token": "guess"}').stdout)
    assert bad["authorized"] is False
    assert "s3cr3t-value" not in server.log_text()
    assert "s3cr3t-value" not in server.cli("deployments", "logs", push["deployment"]["id"]).stdout


def test_errors_are_messages_not_tracebacks(server):
    res = server.cli("predict", "nosuchmodel", check=False)
    assert res.returncode == 1
    assert "404: no model with id nosuchmodel" in res.stderr
    assert "Traceback" not in res.stderr
    res = server.cli("deployments", "logs", "dnope", check=False)
    assert res.returncode == 1 and "no deployment with id dnope" in res.stderr


def test_push_rejects_a_folder_without_model_code(server, tmp_path):
    (tmp_path / "config.yaml").write_text("model_name: empty\n")
    res = server.cli("push", str(tmp_path), check=False)
    assert res.returncode == 1
    assert "model/model.py is missing" in res.stderr


def test_bad_management_bodies_and_configs_name_the_field(server, tmp_path):

    with server.client() as http:
        empty = http.post("/api/v1/keys", json={"name": ""})
        unknown = http.post("/api/v1/keys", json={"name": "x", "admin": True})
    assert empty.status_code == 400 and empty.json()["error"]["param"] == "name"
    assert unknown.status_code == 400 and unknown.json()["error"]["param"] == "admin"
    (tmp_path / "config.yaml").write_text("model_name: e\nengine:\n  weights: w.gguf\n  slug: s\n"
                                          "  max_batchez: 4\n")
    res = server.cli("push", str(tmp_path), check=False)
    assert res.returncode == 1
    assert "config.yaml: unknown key: engine.max_batchez" in res.stderr
