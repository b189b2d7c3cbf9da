"""`EndpointStore`: prompt endpoints (versioned), model prices and usage records.

    endpoints = EndpointStore(engine)            # Store.open(...) makes one: `store.endpoints`
    ep = await endpoints.create("support-bot", spec)          # version 1
    ep = await endpoints.update(ep.id, spec2)                 # version 2; version 1 is kept
    await endpoints.set_price("HuggingFaceTB/SmolLM2-135M-Instruct", prompt=0.1, completion=0.2)
    await endpoints.record_usage(UsageRecord(...))
    records, totals = await endpoints.usage(endpoint_id=ep.id, since=datetime(...), limit=100)

Endpoints are found by id or name (`ref`). Every version of an endpoint is kept while it exists
(a call records the version it used); deleting an endpoint deletes its versions, not its usage
records.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import delete, func, or_, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from trestle.errors import BadRequest, Conflict, NotFound
from trestle.store.ids import new_id
from trestle.store.records import Endpoint, Price, UsageRecord
from trestle.store.tables import EndpointRow, EndpointVersionRow, PriceRow, UsageRow

MAX_NAME = 255
MAX_ERROR_CHARS = 1000


def _now() -> datetime:
    return datetime.now(UTC)


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _endpoint(row: EndpointRow, version: EndpointVersionRow) -> Endpoint:
    return Endpoint(id=row.id, name=row.name, version=version.version, spec=version.spec,
                    created_at=_utc(row.created_at), updated_at=_utc(row.updated_at))


def _price(row: PriceRow) -> Price:
    return Price(model=row.model, prompt=row.prompt, completion=row.completion,
                 updated_at=_utc(row.updated_at))


def _usage(row: UsageRow) -> UsageRecord:
    return UsageRecord(
        id=row.id, created_at=_utc(row.created_at), endpoint_id=row.endpoint_id,
        endpoint_version=row.endpoint_version, key_id=row.key_id, user=row.user, model=row.model,
        prompt_tokens=row.prompt_tokens, completion_tokens=row.completion_tokens,
        prompt_cost=row.prompt_cost, completion_cost=row.completion_cost,
        latency_ms=row.latency_ms, status=row.status, error=row.error, stream=row.stream,
    )


class EndpointStore:
    def __init__(self, engine: AsyncEngine):
        self._sessions = async_sessionmaker(engine, expire_on_commit=False)
        self._insert = postgresql.insert if engine.dialect.name == "postgresql" else sqlite.insert

    # endpoints

    async def create(self, name: str, spec: dict[str, Any]) -> Endpoint:
        now = _now()
        row = EndpointRow(id=new_id("e"), name=name, version=1, created_at=now, updated_at=now)
        version = EndpointVersionRow(endpoint_id=row.id, version=1, spec=spec, created_at=now)
        try:
            async with self._sessions.begin() as session:
                session.add(row)
                await session.flush()
                session.add(version)
        except IntegrityError:
            raise Conflict(f"an endpoint named {name!r} already exists", param="name") from None
        return _endpoint(row, version)

    async def get(self, ref: str, version: int | None = None) -> Endpoint:
        """The endpoint `ref` (id or name) at its newest version (or `version`); NotFound."""
        async with self._sessions() as session:
            row = await session.scalar(
                select(EndpointRow).where(or_(EndpointRow.id == ref, EndpointRow.name == ref))
                .order_by((EndpointRow.id == ref).desc()).limit(1)
            )
            if row is None:
                raise NotFound(f"no endpoint {ref!r}", param="endpoint_id")
            ver = await session.get(EndpointVersionRow, (row.id, version or row.version))
            if ver is None:
                raise NotFound(f"endpoint {row.id} has no version {version}", param="version")
            return _endpoint(row, ver)

    async def list(self) -> list[Endpoint]:
        query = (
            select(EndpointRow, EndpointVersionRow)
            .join(EndpointVersionRow, (EndpointVersionRow.endpoint_id == EndpointRow.id)
                  & (EndpointVersionRow.version == EndpointRow.version))
            .order_by(EndpointRow.created_at, EndpointRow.id)
        )
        async with self._sessions() as session:
            return [_endpoint(row, ver) for row, ver in (await session.execute(query)).all()]

    async def update(self, ref: str, name: str, spec: dict[str, Any]) -> Endpoint:
        """A new version of the endpoint (its name may change too)."""
        current = await self.get(ref)
        now = _now()
        try:
            async with self._sessions.begin() as session:
                row = await session.get(EndpointRow, current.id, with_for_update=True)
                if row is None:
                    raise NotFound(f"no endpoint {ref!r}", param="endpoint_id")
                row.version += 1
                row.name = name
                row.updated_at = now
                version = EndpointVersionRow(endpoint_id=row.id, version=row.version, spec=spec,
                                             created_at=now)
                session.add(version)
        except IntegrityError:
            raise Conflict(f"an endpoint named {name!r} already exists", param="name") from None
        return _endpoint(row, version)

    async def delete(self, ref: str) -> Endpoint:
        current = await self.get(ref)
        async with self._sessions.begin() as session:
            await session.execute(delete(EndpointVersionRow)
                                  .where(EndpointVersionRow.endpoint_id == current.id))
            await session.execute(delete(EndpointRow).where(EndpointRow.id == current.id))
        return current

    # prices

    async def set_price(self, model: str, *, prompt: float, completion: float) -> Price:
        if not isinstance(model, str) or not model.strip() or len(model) > MAX_NAME:
            raise BadRequest(f"model must be 1-{MAX_NAME} characters", param="model")
        values = {"prompt": float(prompt), "completion": float(completion), "updated_at": _now()}
        upsert = self._insert(PriceRow).values(model=model, **values)
        async with self._sessions.begin() as session:
            await session.execute(upsert.on_conflict_do_update(index_elements=["model"], set_=values))
        return Price(model=model, **values)

    async def get_price(self, model: str) -> Price | None:
        async with self._sessions() as session:
            row = await session.get(PriceRow, model)
            return _price(row) if row else None

    async def list_prices(self) -> list[Price]:
        async with self._sessions() as session:
            return [_price(r) for r in await session.scalars(select(PriceRow).order_by(PriceRow.model))]

    # usage

    async def record_usage(self, record: UsageRecord) -> None:
        error = record.error[:MAX_ERROR_CHARS] if record.error else None
        row = UsageRow(**{**record.__dict__, "error": error})
        async with self._sessions.begin() as session:
            session.add(row)

    async def usage(self, *, endpoint_id: str | None = None, since: datetime | None = None,
                    limit: int = 100) -> tuple[list[UsageRecord], dict[str, Any]]:
        """The newest `limit` records that match, and the totals over all that match."""
        where = []
        if endpoint_id is not None:
            where.append(UsageRow.endpoint_id == endpoint_id)
        if since is not None:
            where.append(UsageRow.created_at >= since)
        rows = select(UsageRow).where(*where).order_by(UsageRow.created_at.desc(), UsageRow.id).limit(limit)
        sums = select(
            func.count(), func.coalesce(func.sum(UsageRow.prompt_tokens), 0),
            func.coalesce(func.sum(UsageRow.completion_tokens), 0),
            func.coalesce(func.sum(UsageRow.prompt_cost), 0.0),
            func.coalesce(func.sum(UsageRow.completion_cost), 0.0),
        ).where(*where)
        async with self._sessions() as session:
            records = [_usage(r) for r in await session.scalars(rows)]
            calls, prompt, completion, prompt_cost, completion_cost = (await session.execute(sums)).one()
        totals = {
            "calls": int(calls), "prompt_tokens": int(prompt), "completion_tokens": int(completion),
            "total_tokens": int(prompt) + int(completion), "prompt_cost": float(prompt_cost),
            "completion_cost": float(completion_cost),
            "cost": float(prompt_cost) + float(completion_cost),
        }
        return records, totals
