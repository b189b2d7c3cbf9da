"""The model data plane: `/model/{model_id}/{target}/{rest}`, the hottest path of the gateway.

    target = environments/{env} | deployment/{deployment_id} | production | development
    rest   = predict | sync/{any worker path}

It is a plain ASGI app with one compiled pattern instead of a router and request objects: on
this path every tenth of a millisecond is added to every call of every model
(see bench/gateway.py). Errors are raised to the gateway's error boundary, like everywhere else.

The worker gets the path as the client sent it (`raw_path`, re-encoded where a byte is not
allowed in a URL), never the decoded one: `sync/a%3Fb` is the worker path `/a%3Fb`, not the
path `/a` with the query `b`.
"""

from __future__ import annotations

import re
from urllib.parse import quote_from_bytes, unquote

from starlette.types import Receive, Scope, Send

from trestle.deploy.routing import RoutingTable
from trestle.errors import NotFound
from trestle.gateway.proxy import Relay, query_of
from trestle.metrics import Metrics

_PATH = re.compile(
    r"^/model/(?P<model>[^/]+)/"
    r"(?:environments/(?P<env>[^/]+)|deployment/(?P<dep>[^/]+)|(?P<short>production|development))"
    r"/(?P<rest>.*)$"
)


# what may stay as is in a forwarded path: RFC 3986 pchar and "/", with "%" for what the client encoded
_PATH_SAFE = "/%:@!$&'()*+,;=-._~"


def raw_path(scope: Scope) -> str:
    """The path as the client sent it, percent-encoded where needed (ASCII)."""
    raw = scope.get("raw_path")
    if raw is None:
        return quote_from_bytes(scope["path"].encode(), safe=_PATH_SAFE)
    return quote_from_bytes(raw, safe=_PATH_SAFE)


def worker_path(rest: str) -> str:
    """`predict` -> `/predict`; `sync/v1/chat/completions` -> `/v1/chat/completions`."""
    if rest == "predict":
        return "/predict"
    if rest == "sync":
        return "/"
    if rest.startswith("sync/"):
        return rest[len("sync"):]
    raise NotFound(f"unknown route {rest!r}: use `predict` or `sync/{{path}}`")


async def read_body(receive: Receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


class ModelRoutes:
    def __init__(self, routing: RoutingTable, metrics: Metrics | None = None):
        self.routing = routing
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        match = _PATH.match(raw_path(scope))
        if match is None:
            raise NotFound(f"no route {scope['path']!r}: use /model/{{model_id}}/production/predict "
                           "or see the URL map in the README")
        g = match.groupdict()
        path = worker_path(g["rest"])
        model_id = unquote(g["model"])
        if g["dep"] is not None:
            environment = ""
            replica = self.routing.route(model_id, deployment_id=unquote(g["dep"]))
        else:
            environment = unquote(g["env"] or g["short"])
            replica = self.routing.route(model_id, environment=environment)
        if self.metrics is not None:
            self.metrics.route_to(scope, model_id, replica.deployment_id, environment)
        body = await read_body(receive)
        await Relay(replica, scope["method"], path, query_of(scope), scope["headers"], body,
                    scope["state"]["request_id"])(scope, receive, send)
