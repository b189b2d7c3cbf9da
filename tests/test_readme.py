"""Every example in the README runs here, against the same kind of server the README starts."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from support import EXAMPLES, ROOT, start_server

README = (ROOT / "README.md").read_text()
BLOCKS = re.findall(r"```(\w+)\n(.*?)```", README, re.S)


def blocks(lang: str) -> list[str]:
    return [body for kind, body in BLOCKS if kind == lang]


def env_for(server) -> dict[str, str]:
    bindir = str(Path(sys.executable).parent)
    env = {**os.environ, "TRESTLE_HOME": str(server.home), "TRESTLE_URL": server.url,
           "PATH": bindir + os.pathsep + os.environ.get("PATH", "")}
    env.pop("TRESTLE_API_KEY", None)
    return env


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A server of the README's own, as a new user starts it (`trestle serve`, a fresh home).
    Its examples push `hello` again and promote it: on the session's shared server that would
    move `production` away from the deployment other tests pushed and count on."""
    srv = start_server(tmp_path_factory.mktemp("readme-home"), wait_for_slug=True)
    yield srv
    srv.stop()


def test_setup_commands_are_the_scripts_ci_runs():
    setup = blocks("sh")[0]
    assert "./scripts/serve" in setup and "./scripts/test" in setup
    for script in ("serve", "test"):
        assert os.access(ROOT / "scripts" / script, os.X_OK)
    assert "./scripts/test" in (ROOT / ".ci" / "run").read_text()


def test_model_listing_is_the_example_folder():
    listings = [b for b in blocks("python") if "class Model" in b]
    assert listings == [(EXAMPLES / "hello" / "model" / "model.py").read_text()]


def test_python_examples_run(server):
    runnable = [b for b in blocks("python") if "class Model" not in b]
    assert runnable
    for code in runnable:
        res = subprocess.run([sys.executable, "-c", code], env=env_for(server), capture_output=True,
                             text=True, timeout=300)
        assert res.returncode == 0, f"{code}\n---\n{res.stderr}"
        assert res.stdout.strip(), code


def test_bash_examples_run(server):
    script = "set -euo pipefail\ncd " + str(ROOT) + "\n" + "\n".join(blocks("bash"))
    res = subprocess.run(["bash", "-c", script], env=env_for(server), capture_output=True, text=True,
                         timeout=600)
    assert res.returncode == 0, res.stderr
    assert '{"message":"Hello, trestle!"}' in res.stdout
    assert '{"message":"Hello, again!"}' in res.stdout
    assert "Store it now" in res.stdout
    assert "webhook_token" in res.stdout
