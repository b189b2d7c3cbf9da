"""The OpenAI-style routes of the gateway (the `/model/...` data plane is `model_routes`).

    /v1/chat/completions, /v1/completions            Model APIs, by the `model` slug in the body,
                                                     or any deployment through the OpenAI bridge
                                                     (`baseten` field, `model: baseten/...`)
    /v1/direct/chat/completions, /v1/direct/completions   the direct bridge (OpenAI-mode deployments)
    /v1/messages                                     the Anthropic Messages API over the same targets
                                                     (`trestle.gateway.anthropic`; no count_tokens: 501)
    /v1/models, /v1/models/{id}                      the Model API slugs (a slug may contain `/`:
                                                     `org/name`) and `baseten/{model_id}`s
    /v1/embeddings, /api/datasets                    not built yet: a clear 501
(prompt endpoints, `/api/endpoints/...`, are `trestle.gateway.prompt_call`)
"""

from __future__ import annotations

from functools import partial

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.types import ASGIApp

from trestle.deploy.routing import RoutingTable
from trestle.errors import BadRequest, NotFound, NotImplementedYet
from trestle.gateway import anthropic, auth
from trestle.gateway.bridge import Bridge, parse_body
from trestle.gateway.proxy import Relay
from trestle.protocol.bridge import MODEL_PREFIX, target_of
from trestle.protocol.openai.responses import ModelCard, ModelList


async def model_api(routing: RoutingTable, bridge: Bridge, request: Request) -> ASGIApp:
    """`/v1/chat/completions` and `/v1/completions`: to the bridge target, else by the `model` slug."""
    body = await request.body()
    payload = parse_body(body)
    target = target_of(payload)
    if target is not None:
        return await bridge.openai(request, request.url.path, body, payload, target)
    model = payload.get("model")
    if not isinstance(model, str) or not model:
        raise BadRequest("`model` is required: a Model API slug (see GET /v1/models)", param="model")
    if (model_id := routing.slug_model(model)) is not None:
        auth.require_model(request.scope, model_id)
    replica = routing.route(slug=model)
    return Relay(
        replica, "POST", request.url.path, request.url.query, request.scope["headers"], body,
        request.state.request_id,
    )


async def direct(bridge: Bridge, request: Request) -> ASGIApp:
    return await bridge.direct(request, request.url.path.replace("/v1/direct", "/v1", 1))


def _cards(routing: RoutingTable) -> list[ModelCard]:
    cards = [ModelCard(id=slug, created=int(dep.created_at.timestamp()))
             for slug, dep in routing.served_slugs()]
    cards += [ModelCard(id=f"{MODEL_PREFIX}{model_id}", created=int(dep.created_at.timestamp()),
                        name=(dep.config or {}).get("model_name"))
              for model_id, dep in routing.production_models()]
    return cards


async def list_models(routing: RoutingTable, request: Request) -> JSONResponse:
    return JSONResponse(ModelList(data=_cards(routing)).model_dump(exclude_none=True))


async def retrieve_model(routing: RoutingTable, request: Request) -> JSONResponse:
    """`GET /v1/models/{id}` (OpenAI's `client.models.retrieve(id)`)."""
    slug = request.path_params["slug"]
    for card in _cards(routing):
        if card.id == slug:
            return JSONResponse(card.model_dump(exclude_none=True))
    raise NotFound(
        f"the model {slug!r} is not served here (see GET /v1/models)", param="model", code="model_not_found"
    )


def not_yet(feature: str):
    async def endpoint(request: Request):
        raise NotImplementedYet(f"{feature} is not implemented yet in this version of trestle")

    return endpoint


ANY = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]


def routes(routing: RoutingTable, bridge: Bridge) -> list[Route]:
    return [
        Route("/v1/chat/completions", partial(model_api, routing, bridge), methods=["POST"]),
        Route("/v1/completions", partial(model_api, routing, bridge), methods=["POST"]),
        Route("/v1/messages", anthropic.Messages(routing, bridge)),
        Route("/v1/messages/count_tokens", anthropic.count_tokens, methods=["POST"]),
        Route("/v1/direct/chat/completions", partial(direct, bridge), methods=["POST"]),
        Route("/v1/direct/completions", partial(direct, bridge), methods=["POST"]),
        Route("/v1/models", partial(list_models, routing), methods=["GET"]),
        Route("/v1/models/{slug:path}", partial(retrieve_model, routing), methods=["GET"]),
        *NOT_YET,
    ]


NOT_YET = [
    Route("/v1/embeddings", not_yet("/v1/embeddings"), methods=ANY),
    Route("/api/datasets/{rest:path}", not_yet("datastores"), methods=ANY),
]
