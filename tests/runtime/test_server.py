"""The entry point: Unix socket, request ids in logs, secrets file, bad arguments."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys

import httpx

from support import EXAMPLES, log_entries, wait_for


def test_serves_on_a_unix_socket(workers):
    worker = workers.start(EXAMPLES / "hello", unix_socket=True)

    async def call():
        transport = httpx.AsyncHTTPTransport(uds=str(worker.socket_path))
        async with httpx.AsyncClient(transport=transport, base_url="http://worker") as c:
            return await c.get("/health"), await c.post("/predict", json={"name": "socket"})

    health, res = asyncio.run(call())
    assert health.json() == {"status": "ready", "methods": ["predict"]}
    assert res.json() == {"message": "Hello, socket!"}


def test_request_id_is_echoed_and_on_every_log_line_of_the_request(workers):
    worker = workers.start(EXAMPLES / "request_aware")
    with worker.client() as c:
        res = c.post("/predict", json={"steps": 1}, headers={"x-request-id": "rid-7f3a"})
        fresh = c.post("/predict", json={"steps": 1})
    assert res.headers["x-request-id"] == "rid-7f3a"
    assert re.fullmatch(r"[0-9a-f]{32}", fresh.headers["x-request-id"])
    lines = wait_for(lambda: [e for e in log_entries(worker.log())
                              if e["request_id"] == "rid-7f3a" and "POST /predict" in e["message"]],
                     "the request's log line")
    assert "-> 200" in lines[0]["message"] and lines[0]["level"] == "INFO"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", lines[0]["time"])
    # The model's own log line (logging in user code) carries the id too.
    assert any(e["request_id"] == "rid-7f3a" and e["logger"] == "model.model"
               and e["message"].startswith("started") for e in log_entries(worker.log()))


def run_worker(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "trestle.runtime", *args], capture_output=True, text=True, timeout=60)


def test_folder_without_config_exits_with_a_message(tmp_path):
    res = run_worker("--model-dir", str(tmp_path), "--port", "1")
    assert res.returncode == 2
    assert "has no config.yaml" in res.stderr


def test_bad_secrets_file_exits_and_is_deleted(tmp_path):
    secrets = tmp_path / "secrets.json"
    secrets.write_text('["not", "an", "object"]')
    res = run_worker("--model-dir", str(EXAMPLES / "hello"), "--port", "1", "--secrets-file", str(secrets))
    assert res.returncode == 2
    assert "must be a JSON object" in res.stderr
    assert not secrets.exists()


def test_socket_or_port_is_required():
    res = run_worker("--model-dir", str(EXAMPLES / "hello"))
    assert res.returncode == 2
    assert "one of the arguments --socket --port is required" in res.stderr


THREADED_LOGGING = """
    import logging

    log = logging.getLogger("my.model")

    class Model:
        def predict(self, model_input):
            log.info("sync predict for %s", model_input["who"])
            if model_input.get("stream"):
                return self.pieces(model_input["who"])
            return "done"

        def pieces(self, who):
            log.info("sync generator for %s", who)
            yield "piece"
"""


def test_sync_code_in_threads_logs_with_the_request_id(workers, model_folder):
    worker = workers.start(model_folder(THREADED_LOGGING))
    with worker.client() as c:
        c.post("/predict", json={"who": "a"}, headers={"x-request-id": "thread-rid-1"})
        c.post("/predict", json={"who": "b", "stream": True}, headers={"x-request-id": "thread-rid-2"})
    log = wait_for(lambda: "sync generator for b" in worker.log() and worker.log(), "the log lines")
    said = {(e["request_id"], e["logger"], e["message"]) for e in log_entries(log)}
    assert ("thread-rid-1", "my.model", "sync predict for a") in said
    assert ("thread-rid-2", "my.model", "sync predict for b") in said
    assert ("thread-rid-2", "my.model", "sync generator for b") in said


def test_runtime_workers_do_not_import_the_engine():
    code = (
        "import sys; from trestle.runtime import server; from trestle.runtime.truss import app; "
        "assert 'trestle.engine.app' not in sys.modules and 'llama_cpp' not in sys.modules"
    )
    assert subprocess.run([sys.executable, "-c", code], timeout=60).returncode == 0


def test_an_idle_connection_outlives_the_gateways_pool_timeout(workers):
    """The gateway keeps idle connections to a worker for 60 s; the worker must not close them
    sooner (uvicorn's default 5 s), or a request reusing one as it closes fails with a 502."""
    import socket
    import time

    worker = workers.start(EXAMPLES / "hello", unix_socket=True)

    def health(s: socket.socket) -> bytes:
        s.sendall(b"GET /health HTTP/1.1\r\nhost: worker\r\n\r\n")
        answer = b""
        while not re.search(rb"\r\n\r\n\{.*\}", answer, re.S):
            chunk = s.recv(65536)
            if not chunk:
                return answer + b"<closed>"
            answer += chunk
        return answer

    with socket.socket(socket.AF_UNIX) as s:
        s.connect(str(worker.socket_path))
        assert health(s).startswith(b"HTTP/1.1 200")
        time.sleep(6)  # idle past uvicorn's default keep-alive: the subject of the test
        assert health(s).startswith(b"HTTP/1.1 200")
