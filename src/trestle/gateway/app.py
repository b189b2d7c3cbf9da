"""The gateway: one ASGI app for the whole edge (`trestle serve` runs it under uvicorn).

Startup opens the store, creates the first API key when auth is on and none exists (written to
`TRESTLE_HOME/admin_key`, never logged), starts the replica backend, brings back the deployments
that were up, and deploys the built-in Model APIs.
"""

from __future__ import annotations

import contextlib
import logging
import os

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp

from trestle.deploy.local import LocalProcessBackend
from trestle.deploy.manager import DeploymentManager
from trestle.gateway import management, routes
from trestle.gateway.middleware import Dispatch, ModelHost, RequestContext
from trestle.gateway.model_routes import ModelRoutes
from trestle.protocol.errors import exception_handlers
from trestle.settings import Settings
from trestle.store import Store

log = logging.getLogger("trestle.gateway")


async def health(request: Request) -> JSONResponse:
    return JSONResponse({"status": "ok"})


async def metrics(request: Request) -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


async def ensure_admin_key(store: Store, settings: Settings) -> None:
    if await store.count_api_keys() > 0:
        return
    _, plaintext = await store.create_api_key("admin")
    path = settings.admin_key_file
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(plaintext + "\n")
    log.info("created the first API key; it is in %s (readable by you only)", path)


async def deploy_builtin_models(manager: DeploymentManager, store: Store, settings: Settings) -> None:
    """Deploy the built-in Model APIs once; later starts bring them back like any deployment."""
    import yaml

    from trestle.engine.builtin import builtin_config

    config = builtin_config()
    name = config["model_name"]
    if await store.get_model_by_name(name) is not None:
        return
    folder = settings.home / "builtin" / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    log.info("deploying the built-in model %s", name)
    await manager.push_folder(folder)


def build_app(settings: Settings) -> ASGIApp:
    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette):
        settings.home.mkdir(parents=True, exist_ok=True)
        store = await Store.open(settings.db_url)
        manager = DeploymentManager(store, LocalProcessBackend(), settings)
        app.state.store, app.state.manager = store, manager
        try:
            if settings.auth:
                await ensure_admin_key(store, settings)
            await manager.start()
            if settings.builtin_models:
                await deploy_builtin_models(manager, store, settings)
            yield
        finally:
            await manager.close()
            await store.close()

    edge = Starlette(
        routes=[
            Route("/health", health, methods=["GET"]),
            Route("/metrics", metrics, methods=["GET"]),
            *management.routes,
            *routes.routes,
        ],
        exception_handlers=exception_handlers("gateway"),
        lifespan=lifespan,
    )
    state = edge.state
    data_plane = ModelRoutes(lambda: state.manager)
    return RequestContext(ModelHost(Dispatch(data_plane, edge)), auth=settings.auth, state=state)


def run(settings: Settings) -> None:
    import uvicorn

    from trestle.requestid import configure_logging

    configure_logging()
    uvicorn.run(
        build_app(settings), host=settings.host, port=settings.port, loop="uvloop",
        http="httptools", access_log=False, log_config=None, timeout_graceful_shutdown=30,
    )
