"""The console's pages and files, in front of the rest of the gateway.

    /                              the models page
    /console/{page}                models, playground, logs, metrics, datasets, endpoints, keys, signin
    /console/models/{model_id}     one model: its deployments and environments
    /console/static/...            the console's own script and style sheet
    /console/vendor/...            Alpine.js and Chart.js, copied from npm by `scripts/install`

The pages hold no data and need no key (the browser cannot send one when it navigates): their
script fetches everything from the APIs with the key the user signed in with. Every other path
goes on to the gateway's app untouched.
"""

from __future__ import annotations

from pathlib import Path

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse
from starlette.routing import Mount, Route, Router
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send

from trestle.errors import NotFound

HERE = Path(__file__).parent
VENDOR = HERE / "vendor"
VENDOR_FILES = ("alpine.min.js", "chart.umd.min.js")
PAGES = ("models", "playground", "logs", "metrics", "datasets", "endpoints", "keys", "signin")
NAV = [("models", "Models"), ("playground", "Playground"), ("logs", "Logs"), ("metrics", "Metrics"),
       ("datasets", "Datasets"), ("endpoints", "Endpoints"), ("keys", "Keys & usage")]

# Alpine.js's CSP build parses its attribute expressions itself (no `new Function`, so no
# 'unsafe-eval'); no inline script runs, nothing is loaded from elsewhere, and no other site may
# frame the console.
HEADERS = {
    "Content-Security-Policy": ("default-src 'self'; script-src 'self'; "
                                "style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
                                "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; "
                                "form-action 'self'"),
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
}

_templates = Environment(loader=FileSystemLoader(HERE / "templates"),
                         autoescape=select_autoescape(default=True, default_for_string=True))


def built() -> bool:
    """Whether the front-end packages were copied in (`scripts/install` runs `npm run build`)."""
    return all((VENDOR / name).is_file() for name in VENDOR_FILES)


def render(page: str, **context) -> HTMLResponse:
    html = _templates.get_template(f"{page}.html").render(page=page, nav=NAV, built=built(), **context)
    return HTMLResponse(html, headers=HEADERS)


async def index(request: Request) -> HTMLResponse:
    return render("models")


async def console_root(request: Request) -> RedirectResponse:
    return RedirectResponse("/console/models", status_code=307)


async def page(request: Request) -> HTMLResponse:
    name = request.path_params["page"]
    if name not in PAGES:
        raise NotFound(f"the console has no page {name[:60]!r}")
    return render(name)


async def model_page(request: Request) -> HTMLResponse:
    return render("model", model_id=request.path_params["model_id"])


class _NoFiles:
    """Where vendor/ was never built: say how to build it instead of a bare 404."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        raise NotFound("the console's front-end files are not built: run scripts/install "
                       "(it runs `npm ci && npm run build` in src/trestle/console)")


async def _not_found(scope: Scope, receive: Receive, send: Send) -> None:
    raise NotFound(f"the console has no page {scope['path'][:80]!r}")


class Console:
    """`/` and `/console/...` to the console; every other request to `app`."""

    def __init__(self, app: ASGIApp):
        self.app = app
        vendor: ASGIApp = StaticFiles(directory=VENDOR) if VENDOR.is_dir() else _NoFiles()
        self.router = Router(routes=[
            Route("/", index, methods=["GET", "HEAD"]),
            Route("/console", console_root, methods=["GET", "HEAD"]),
            Route("/console/models/{model_id}", model_page, methods=["GET", "HEAD"]),
            Route("/console/{page}", page, methods=["GET", "HEAD"]),
            Mount("/console/static", StaticFiles(directory=HERE / "static")),
            Mount("/console/vendor", vendor),
        ], default=_not_found)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope["path"] if scope["type"] == "http" else ""
        if path == "/" or path == "/console" or path.startswith("/console/"):
            scope["app"] = self.router  # a wrong method raises its 405 for the error boundary
            await self.router(scope, receive, send)
        else:
            await self.app(scope, receive, send)
