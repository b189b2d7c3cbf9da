"""The OpenAI-style routes of the gateway (the `/model/...` data plane is `model_routes`).

    /v1/chat/completions, /v1/completions            Model APIs, by the `model` slug in the body,
                                                     or any deployment through the OpenAI bridge
                                                     (`baseten` field, `model: baseten/...`)
    /v1/direct/chat/completions, /v1/direct/completions   the direct bridge (OpenAI-mode deployments)
    /v1/messages                                     the Anthropic Messages API over the same targets
                                                     (`trestle.gateway.bridge.anthropic`; no count_tokens: 501)
    /v1/embeddings                                   embedding Model APIs, by the `model` slug, or
                                                     a bridge target's Model `embeddings` method
    /v1/responses                                    a bridge target's Model `responses` method
    /v1/models, /v1/models/{id}                      the Model API slugs (a slug may contain `/`:
                                                     `org/name`) and `baseten/{model_id}`s
    /api/endpoints                                   prompt endpoints: `trestle.gateway.endpoints.prompt_call`

A slug is served by an engine of one kind: an LLM (`llama_cpp`) for the completion routes, an
embedding model (`sentence_transformers`) for `/v1/embeddings`; the wrong one is a 400 that says so.
"""

from __future__ import annotations

from functools import partial

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.types import ASGIApp

from trestle.deploy.config import EMBEDDINGS_KIND
from trestle.deploy.routing import PRODUCTION, RoutingTable
from trestle.errors import BadRequest, NotFound
from trestle.gateway.access import auth
from trestle.gateway.bridge import anthropic
from trestle.gateway.bridge.openai import Bridge, parse_body
from trestle.gateway.proxy import Relay, query_of
from trestle.metrics import Metrics
from trestle.protocol.bridge import MODEL_PREFIX, target_of
from trestle.protocol.openai.responses import ModelCard, ModelList


async def model_api(routing: RoutingTable, bridge: Bridge, request: Request,
                    metrics: Metrics | None = None) -> ASGIApp:
    """`/v1/chat/completions` and `/v1/completions`: to the bridge target, else by the `model` slug."""
    body = await request.body()
    payload = parse_body(body)
    target = target_of(payload)
    if target is not None:
        return await bridge.openai(request, request.scope["path"], body, payload, target)
    model = payload.get("model")
    if not isinstance(model, str) or not model:
        raise BadRequest("`model` is required: a Model API slug (see GET /v1/models)", param="model")
    return _relay_to_slug(routing, request, body, model, EMBEDDINGS_KIND, wanted=False, metrics=metrics)


async def embeddings(routing: RoutingTable, bridge: Bridge, metrics: Metrics | None,
                     request: Request) -> ASGIApp:
    """`/v1/embeddings`: to the embedding model serving the `model` slug (its worker validates
    the rest of the body: input, encoding_format, dimensions), or to a bridge target's Model
    that defines `embeddings`."""
    body = await request.body()
    payload = parse_body(body)
    if (target := target_of(payload)) is not None:  # a deployment named as the bridge does
        return await bridge.relay(request, request.scope["path"], body, payload, target)
    model = payload.get("model")
    if not isinstance(model, str) or not model:
        raise BadRequest("`model` is required: an embeddings Model API slug (see GET /v1/models)",
                         param="model")
    return _relay_to_slug(routing, request, body, model, EMBEDDINGS_KIND, wanted=True, metrics=metrics)


async def responses(bridge: Bridge, request: Request) -> ASGIApp:
    """`/v1/responses`: to a deployment whose Model defines `responses`, named as the bridge does
    (no built-in Model API serves it)."""
    body = await request.body()
    payload = parse_body(body)
    target = target_of(payload)
    if target is None:
        raise BadRequest("/v1/responses is served only by deployments whose Model defines "
                         "`responses`: name one with model='baseten/MODEL_ID' or "
                         "extra_body={'baseten': {'model_id': 'MODEL_ID'}}", param="model")
    return await bridge.relay(request, request.scope["path"], body, payload, target)


def _relay_to_slug(routing: RoutingTable, request: Request, body: bytes, slug: str, kind: str,
                   *, wanted: bool, metrics: Metrics | None) -> ASGIApp:
    """Relay to the deployment serving `slug`, whose engine kind must be `kind` (`wanted`) or
    must not be (`not wanted`)."""
    if (model_id := routing.slug_model(slug)) is not None:
        auth.require_model(request.scope, model_id)
        engine = (routing.target(model_id).config or {}).get("engine") or {}
        if (engine.get("kind") == kind) != wanted:
            what = "an embedding model" if engine.get("kind") == EMBEDDINGS_KIND else "a text-generation model"
            raise BadRequest(f"the model `{slug}` is {what}: {request.url.path} is not served by it",
                             param="model", code="wrong_model_kind")
    replica = routing.route(slug=slug)
    if metrics is not None:
        metrics.route_to(request.scope, routing.deployments[replica.deployment_id].model_id,
                         replica.deployment_id, PRODUCTION)
    return Relay(
        replica, "POST", request.scope["path"], query_of(request.scope), request.scope["headers"], body,
        request.state.request_id,
    )


async def _model_api(routing: RoutingTable, bridge: Bridge, metrics: Metrics | None,
                     request: Request) -> ASGIApp:
    return await model_api(routing, bridge, request, metrics)


async def direct(bridge: Bridge, request: Request) -> ASGIApp:
    return await bridge.direct(request, request.scope["path"].replace("/v1/direct", "/v1", 1))


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


def routes(routing: RoutingTable, bridge: Bridge, metrics: Metrics | None = None) -> list[Route]:
    api = partial(_model_api, routing, bridge, metrics)
    return [
        Route("/v1/chat/completions", api, methods=["POST"]),
        Route("/v1/completions", api, methods=["POST"]),
        Route("/v1/messages", anthropic.Messages(routing, bridge)),
        Route("/v1/messages/count_tokens", anthropic.count_tokens, methods=["POST"]),
        Route("/v1/direct/chat/completions", partial(direct, bridge), methods=["POST"]),
        Route("/v1/direct/completions", partial(direct, bridge), methods=["POST"]),
        Route("/v1/embeddings", partial(embeddings, routing, bridge, metrics), methods=["POST"]),
        Route("/v1/responses", partial(responses, bridge), methods=["POST"]),
        Route("/v1/models", partial(list_models, routing), methods=["GET"]),
        Route("/v1/models/{slug:path}", partial(retrieve_model, routing), methods=["GET"]),
    ]

