"""A replica whose Model.is_healthy() keeps failing is taken out of rotation and restarted by the
supervisor (the worker side is tests/runtime/test_is_healthy.py)."""

from __future__ import annotations

import httpx

from support import ROOT, start_server, wait_for

MODELS = ROOT / "tests" / "gateway" / "models"


def test_an_unhealthy_replica_is_taken_out_of_rotation_and_restarted(tmp_path):
    srv = start_server(tmp_path / "home", "--no-builtin")
    try:
        push = srv.push(MODELS / "sickly")
        url = f"/model/{push['model']['id']}/production/predict"
        with srv.client() as http:
            first = http.post(url, json={"sick": True}).json()["instance"]

            def replaced():
                resp = http.post(url, json={})
                if resp.status_code == 503:  # out of rotation, the new one not ready yet
                    assert "no running replica" in resp.json()["error"]["message"], resp.text
                    return None
                body = resp.json()
                return body if body["instance"] != first else None

            body = wait_for(replaced, "the unhealthy replica to be restarted")
            assert body["sick"] is None  # a fresh instance
        restarts = [line for line in httpx.get(f"{srv.url}/metrics").text.splitlines()
                    if line.startswith("trestle_replica_restarts_total{") and 'reason="unhealthy"' in line]
        assert restarts and float(restarts[0].split()[-1]) >= 1
        log = srv.cli("deployments", "logs", push["deployment"]["id"]).stdout
        assert "health check failed" in log
    finally:
        srv.stop()
