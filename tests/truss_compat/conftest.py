"""Fixtures for the Truss-compatibility tests: one `trestle serve` (no auth, no built-in model)
for the module, and a helper that writes a Truss-style folder."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
import yaml

from support import Server, start_server


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Server:
    srv = start_server(tmp_path_factory.mktemp("home"), "--no-auth", "--no-builtin")
    yield srv
    srv.stop()


@pytest.fixture
def folder(tmp_path):
    """`folder(name, config, model_code, **files)`: a Truss-style folder under tmp_path."""

    def make(name: str, config: dict, model: str, **files: str) -> Path:
        root = tmp_path / name
        (root / "model").mkdir(parents=True)
        (root / "config.yaml").write_text(yaml.safe_dump({"model_name": name, **config}))
        (root / "model" / "model.py").write_text(textwrap.dedent(model))
        for rel, text in files.items():
            path = root / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(textwrap.dedent(text))
        return root

    return make


@pytest.fixture
def push(server: Server):
    """`push(path, *args)`: `trestle push --output json`, whatever its exit code (a failed
    deployment exits 1)."""

    def run(path: Path, *extra: str) -> dict:
        res = server.cli("push", str(path), "--output", "json", *extra, check=False)
        assert res.stdout, res.stderr
        return json.loads(res.stdout)

    return run
