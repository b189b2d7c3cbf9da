"""`trestle serve` refuses, before it touches anything, to start on a taken port or on a
TRESTLE_HOME that another gateway is using."""

from __future__ import annotations

import os
import subprocess
import sys

from support import free_port


def _serve(home, *args):
    env = {**os.environ, "TRESTLE_HOME": str(home)}
    return subprocess.run([sys.executable, "-m", "trestle", "serve", *args], capture_output=True,
                          text=True, env=env, timeout=120)


def test_a_taken_port_is_named_with_how_to_pick_another(server, tmp_path):
    port = server.url.rsplit(":", 1)[1]
    home = tmp_path / "second-home"
    res = _serve(home, "--port", port)
    assert res.returncode == 1
    assert f"port {port} on 127.0.0.1 is already in use" in res.stderr
    assert "--port" in res.stderr and "Traceback" not in res.stderr
    assert not home.exists()  # nothing was created


def test_two_gateways_cannot_share_a_home_and_the_first_keeps_its_records(server):
    with server.client() as http:
        before = http.get("/api/v1/deployments").json()
    key = server.api_key
    res = _serve(server.home, "--port", str(free_port()))
    assert res.returncode == 1
    assert "another trestle serve is already using TRESTLE_HOME" in res.stderr
    assert "--home" in res.stderr and "Traceback" not in res.stderr
    assert server.api_key == key
    with server.client() as http:
        assert http.get("/api/v1/deployments").json() == before
        assert http.get("/health").status_code == 200
