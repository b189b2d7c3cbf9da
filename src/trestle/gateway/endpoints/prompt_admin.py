"""Managing prompt endpoints, model prices and usage records (the management API, admin keys).

    POST   /api/v1/endpoints                 an endpoint file (JSON) -> 201 the endpoint, version 1
    GET    /api/v1/endpoints                 {endpoints: [...]}
    GET    /api/v1/endpoints/{ref}           one endpoint (id or name; `?version=N` for an older one)
    PUT    /api/v1/endpoints/{ref}           an endpoint file -> the endpoint's next version
    DELETE /api/v1/endpoints/{ref}           the endpoint and its versions (usage records stay)
    PUT    /api/v1/prices/{model}            {prompt, completion} per 1M tokens -> the price
    GET    /api/v1/prices                    {prices: [...]}
    GET    /api/v1/usage?endpoint=&since=&limit=   {records: [...newest first], totals: {...}}

A definition is checked before it is stored: the wire type (`trestle.protocol.endpoints`), every
template compiles (400 naming it), `defaults` are sampling fields with valid values, the model
is one this server knows (a Model API slug or `baseten/{model_id}[/{deployment_id}]`), and the
datasets of search bindings exist.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from functools import partial

from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from trestle.deploy.routing import RoutingTable
from trestle.endpoints.retrieval.search import check_query
from trestle.endpoints.templates import EndpointTemplates
from trestle.errors import BadRequest, NotFound
from trestle.gateway.context import Gateway
from trestle.protocol import endpoints as wire
from trestle.protocol.bridge import target_of
from trestle.protocol.validation import parse_body
from trestle.store.records import Endpoint, Price, UsageRecord

PREFIX = "/api/v1"
MAX_USAGE_LIMIT = 10_000
_DURATION = re.compile(r"^(\d{1,9})([smhdw])$")
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def _json(model: BaseModel, status_code: int = 200) -> JSONResponse:
    return JSONResponse(model.model_dump(mode="json"), status_code=status_code)


def endpoint_out(endpoint: Endpoint) -> wire.EndpointOut:
    spec = wire.EndpointSpec.model_validate(endpoint.spec)
    return wire.EndpointOut(
        **spec.model_dump(), id=endpoint.id, version=endpoint.version,
        variables=EndpointTemplates.compile(spec).variables,
        created_at=endpoint.created_at, updated_at=endpoint.updated_at,
    )


def check_model(routing: RoutingTable, model: str) -> None:
    target = target_of({"model": model})
    if target is not None:
        try:
            routing.target(target.model_id, deployment_id=target.deployment_id, param="model")
        except NotFound as exc:
            raise BadRequest(exc.message, param="model") from None
    elif routing.slug_model(model) is None:
        served = ", ".join(sorted(slug for slug, _ in routing.served_slugs())) or "none"
        raise BadRequest(f"model {model!r} is not a Model API served here ({served}) nor "
                         "baseten/MODEL_ID[/DEPLOYMENT_ID]", param="model")


async def definition(gw: Gateway, request: Request) -> wire.EndpointSpec:
    spec = parse_body(wire.EndpointSpec, await request.body())
    wire.check_sampling(spec.defaults, "defaults")
    EndpointTemplates.compile(spec)
    check_model(gw.routing, spec.model)
    for i, binding in enumerate(spec.search):
        try:
            check_query(binding.top_k, binding.alpha, binding.filter)
        except BadRequest as exc:
            raise BadRequest(f"search.{i}.{exc.message}", param=f"search.{i}.{exc.param}") from None
        try:
            await gw.store.datasets.require_dataset(binding.dataset)
        except NotFound as exc:
            raise BadRequest(exc.message, param=f"search.{i}.dataset") from None
    return spec


async def create(gw: Gateway, request: Request) -> JSONResponse:
    spec = await definition(gw, request)
    endpoint = await gw.store.endpoints.create(spec.name, spec.model_dump(mode="json"))
    return _json(endpoint_out(endpoint), 201)


async def list_endpoints(gw: Gateway, request: Request) -> JSONResponse:
    return _json(wire.EndpointList(endpoints=[endpoint_out(e) for e in await gw.store.endpoints.list()]))


async def show(gw: Gateway, request: Request) -> JSONResponse:
    raw = request.query_params.get("version")
    if raw is not None and not (raw.isdigit() and 0 < int(raw) < 2**31):
        raise BadRequest("version must be a positive integer", param="version")
    endpoint = await gw.store.endpoints.get(request.path_params["ref"], int(raw) if raw else None)
    return _json(endpoint_out(endpoint))


async def update(gw: Gateway, request: Request) -> JSONResponse:
    spec = await definition(gw, request)
    endpoint = await gw.store.endpoints.update(request.path_params["ref"], spec.name,
                                               spec.model_dump(mode="json"))
    return _json(endpoint_out(endpoint))


async def delete(gw: Gateway, request: Request) -> JSONResponse:
    return _json(endpoint_out(await gw.store.endpoints.delete(request.path_params["ref"])))


def price_out(price: Price) -> wire.PriceOut:
    return wire.PriceOut(model=price.model, prompt=price.prompt, completion=price.completion,
                         updated_at=price.updated_at)


async def set_price(gw: Gateway, request: Request) -> JSONResponse:
    body = parse_body(wire.PriceSet, await request.body())
    price = await gw.store.endpoints.set_price(request.path_params["model"], prompt=body.prompt,
                                               completion=body.completion)
    return _json(price_out(price))


async def list_prices(gw: Gateway, request: Request) -> JSONResponse:
    return _json(wire.PriceList(prices=[price_out(p) for p in await gw.store.endpoints.list_prices()]))


def parse_since(raw: str, now: datetime | None = None) -> datetime:
    """`30m`, `24h`, `7d`, `2w` ago, or an ISO 8601 time (UTC unless it says otherwise)."""
    now = now or datetime.now(UTC)
    match = _DURATION.match(raw.strip())
    if match:
        return now - timedelta(seconds=int(match.group(1)) * _SECONDS[match.group(2)])
    try:
        when = datetime.fromisoformat(raw.strip())
    except ValueError:
        raise BadRequest(f"since must be a duration (30m, 24h, 7d) or an ISO 8601 time, not {raw[:40]!r}",
                         param="since") from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def usage_out(record: UsageRecord) -> wire.UsageRecordOut:
    return wire.UsageRecordOut(**record.__dict__)


async def usage(gw: Gateway, request: Request) -> JSONResponse:
    q = request.query_params
    limit = q.get("limit", "100")
    if not limit.isdigit() or not 0 < int(limit) <= MAX_USAGE_LIMIT:
        raise BadRequest(f"limit must be an integer from 1 to {MAX_USAGE_LIMIT}", param="limit")
    endpoint_id = q.get("endpoint") or None
    if endpoint_id is not None:
        try:  # a name, or an id of an endpoint that still exists; else the id as given
            endpoint_id = (await gw.store.endpoints.get(endpoint_id)).id
        except NotFound:
            pass
    since = parse_since(q["since"]) if q.get("since") else None
    records, totals = await gw.store.endpoints.usage(endpoint_id=endpoint_id, since=since,
                                                      limit=int(limit))
    return _json(wire.UsageReport(records=[usage_out(r) for r in records],
                                  totals=wire.UsageTotals(**totals)))


def routes(gw: Gateway) -> list[Route]:
    return [
        Route(f"{PREFIX}/endpoints", partial(create, gw), methods=["POST"]),
        Route(f"{PREFIX}/endpoints", partial(list_endpoints, gw), methods=["GET"]),
        Route(f"{PREFIX}/endpoints/{{ref}}", partial(show, gw), methods=["GET"]),
        Route(f"{PREFIX}/endpoints/{{ref}}", partial(update, gw), methods=["PUT"]),
        Route(f"{PREFIX}/endpoints/{{ref}}", partial(delete, gw), methods=["DELETE"]),
        Route(f"{PREFIX}/prices/{{model:path}}", partial(set_price, gw), methods=["PUT"]),
        Route(f"{PREFIX}/prices", partial(list_prices, gw), methods=["GET"]),
        Route(f"{PREFIX}/usage", partial(usage, gw), methods=["GET"]),
    ]
