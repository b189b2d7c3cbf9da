"""The OpenAI-style routes of the gateway (the `/model/...` data plane is `model_routes`).

    /v1/chat/completions, /v1/completions            Model APIs, by the `model` slug in the body
    /v1/models, /v1/models/{slug}                    the Model API slugs served here (a slug
                                                     may contain `/`: `org/name`)
    /v1/direct, /v1/embeddings, /api/endpoints, /api/datasets   not built yet: a clear 501
"""

from __future__ import annotations

import json

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from trestle.deploy.manager import DeploymentManager
from trestle.errors import BadRequest, NotFound, NotImplementedYet
from trestle.gateway.proxy import UpstreamResponse
from trestle.protocol.openai.responses import ModelCard, ModelList


def _manager(request: Request) -> DeploymentManager:
    return request.app.state.manager


async def model_api(request: Request) -> UpstreamResponse:
    """`/v1/chat/completions` and `/v1/completions`: route by the body's `model` to an engine."""
    body = await request.body()
    try:
        payload = json.loads(body)
    except ValueError:
        raise BadRequest("body is not valid JSON") from None
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
    replica = _manager(request).route_slug(model)
    return UpstreamResponse(
        replica, "POST", request.url.path, request.url.query, request.scope["headers"], body,
        request.state.request_id,
    )


def _cards(manager: DeploymentManager) -> list[ModelCard]:
    return [ModelCard(id=slug) for slug in manager.slugs()]


async def list_models(request: Request) -> JSONResponse:
    return JSONResponse(ModelList(data=_cards(_manager(request))).model_dump())


async def retrieve_model(request: Request) -> JSONResponse:
    """`GET /v1/models/{slug}` (OpenAI's `client.models.retrieve(slug)`)."""
    slug = request.path_params["slug"]
    for card in _cards(_manager(request)):
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

routes = [
    Route("/v1/chat/completions", model_api, methods=["POST"]),
    Route("/v1/completions", model_api, methods=["POST"]),
    Route("/v1/models", list_models, methods=["GET"]),
    Route("/v1/models/{slug:path}", retrieve_model, methods=["GET"]),
    Route("/v1/direct/{rest:path}", not_yet("the direct OpenAI bridge (/v1/direct)"), methods=ANY),
    Route("/v1/embeddings", not_yet("/v1/embeddings"), methods=ANY),
    Route("/api/endpoints/{rest:path}", not_yet("prompt endpoints"), methods=ANY),
    Route("/api/datasets/{rest:path}", not_yet("datastores"), methods=ANY),
]
