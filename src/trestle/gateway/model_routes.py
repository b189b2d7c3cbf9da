"""The model data plane: `/model/{model_id}/{target}/{rest}`, the hottest path of the gateway.

    target = environments/{env} | deployment/{deployment_id} | production | development
    rest   = predict | sync/{any worker path}

It is a plain ASGI app with one compiled pattern instead of a router and request objects: on
this path every tenth of a millisecond is added to every call of every model
(see bench/gateway.py). Errors are raised to the gateway's error boundary, like everywhere else.
"""

from __future__ import annotations

import re

from starlette.types import Receive, Scope, Send

from trestle.deploy.routing import RoutingTable
from trestle.errors import NotFound
from trestle.gateway.proxy import Relay

_PATH = re.compile(
    r"^/model/(?P<model>[^/]+)/"
    r"(?:environments/(?P<env>[^/]+)|deployment/(?P<dep>[^/]+)|(?P<short>production|development))"
    r"/(?P<rest>.*)$"
)


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
    def __init__(self, routing: RoutingTable):
        self.routing = routing

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        match = _PATH.match(scope["path"])
        if match is None:
            raise NotFound(f"no route {scope['path']}: use /model/{{model_id}}/production/predict "
                           "or see the URL map in the README")
        g = match.groupdict()
        path = worker_path(g["rest"])
        if g["dep"] is not None:
            replica = self.routing.route(g["model"], deployment_id=g["dep"])
        else:
            replica = self.routing.route(g["model"], environment=g["env"] or g["short"])
        body = await read_body(receive)
        query = scope.get("query_string", b"").decode("latin-1")
        await Relay(replica, scope["method"], path, query, scope["headers"], body,
                    scope["state"]["request_id"])(scope, receive, send)
