"""The worker for a config.yaml with `docker_server:`: the user's own HTTP server, proxied.

    docker_server:
      start_command: python server.py     # run with /bin/sh -c in the model folder
      server_port: 8000                   # where it listens, on 127.0.0.1
      predict_endpoint: /infer            # POST /predict goes there
      readiness_endpoint: /ready          # 200 once it can serve
      liveness_endpoint: /health          # 200 while it is alive

No Docker is involved: the worker starts `start_command` as its child (in the worker's sandbox,
with the config's `environment_variables` and the worker's interpreter folder first on `PATH`,
so console scripts of the deployment's requirements are found), polls `readiness_endpoint` until
it answers 200, and then proxies: `POST /predict` to `predict_endpoint`, any other path (what
the gateway sends for `.../sync/{path}`) to the same path. Status, headers and body come back as
the server sends them, streamed. The worker's `GET /health` is the usual health contract; once
ready it asks `liveness_endpoint` every `runtime.health_checks.period` seconds (within its
`timeout`, 5 s at most), and after `runtime.health_checks.failure_threshold`
failures in a row reports `unhealthy`: the gateway takes the replica out of rotation and restarts
it, as it does a model whose `is_healthy()` keeps failing. If the server exits, the worker exits
with it, and is restarted like any worker. Every replica runs the command, so they all want the same
`server_port`: a docker_server deployment runs one replica.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from trestle.errors import UpstreamError
from trestle.protocol.errors import error_response
from trestle.protocol.health import WorkerHealth, WorkerState, not_ready

logger = logging.getLogger("trestle.runtime")

HEALTH_PATH = "/health"
POLL_INTERVAL_S = 0.2
LIVENESS_TIMEOUT_S = 5.0
# Hop-by-hop headers (RFC 9110 7.6.1) and the ones httpx sets itself.
_DROP = {b"connection", b"keep-alive", b"transfer-encoding", b"te", b"trailer", b"upgrade",
         b"proxy-authorization", b"proxy-authenticate", b"host", b"content-length"}


class DockerServer:
    """The user's server process and the state the worker reports for it."""

    def __init__(self, config: Any, model_dir: Path) -> None:
        self.spec = config.docker_server
        self.config = config
        self.model_dir = Path(model_dir)
        self.state = WorkerState.LOADING
        self.error: str | None = None
        self.liveness_failures = 0  # liveness checks failed in a row
        self.proc: asyncio.subprocess.Process | None = None
        self._liveness: asyncio.Future | None = None
        self.client = httpx.AsyncClient(base_url=f"http://127.0.0.1:{self.spec.server_port}",
                                        timeout=httpx.Timeout(None, connect=10.0))

    async def run(self) -> None:
        """Start the server, wait until it is ready, then until it exits (and exit with it)."""
        env = {**os.environ, **self.config.environment_variables}
        env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '')}"
        logger.info("starting the server: %s", self.spec.start_command)
        self.proc = await asyncio.create_subprocess_exec(
            "/bin/sh", "-c", self.spec.start_command, cwd=self.model_dir, env=env,
            stdin=asyncio.subprocess.DEVNULL)
        waiting = asyncio.ensure_future(self.proc.wait())
        while self.state is WorkerState.LOADING:
            if waiting.done():
                self._fail(f"the server exited with code {self.proc.returncode} before it was ready "
                           f"(start_command: {self.spec.start_command})")
                return
            if await self._answers(self.spec.readiness_endpoint, timeout=POLL_INTERVAL_S * 5):
                self.state = WorkerState.READY
                logger.info("the server is ready on port %d", self.spec.server_port)
                self._liveness = asyncio.ensure_future(self.watch_liveness())
                break
            await asyncio.sleep(POLL_INTERVAL_S)
        code = await waiting
        logger.error("the server exited with code %s; stopping this worker", code)
        os.kill(os.getpid(), signal.SIGTERM)

    def _fail(self, error: str) -> None:
        self.state, self.error = WorkerState.FAILED, error
        logger.error("%s", error)

    async def _answers(self, path: str, *, timeout: float) -> bool:
        try:
            resp = await self.client.get(path, timeout=timeout)
        except httpx.HTTPError:
            return False
        return resp.status_code == 200

    def health(self) -> WorkerHealth:
        """The worker's state (`watch_liveness` turns a ready server `unhealthy`)."""
        return WorkerHealth(status=self.state, error=self.error)

    async def watch_liveness(self) -> None:
        """Once ready, every `runtime.health_checks.period` seconds ask the server's
        `liveness_endpoint`; `failure_threshold` failures in a row make the worker `unhealthy`
        (the gateway then restarts the replica). However often `/health` is asked, the server is
        checked once a period."""
        checks = self.config.runtime.health_checks
        path = self.spec.liveness_endpoint
        while self.state is WorkerState.READY:
            await asyncio.sleep(checks.period)
            if await self._answers(path, timeout=min(checks.timeout, LIVENESS_TIMEOUT_S)):
                self.liveness_failures = 0
                continue
            self.liveness_failures += 1
            logger.warning("the server did not answer %s with 200 (%d of %d)", path,
                           self.liveness_failures, checks.failure_threshold)
            if self.liveness_failures >= checks.failure_threshold:
                self.state = WorkerState.UNHEALTHY
                self.error = (f"the server did not answer {path} with 200 "
                              f"{self.liveness_failures} time(s) in a row")
                logger.error("%s; the replica is taken out of rotation and restarted", self.error)

    async def stop(self) -> None:
        if self._liveness is not None:
            self._liveness.cancel()
        if self.proc is not None and self.proc.returncode is None:
            self.proc.terminate()
            try:
                await asyncio.wait_for(self.proc.wait(), 10)
            except asyncio.TimeoutError:
                self.proc.kill()
        await self.client.aclose()


def build_app(config: Any, model_dir: Path, **_: Any):
    """The ASGI app of a docker_server worker."""
    server = DockerServer(config, model_dir)

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(server, receive, send)
            return
        if scope["type"] != "http":
            return
        request = Request(scope, receive)
        if scope["path"] == HEALTH_PATH and request.method == "GET":
            health = server.health()
            response: Response = JSONResponse(health.body(), status_code=health.http_status)
        elif server.state is not WorkerState.READY:
            response = error_response(not_ready(server.state, server.error, model="the server"))
        else:
            response = await _proxy(server, request)
        await response(scope, receive, send)

    return app


async def _lifespan(server: DockerServer, receive: Receive, send: Send) -> None:
    task: asyncio.Task | None = None
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            task = asyncio.get_running_loop().create_task(server.run())
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            if task is not None:
                task.cancel()
            await server.stop()
            await send({"type": "lifespan.shutdown.complete"})
            return


async def _proxy(server: DockerServer, request: Request) -> Response:
    path = request.url.path
    if path == "/predict":
        path = server.spec.predict_endpoint
    raw_path = path + (f"?{request.url.query}" if request.url.query else "")
    headers = [(k, v) for k, v in request.headers.raw if k.lower() not in _DROP]
    upstream = server.client.build_request(request.method, raw_path, headers=headers,
                                           content=await request.body())
    try:
        resp = await server.client.send(upstream, stream=True)
    except httpx.HTTPError as exc:
        return error_response(UpstreamError(f"the server did not answer: {type(exc).__name__}"))

    async def body() -> AsyncIterator[bytes]:
        try:
            async for chunk in resp.aiter_raw():
                yield chunk
        finally:
            await resp.aclose()

    out_headers = {k: v for k, v in resp.headers.items() if k.lower().encode() not in _DROP}
    return StreamingResponse(body(), status_code=resp.status_code, headers=out_headers)
