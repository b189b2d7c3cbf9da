"""Streaming through the gateway: chunks arrive as produced, and a client that leaves is gone at the
worker too. The model waits on a gate file, so the tests steer it without timing anything."""

from __future__ import annotations

from pathlib import Path

import pytest

from support import ROOT, start_server, wait_for

GATED = ROOT / "tests" / "gateway" / "models" / "gated"


@pytest.fixture(scope="module")
def shared_files(tmp_path_factory):
    """A gateway whose workers share the test's files: the gated model reads its gate and writes
    what it saw in files the test names, so these workers run without the sandbox."""
    srv = start_server(tmp_path_factory.mktemp("home"), "--no-builtin", env={"TRESTLE_SANDBOX": "off"})
    yield srv
    srv.stop()


def _wait_for_text(path: Path) -> str:
    """The file's text once it has some (it may exist, empty, for a moment before)."""
    return wait_for(lambda: path.exists() and path.read_text(), f"{path.name} to be written")


def test_chunks_are_relayed_before_the_model_finishes(shared_files, tmp_path):
    server = shared_files
    m = server.push(GATED)["model"]["id"]
    gate, seen = tmp_path / "gate", tmp_path / "disconnected"
    with server.client() as http:
        with http.stream("POST", f"/model/{m}/production/predict",
                         json={"gate": str(gate), "disconnect_file": str(seen)}) as resp:
            assert resp.status_code == 200
            chunks = resp.iter_raw()
            # The model is blocked on the gate: a buffering proxy would never deliver this.
            assert next(chunks) == b"first\n"
            gate.touch()
            assert b"".join(chunks) == b"second\n"
    assert not seen.exists()


def test_client_disconnect_reaches_the_worker(shared_files, tmp_path):
    server = shared_files
    m = server.push(GATED)["model"]["id"]
    gate, seen = tmp_path / "gate", tmp_path / "disconnected"
    with server.client() as http:
        with http.stream("POST", f"/model/{m}/production/predict",
                         json={"gate": str(gate), "disconnect_file": str(seen)}) as resp:
            assert next(resp.iter_raw()) == b"first\n"
        # leaving the block closes the connection mid-stream
    assert _wait_for_text(seen) == "disconnected", "the worker never saw the client go away"
    assert not gate.exists()


def test_streaming_example_streams_words(server, pushed):
    m = pushed("streaming")["model"]["id"]
    with server.client() as http:
        with http.stream("POST", f"/model/{m}/production/predict",
                         json={"text": "one two three", "repeat": 2}) as resp:
            pieces = [c for c in resp.iter_raw() if c]
    assert b"".join(pieces) == b"one two three one two three "
