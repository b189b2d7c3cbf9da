"""The gateway: one ASGI app for the whole edge (`trestle serve` runs it under uvicorn).

    ModelSubdomain -> RequestContext -> [AuthenticationMiddleware -> Authorize -> RateLimit]
        -> BodyLimit -> Dispatch
        /model/...   ModelRoutes (the data plane)          -> routing -> transport -> worker
        otherwise    the edge router: /v1 Model APIs, /api/v1 management, /api/datasets,
                     /api/endpoints (prompt endpoints), /health, /metrics
    / and /console/...: the web console's pages (trestle.console), before auth: they hold no data

A websocket handshake is refused with a 501 that says websockets are not served.
`GatewayApp` answers the ASGI lifespan itself: at startup it opens the `Gateway` (store, manager
and routing table, settings, metrics) and builds the request stack around it, passing it to
each part explicitly; at shutdown it closes it.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import socket
from functools import partial
from typing import IO

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.authentication import AuthenticationBackend
from starlette.middleware.authentication import AuthenticationMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, Router
from starlette.types import ASGIApp, Receive, Scope, Send

from trestle.console.routes import Console
from trestle.deploy.backend import ReplicaBackend
from trestle.errors import NotFound, NotImplementedYet
from trestle.gateway import management, openapi, routes
from trestle.gateway.access import auth
from trestle.gateway.endpoints import datasets, prompt_admin, prompt_call
from trestle.gateway.bridge.openai import Bridge
from trestle.gateway.context import Gateway
from trestle.gateway.middleware import BodyLimit, Dispatch, ModelSubdomain, RequestContext
from trestle.gateway.model_routes import ModelRoutes
from trestle.gateway.access.ratelimit import RateLimit
from trestle.protocol.errors import error_for
from trestle.settings import Settings
from trestle.store import Status

log = logging.getLogger("trestle.gateway")


async def health(request: Request) -> JSONResponse:
    return JSONResponse({"status": "ok"})


def engine_replicas(gateway: Gateway) -> list[tuple[str, str, str, object]]:
    """(model, deployment, replica index, Replica) of every running engine replica: their
    `/health` carries the scheduler's counters (`trestle_engine_*` on /metrics)."""
    out = []
    backend = gateway.manager.backend
    for dep in gateway.routing.deployments.values():
        if dep.status != Status.ACTIVE or not (dep.config or {}).get("engine"):
            continue
        listed = getattr(backend, "ready_replicas", None)
        replicas = listed(dep.id) if listed is not None else []
        out += [(dep.model_id, dep.id, str(r.index), r) for r in replicas]
    return out


class Edge:
    """Every route but the data plane, on a Starlette router; errors go up to the boundary."""

    def __init__(self, gateway: Gateway):
        async def metrics(request: Request) -> Response:
            await gateway.metrics.engines.refresh(engine_replicas(gateway))
            return Response(generate_latest(gateway.metrics.registry), media_type=CONTENT_TYPE_LATEST)

        async def openapi_json(request: Request) -> JSONResponse:
            return JSONResponse(openapi.document())

        bridge = Bridge(gateway.routing, gateway.metrics)
        self.router = Router(
            routes=[
                # the Model APIs and the bridge first: they are the hot ones (a router tries
                # its routes in order, and no other route's path starts with /v1/)
                *routes.routes(gateway.routing, bridge, gateway.metrics),
                Route("/health", health, methods=["GET"]),
                Route("/openapi.json", openapi_json, methods=["GET"]),
                Route("/metrics", metrics, methods=["GET"]),
                *management.routes(gateway),
                *prompt_admin.routes(gateway),
                *datasets.routes(gateway),
                Route("/api/endpoints/{endpoint_id}/completions",
                      partial(prompt_call.completions, gateway, bridge), methods=["POST"]),
            ],
            default=self.not_found,
        )

    @staticmethod
    async def not_found(scope: Scope, receive: Receive, send: Send) -> None:
        raise NotFound(f"no route {scope['path']}")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope["app"] = self.router  # so a route raises its 405 (HTTPException) instead of answering
        await self.router(scope, receive, send)


def build_app(gateway: Gateway) -> ASGIApp:
    """The request stack around an open gateway."""
    app: ASGIApp = BodyLimit(Dispatch(ModelRoutes(gateway.routing, gateway.metrics), Edge(gateway)),
                             gateway.settings)
    if gateway.settings.auth:
        backend: AuthenticationBackend = auth.ApiKeyBackend(gateway.store,
                                                            registry=gateway.metrics.registry)
        app = AuthenticationMiddleware(auth.Authorize(RateLimit(app, gateway.limiter)), backend,
                                       on_error=auth.on_error)
    return ModelSubdomain(RequestContext(Console(app), gateway.metrics))  # the console: no key


WEBSOCKETS_NOT_SERVED = NotImplementedYet(
    "websocket endpoints are not served by trestle (a Model's `websocket` method is not called); "
    "stream over HTTP instead: a generator returned by predict or chat_completions")


class GatewayApp:
    """The ASGI app `trestle serve` runs: opens the gateway at startup, closes it at shutdown."""

    def __init__(self, settings: Settings, backend: ReplicaBackend | None = None):
        self.settings = settings
        self.backend = backend
        self.gateway: Gateway | None = None
        self.app: ASGIApp | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self.lifespan(receive, send)
        elif scope["type"] == "websocket":  # the handshake is refused: 501 in the route's shape
            await error_for(scope["path"], WEBSOCKETS_NOT_SERVED, worker=False)(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    async def lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    self.gateway = await Gateway.open(self.settings, self.backend)
                except Exception as exc:
                    log.exception("the gateway could not start")
                    await send({"type": "lifespan.startup.failed", "message": repr(exc)})
                    return
                self.app = build_app(self.gateway)
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self.gateway is not None:
                    await self.gateway.close()
                await send({"type": "lifespan.shutdown.complete"})
                return


class CannotStart(Exception):
    """`trestle serve` refuses to start (port taken, TRESTLE_HOME in use); nothing was changed."""


def check_port(host: str, port: int) -> None:
    """Fail before anything is opened if the port is taken (uvicorn would only find out after
    the store, the workers and the built-in models were started)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds it
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise CannotStart(f"port {port} on {host} is already in use (another trestle serve?); "
                                  "pick another with --port N") from None
            raise CannotStart(f"cannot listen on {host}:{port}: {exc.strerror}") from None


def lock_home(settings: Settings) -> IO:
    """One gateway per TRESTLE_HOME: its store, deployments and worker sockets are this
    process's alone. The lock (flock on TRESTLE_HOME/gateway.lock) lasts while the returned file
    stays open and goes with the process, however it ends."""
    settings.home.mkdir(parents=True, exist_ok=True)
    f = open(settings.home / "gateway.lock", "a+")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.close()
        raise CannotStart(f"another trestle serve is already using TRESTLE_HOME {settings.home}; "
                          "stop it, or give this one its own data directory with --home") from None
    return f


# How long an idle client connection is kept. Longer than clients keep theirs (httpx 5 s, aiohttp
# 15 s, as nginx's 75 s default is): a client then never sends a request on a connection that the
# gateway is closing at that moment, which it would see as "server disconnected".
CLIENT_KEEP_ALIVE_S = 75


def run(settings: Settings) -> None:
    """Run the gateway in the foreground; raises CannotStart, having touched nothing, when the
    port or TRESTLE_HOME is already taken."""
    import uvicorn

    from trestle.requestid import configure_logging

    check_port(settings.host, settings.port)
    lock = lock_home(settings)
    configure_logging()
    skip_unused_log_fields()
    app = GatewayApp(settings)
    config = uvicorn.Config(
        app, host=settings.host, port=settings.port, loop="uvloop", http="httptools",
        lifespan="on", access_log=False, log_config=None,
        server_header=False,  # no `server: uvicorn` banner (and one header less per answer)
        timeout_keep_alive=CLIENT_KEEP_ALIVE_S,
        timeout_graceful_shutdown=settings.drain_timeout,
    )
    try:
        draining_server(config, app).run()
    finally:
        lock.close()


def skip_unused_log_fields() -> None:
    """The gateway writes an access line per request, in `requestid.LOG_FORMAT`, which names no
    source line, thread or process: Python's logging then need not look them up for each record
    (the settings of its "Optimization" section)."""
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False


def draining_server(config, app: GatewayApp):
    """uvicorn's server, telling the gateway when it is asked to stop.

    On SIGTERM or Ctrl-C uvicorn stops accepting connections, closes idle ones, and waits up to
    `Settings.drain_timeout` for the requests and streams in flight (then cancels them); the
    ASGI lifespan's shutdown then stops the workers. Answers that would last forever (a log
    being followed) end at once, on `Gateway.draining`."""
    import uvicorn

    class Server(uvicorn.Server):
        def handle_exit(self, sig, frame) -> None:
            if not self.should_exit:
                log.info("stopping: letting requests in flight finish (up to %gs), then "
                         "stopping the workers", app.settings.drain_timeout)
            if app.gateway is not None:
                app.gateway.draining = True
            super().handle_exit(sig, frame)

    return Server(config)
