"""Workers cannot read what is not theirs: a scrubbed environment and a bubblewrap sandbox.

A model that declares no secrets tries to open the store, the admin key, the secrets key, another
deployment's folder, the gateway's own process and the other sockets, and reads its environment:
all refused or absent. A model that declares a secret still gets it, and no secret is stored in
plaintext.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from support import start_server
from trestle.deploy import sandbox

MODELS = Path(__file__).resolve().parent / "models"
SECRET = "kt-7d1f0c9e-not-for-snoop"
ALLOWED_ENV = {"PATH", "HOME", "PWD", "LANG", "PYTHONUNBUFFERED", "TRESTLE_PARENT_PID"}  # PWD: HOME

needs_bwrap = pytest.mark.skipif(not sandbox.detect().enabled, reason=sandbox.detect().reason)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    srv = start_server(tmp_path_factory.mktemp("sandbox-home"), "--no-builtin")
    with srv.client() as c:
        assert c.put("/api/v1/secrets/keeper_token", json={"value": SECRET}).status_code == 200
    keeper = srv.push(MODELS / "keeper")
    snoop = srv.push(MODELS / "snoop")
    yield srv, keeper, snoop
    srv.stop()


def _predict(srv, pushed, body):
    with srv.client() as c:
        r = c.post(f"/model/{pushed['model']['id']}/production/predict", json=body)
    assert r.status_code == 200, r.text
    return r.json()


@needs_bwrap
def test_a_model_cannot_read_the_store_the_keys_or_another_deployment(served):
    srv, keeper, snoop = served
    home = srv.home
    (other,) = (home / "deployments").glob("keeper-*")
    assert (other / "src" / "model" / "model.py").exists()
    (own,) = (home / "deployments").glob("snoop-*")
    targets = [
        home / "trestle.db", home / "admin_key", home / "secrets.key",
        other, other / "src" / "model" / "model.py",
        Path(f"/proc/{srv.proc.pid}/environ"), Path(f"/proc/{srv.proc.pid}/root/etc/hostname"),
    ]
    for path in targets[:3]:
        assert path.exists(), path  # they are there, for the gateway
    out = _predict(srv, snoop, {"paths": [str(p) for p in [*targets, home, home / "deployments"]]})
    for path in targets:
        assert "refused" in out["paths"][str(path)], (path, out["paths"][str(path)])
    # The folders on the way to its own are bare: only the way to its own.
    assert out["paths"][str(home)] == {"listed": ["deployments"]}
    assert out["paths"][str(home / "deployments")] == {"listed": [own.name]}
    # Its own environment: nothing of the gateway's, no key or path of trestle's data.
    assert set(out["environ"]) <= ALLOWED_ENV, out["environ"]
    flat = repr(out["environ"])
    assert "TRESTLE_HOME" not in flat and srv.api_key not in flat and str(home / "trestle.db") not in flat
    # It can write its own home, inside its deployment's folder.
    assert Path(out["write_home"]).parent == own / "home"
    assert (own / "home" / "note.txt").read_text() == "mine"
    if os.geteuid() == 0:  # trestle as root: the worker is a user of its own
        assert out["uid"] == sandbox.worker_uid(snoop["deployment"]["id"])


@needs_bwrap
def test_a_model_sees_only_its_own_socket_folder(served):
    srv, keeper, snoop = served
    # The gateway's run folder holds one folder per replica; the model sees only its own.
    runs = [p for p in Path("/tmp").glob("trestle-*") if (p / "gateway.pid").exists()
            and (p / "gateway.pid").read_text().strip() == str(srv.proc.pid)]
    assert len(runs) == 1, runs
    run = runs[0]
    mine = f"{snoop['deployment']['id']}-0"
    assert sorted(p.name for p in run.iterdir() if p.is_dir()) == sorted(
        [mine, f"{keeper['deployment']['id']}-0"])
    out = _predict(srv, snoop, {"paths": [str(run), str(run / f"{keeper['deployment']['id']}-0")]})
    assert out["paths"][str(run)] == {"listed": [mine]}
    assert "refused" in out["paths"][str(run / f"{keeper['deployment']['id']}-0")]


def test_a_model_that_declares_a_secret_gets_it_and_the_store_holds_no_plaintext(served):
    srv, keeper, snoop = served
    assert _predict(srv, keeper, {}) == {"token": SECRET}
    for path in srv.home.glob("trestle.db*"):
        assert SECRET.encode() not in path.read_bytes(), path.name
    key = srv.home / "secrets.key"
    assert key.exists() and key.stat().st_mode & 0o777 == 0o600


def test_the_environment_is_scrubbed_without_the_sandbox_too(tmp_path, monkeypatch):
    monkeypatch.setenv("TRESTLE_SANDBOX", "off")
    monkeypatch.setenv("TRESTLE_TEST_GATEWAY_ONLY", "leak-me")
    srv = start_server(tmp_path / "home", "--no-builtin")
    try:
        assert "WITHOUT a sandbox (TRESTLE_SANDBOX=off)" in srv.log_text()
        snoop = srv.push(MODELS / "snoop")
        out = _predict(srv, snoop, {})
        assert set(out["environ"]) <= ALLOWED_ENV, out["environ"]
        assert "leak-me" not in repr(out["environ"])
    finally:
        srv.stop()


@needs_bwrap
def test_serve_says_the_workers_are_sandboxed(served):
    srv, _, _ = served
    assert "workers run sandboxed with bubblewrap" in srv.log_text()
