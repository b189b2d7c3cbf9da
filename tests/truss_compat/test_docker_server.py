"""A `docker_server:` folder: its start_command runs as the replica's process (no Docker) and
the gateway reaches it like any worker, readiness and liveness polled on its own paths."""

from __future__ import annotations

import asyncio
import json
from types import SimpleNamespace

from support import free_port, wait_for
from trestle.protocol.health import WorkerState
from trestle.runtime.config import DockerServerSection, HealthChecksSection, RuntimeSection
from trestle.runtime.truss.docker_server import DockerServer

SERVER = """
    import json
    import os
    import sys
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


    class Handler(BaseHTTPRequestHandler):
        def _send(self, status, body):
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("x-served-by", "tiny-server")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):
            if self.path in ("/ready", "/alive"):
                self._send(200, {"ok": True})
            else:
                self._send(404, {"missing": self.path})

        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["content-length"])) or b"{}")
            if self.path == "/infer":
                self._send(200, {"echo": body, "greeting": os.environ["GREETING"]})
            elif self.path == "/teapot":
                self._send(418, {"short": "and stout"})
            else:
                self._send(404, {"missing": self.path})

        def log_message(self, *args):
            print("tiny-server:", self.path, flush=True)


    ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
"""


def test_a_docker_server_folder_is_started_and_proxied(server, tmp_path, push):
    port = free_port()
    root = tmp_path / "tiny"
    root.mkdir()
    (root / "server.py").write_text(__import__("textwrap").dedent(SERVER))
    (root / "config.yaml").write_text(json.dumps({
        "model_name": "tiny-server",
        "environment_variables": {"GREETING": "hi"},
        "docker_server": {"start_command": f"python server.py {port}", "server_port": port,
                          "predict_endpoint": "/infer", "readiness_endpoint": "/ready",
                          "liveness_endpoint": "/alive"},
    }))
    result = push(root)
    assert result["deployment"]["status"] == "active", result["deployment"]["error"]
    base = f"/model/{result['model']['id']}/production"
    with server.client() as http:
        resp = http.post(f"{base}/predict", json={"x": 1})
        assert resp.status_code == 200, resp.text
        assert resp.json() == {"echo": {"x": 1}, "greeting": "hi"}
        assert resp.headers["x-served-by"] == "tiny-server"
        teapot = http.post(f"{base}/sync/teapot", json={})
        assert teapot.status_code == 418 and teapot.json() == {"short": "and stout"}
        missing = http.get(f"{base}/sync/elsewhere")
        assert missing.status_code == 404 and missing.json() == {"missing": "/elsewhere"}
    log = server.cli("deployments", "logs", result["deployment"]["id"]).stdout
    assert "tiny-server: /infer" in log


def test_a_docker_server_that_exits_fails_the_deployment(server, tmp_path, push):
    root = tmp_path / "dies"
    root.mkdir()
    (root / "config.yaml").write_text(json.dumps({
        "model_name": "dies", "docker_server": {"start_command": "echo no weights >&2; exit 4"}}))
    result = push(root)
    dep = result["deployment"]
    assert dep["status"] == "failed"
    assert "exited with code 4 before it was ready" in dep["error"]


SICKENING_SERVER = """
    import json
    import sys
    import uuid
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    SICK = []
    PROCESS = uuid.uuid4().hex  # pids repeat in the sandbox's own pid namespace


    class Handler(BaseHTTPRequestHandler):
        def _send(self, status, body):
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):
            self._send(500 if SICK and self.path == "/alive" else 200, {"sick": bool(SICK)})

        def do_POST(self):
            self.rfile.read(int(self.headers["content-length"]))
            if self.path == "/sicken":
                SICK.append(True)
            self._send(200, {"process": PROCESS})

        def log_message(self, *args):
            pass


    ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
"""


def test_a_docker_server_failing_its_liveness_check_is_restarted(server, tmp_path, push):
    port = free_port()
    root = tmp_path / "sickening"
    root.mkdir()
    (root / "server.py").write_text(__import__("textwrap").dedent(SICKENING_SERVER))
    (root / "config.yaml").write_text(json.dumps({
        "model_name": "sickening",
        "runtime": {"liveness_timeout": 3, "health_checks": {"failure_threshold": 2, "period": 1}},
        "docker_server": {"start_command": f"python server.py {port}", "server_port": port,
                          "readiness_endpoint": "/ready", "liveness_endpoint": "/alive"},
    }))
    result = push(root)
    assert result["deployment"]["status"] == "active", result["deployment"]["error"]
    dep = result["deployment"]["id"]
    base = f"/model/{result['model']['id']}/production"
    with server.client() as http:
        first = http.post(f"{base}/predict", json={}).json()["process"]
        assert http.post(f"{base}/sync/sicken", json={}).status_code == 200  # /alive answers 500 now

        def restarted() -> bool:
            replicas = http.get(f"/api/v1/deployments/{dep}").json()["replicas"] or []
            return any(r["restarts"] >= 1 and r["state"] == "ready" for r in replicas)

        wait_for(restarted, "the replica restarted after failing its liveness checks")
        again = http.post(f"{base}/predict", json={})
        assert again.status_code == 200, again.text
        assert again.json()["process"] != first  # a new server process
    log = server.cli("deployments", "logs", dep).stdout
    assert "did not answer /alive with 200" in log


def test_liveness_is_checked_once_a_period_however_often_health_is_asked(tmp_path):
    """Asking the worker's /health often (the gateway, metrics, a console) does not spend the
    server's failure threshold: the liveness endpoint is asked once a period."""
    def server_with(period: float) -> DockerServer:
        checks = HealthChecksSection(period=period, failure_threshold=2, timeout=1)
        config = SimpleNamespace(  # nothing listens on the port: every liveness check fails
            docker_server=DockerServerSection(start_command="true", server_port=free_port()),
            runtime=RuntimeSection(health_checks=checks), environment_variables={})
        server = DockerServer(config, tmp_path)
        server.state = WorkerState.READY
        return server

    async def scenario():
        patient = server_with(period=3600)
        watcher = asyncio.ensure_future(patient.watch_liveness())
        for _ in range(5):
            assert patient.health().status is WorkerState.READY
            await asyncio.sleep(0)
        watcher.cancel()
        await patient.stop()

        prompt = server_with(period=0.01)
        watcher = asyncio.ensure_future(prompt.watch_liveness())
        await asyncio.wait_for(watcher, 60)  # it ends when the server is found unhealthy
        assert prompt.health().status is WorkerState.UNHEALTHY
        assert "did not answer / with 200 2 time(s) in a row" in prompt.health().error
        await prompt.stop()

    asyncio.run(scenario())
