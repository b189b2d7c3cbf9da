"""The OpenAI-style routes of the gateway (the `/model/...` data plane is `model_routes`).

    /v1/chat/completions, /v1/completions            Model APIs, by the `model` slug in the body
    /v1/models, /v1/models/{slug}                    the Model API slugs served here (a slug
                                                     may contain `/`: `org/name`)
    /v1/direct, /v1/embeddings, /api/endpoints, /api/datasets   not built yet: a clear 501
"""

from __future__ import annotations

import json
from functools import partial

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from trestle.deploy.routing import RoutingTable
from trestle.errors import BadRequest, NotFound, NotImplementedYet
from trestle.gateway.proxy import Relay
from trestle.protocol.openai.responses import ModelCard, ModelList


async def model_api(routing: RoutingTable, request: Request) -> Relay:
    """`/v1/chat/completions` and `/v1/completions`: route by the body's `model` to an engine."""
    body = await request.body()
    try:
        payload = json.loads(body)
    except ValueError:
        raise BadRequest("body is not valid JSON") from None
    except RecursionError:
        raise BadRequest("body is nested too deeply") from None
    if not isinstance(payload, dict):
        raise BadRequest("body must be a JSON object")
    model = payload.get("model")
    if "baseten" in payload or (isinstance(model, str) and model.startswith("baseten/")):
        raise NotImplementedYet(
            "the OpenAI bridge to custom deployments (`extra_body={'baseten': ...}`) is not "
            "implemented yet; call /model/{model_id}/production/sync" + request.url.path + " instead",
            param="baseten",
        )
    if not isinstance(model, str) or not model:
        raise BadRequest("`model` is required: a Model API slug (see GET /v1/models)", param="model")
    replica = routing.route(slug=model)
    return Relay(
        replica, "POST", request.url.path, request.url.query, request.scope["headers"], body,
        request.state.request_id,
    )


def _cards(routing: RoutingTable) -> list[ModelCard]:
    return [ModelCard(id=slug, created=int(dep.created_at.timestamp()))
            for slug, dep in routing.served_slugs()]


async def list_models(routing: RoutingTable, request: Request) -> JSONResponse:
    return JSONResponse(ModelList(data=_cards(routing)).model_dump())


async def retrieve_model(routing: RoutingTable, request: Request) -> JSONResponse:
    """`GET /v1/models/{slug}` (OpenAI's `client.models.retrieve(slug)`)."""
    slug = request.path_params["slug"]
    for card in _cards(routing):
        if card.id == slug:
            return JSONResponse(card.model_dump())
    raise NotFound(
        f"the model {slug!r} is not served here (see GET /v1/models)", param="model", code="model_not_found"
    )


def not_yet(feature: str):
    async def endpoint(request: Request):
        raise NotImplementedYet(f"{feature} is not implemented yet in this version of trestle")

    return endpoint


ANY = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]


def routes(routing: RoutingTable) -> list[Route]:
    return [
        Route("/v1/chat/completions", partial(model_api, routing), methods=["POST"]),
        Route("/v1/completions", partial(model_api, routing), methods=["POST"]),
        Route("/v1/models", partial(list_models, routing), methods=["GET"]),
        Route("/v1/models/{slug:path}", partial(retrieve_model, routing), methods=["GET"]),
        *NOT_YET,
    ]


NOT_YET = [
    Route("/v1/direct/{rest:path}", not_yet("the direct OpenAI bridge (/v1/direct)"), methods=ANY),
    Route("/v1/embeddings", not_yet("/v1/embeddings"), methods=ANY),
    Route("/api/endpoints/{rest:path}", not_yet("prompt endpoints"), methods=ANY),
    Route("/api/datasets/{rest:path}", not_yet("datastores"), methods=ANY),
]
