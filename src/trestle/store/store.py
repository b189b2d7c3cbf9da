"""`Store`: the async repository over models, deployments, environments, API keys and secrets.

    store = await Store.open("sqlite+aiosqlite:///home/trestle.db")   # migrates to head first
    model = await store.create_model("my-model")
    ...
    await store.close()

Methods return the frozen records of `trestle.store.records`. Invalid input raises the error tree
of `trestle.errors` (BadRequest with `param`, NotFound, Conflict); an unknown deployment status is
a ValueError, because statuses come from our own code, not from clients.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import delete, func, select, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from trestle.errors import BadRequest, Conflict, NotFound
from trestle.store import keys, migrate
from trestle.store.datasets import DatasetStore
from trestle.store.endpoints import EndpointStore
from trestle.store.engine import make_engine, parse_url
from trestle.store.ids import new_id
from trestle.store.secretbox import KEY_FILE, SecretBox
from trestle.store.records import ApiKey, Deployment, Environment, Model, Status, check_status
from trestle.store.tables import (
    ApiKeyRow,
    DeploymentArchiveRow,
    DeploymentRow,
    EnvironmentHistoryRow,
    EnvironmentRow,
    ModelRow,
    SecretRow,
)

# PostgreSQL's channel for "the record changed" (payload: {"origin": Store.instance, "kind": ...});
# other gateways on the same database re-read it (trestle.store.changes).
CHANGES_CHANNEL = "trestle_changes"
# Any fixed 64-bit number (not migrate's): the PostgreSQL advisory lock of a gateway's first-start
# setup (`Store.setup_lock`).
PG_SETUP_LOCK = 0x7472657374_7375
ARCHIVE_PART_BYTES = 8 * 1024 * 1024
SECRET_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
ENVIRONMENT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
MAX_NAME = 255


def check_environment_name(name: str, param: str = "name") -> str:
    if not isinstance(name, str) or not ENVIRONMENT_NAME.fullmatch(name):
        raise BadRequest(
            "environment name must be 1-64 letters, digits, '_', '.' or '-', starting with a "
            "letter or digit",
            param=param,
        )
    return name


def _now() -> datetime:
    return datetime.now(UTC)


def _utc(value: datetime | None) -> datetime | None:
    """Timestamps in UTC. SQLite hands them back without a zone (they were written in UTC);
    PostgreSQL in the session's zone."""
    if value is None:
        return None
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def _name(value: Any, param: str = "name") -> str:
    if not isinstance(value, str) or not value.strip():
        raise BadRequest(f"{param} must be a non-empty string", param=param)
    if len(value) > MAX_NAME:
        raise BadRequest(f"{param} is longer than {MAX_NAME} characters", param=param)
    return value


def _model(row: ModelRow) -> Model:
    return Model(id=row.id, name=row.name, created_at=_utc(row.created_at))


def _deployment(row: DeploymentRow) -> Deployment:
    return Deployment(
        id=row.id,
        model_id=row.model_id,
        status=Status(row.status),
        config=row.config,
        source_dir=row.source_dir,
        error=row.error,
        created_at=_utc(row.created_at),
        updated_at=_utc(row.updated_at),
    )


def _environment(row: EnvironmentRow) -> Environment:
    return Environment(
        model_id=row.model_id,
        name=row.name,
        deployment_id=row.deployment_id,
        updated_at=_utc(row.updated_at),
    )


def _api_key(row: ApiKeyRow) -> ApiKey:
    return ApiKey(
        id=row.id,
        name=row.name,
        prefix=row.prefix,
        created_at=_utc(row.created_at),
        revoked_at=_utc(row.revoked_at),
        scope=row.scope or keys.ADMIN,
        models=tuple(row.models) if row.models is not None else None,
        endpoints=tuple(row.endpoints) if row.endpoints is not None else None,
        rpm=row.rpm,
        tpm=row.tpm,
    )


def default_secrets_key_file(url: str) -> Path:
    """Beside a SQLite store; for PostgreSQL, in TRESTLE_HOME (default ~/.trestle)."""
    parsed = parse_url(url)
    if parsed.get_backend_name() == "sqlite":
        return Path(parsed.database).parent / KEY_FILE
    return Path(os.environ.get("TRESTLE_HOME") or Path.home() / ".trestle").expanduser() / KEY_FILE


class Store:
    def __init__(self, engine: AsyncEngine, *, secrets: SecretBox, key_cache_ttl: float = 30.0):
        self._engine = engine
        self._box = secrets
        self._sessions = async_sessionmaker(engine, expire_on_commit=False)
        self._insert = postgresql.insert if engine.dialect.name == "postgresql" else sqlite.insert
        self._verified = keys.VerifiedKeyCache(ttl=key_cache_ttl)
        self._verifying: dict[bytes, asyncio.Future[ApiKey | None]] = {}
        self.datasets = DatasetStore(engine)  # datasets, documents, chunks: store/datasets.py
        self.endpoints = EndpointStore(engine)  # prompt endpoints, prices, usage: store/endpoints.py
        # How many times a key was checked against its scrypt hash (the costly part of auth).
        self.hash_checks = 0
        # This store's id in change notifications, so that a gateway skips its own.
        self.instance = new_id("g")

    @property
    def shared(self) -> bool:
        """Whether several gateways may share this database (PostgreSQL): changes are announced
        (`CHANGES_CHANNEL`) and pushed folders kept in the store."""
        return self._engine.dialect.name == "postgresql"

    @property
    def engine(self) -> AsyncEngine:
        return self._engine

    async def _announce(self, session, kind: str) -> None:
        """Tell the other gateways on this database that `kind` changed, when the transaction
        commits (PostgreSQL's NOTIFY is delivered on commit, and not at all on rollback)."""
        if self.shared:
            payload = json.dumps({"origin": self.instance, "kind": kind})
            await session.execute(text("SELECT pg_notify(:channel, :payload)"),
                                  {"channel": CHANGES_CHANNEL, "payload": payload})

    @classmethod
    async def open(cls, url: str, *, key_cache_ttl: float = 30.0,
                   secrets_key_file: Path | None = None) -> "Store":
        """Migrate the database at `url` to the newest revision, then open it.

        Secrets are encrypted with the key in `secrets_key_file` (created on first use; default
        `default_secrets_key_file(url)`); rows stored in plaintext by an older trestle are
        encrypted now.
        """
        parsed = parse_url(url)
        await migrate.upgrade(url)
        box = SecretBox(secrets_key_file or default_secrets_key_file(url))
        store = cls(make_engine(parsed), key_cache_ttl=key_cache_ttl, secrets=box)
        try:
            await store._encrypt_plaintext_secrets()
        except BaseException:
            await store.close()
            raise
        return store

    @contextlib.asynccontextmanager
    async def setup_lock(self) -> AsyncIterator[None]:
        """Held by a gateway while it sets up what a database needs once (the first admin key,
        the built-in models): gateways starting together on one PostgreSQL database take turns,
        so the second finds what the first made instead of making it again. On SQLite (one
        gateway per file) there is nothing to wait for."""
        if not self.shared:
            yield
            return
        async with self._engine.connect() as conn:
            await conn.execute(text("SELECT pg_advisory_lock(:id)"), {"id": PG_SETUP_LOCK})
            await conn.commit()
            try:
                yield
            finally:
                await conn.execute(text("SELECT pg_advisory_unlock(:id)"), {"id": PG_SETUP_LOCK})
                await conn.commit()

    async def close(self) -> None:
        await self._engine.dispose()

    async def __aenter__(self) -> "Store":
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # models

    async def create_model(self, name: str) -> Model:
        name = _name(name)
        row = ModelRow(id=new_id("m"), name=name, created_at=_now())
        try:
            async with self._sessions.begin() as session:
                session.add(row)
        except IntegrityError:
            if await self.get_model_by_name(name) is not None:
                raise Conflict(f"a model named {name!r} already exists", param="name") from None
            raise
        return _model(row)

    async def get_model(self, model_id: str) -> Model | None:
        async with self._sessions() as session:
            row = await session.get(ModelRow, model_id)
            return _model(row) if row else None

    async def get_model_by_name(self, name: str) -> Model | None:
        async with self._sessions() as session:
            row = await session.scalar(select(ModelRow).where(ModelRow.name == name))
            return _model(row) if row else None

    async def list_models(self) -> list[Model]:
        async with self._sessions() as session:
            query = select(ModelRow).order_by(ModelRow.created_at, ModelRow.id)
            return [_model(r) for r in await session.scalars(query)]

    # deployments

    async def create_deployment(
        self, model_id: str, config: dict, source_dir: str, status: str = Status.BUILDING,
        archive: Path | None = None, deployment_id: str | None = None,
    ) -> Deployment:
        """A new deployment record (with `deployment_id`, from `new_id("d")`, when the caller
        needs to know it before the record exists). On a shared store, `archive` (the gzip tar
        it was pushed as) is kept with it, in the same transaction, for the other gateways
        (`load_archive`)."""
        status = check_status(status).value
        if not isinstance(config, dict):
            raise BadRequest("config must be a JSON object", param="config")
        try:
            json.dumps(config, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise BadRequest(f"config is not JSON: {exc}", param="config") from None
        now = _now()
        row = DeploymentRow(
            id=deployment_id or new_id("d"),
            model_id=model_id,
            status=status,
            config=config,
            source_dir=str(source_dir),
            error=None,
            created_at=now,
            updated_at=now,
        )
        async with self._sessions.begin() as session:
            if await session.get(ModelRow, model_id) is None:
                raise NotFound(f"no model {model_id!r}", param="model_id")
            session.add(row)
            if archive is not None and self.shared:
                await session.flush()
                await self._save_archive(session, row.id, archive)
            await self._announce(session, "deployment")
        return _deployment(row)

    async def _save_archive(self, session, deployment_id: str, archive: Path) -> None:
        part = 0
        with open(archive, "rb") as f:
            while data := await asyncio.to_thread(f.read, ARCHIVE_PART_BYTES):
                session.add(DeploymentArchiveRow(deployment_id=deployment_id, part=part, data=data))
                await session.flush()
                part += 1

    async def load_archive(self, deployment_id: str, dest: Path) -> bool:
        """Write the deployment's pushed archive to `dest`; False when the store has none (it
        was pushed to a gateway on SQLite, or before archives were kept)."""
        query = (select(DeploymentArchiveRow.part).where(DeploymentArchiveRow.deployment_id == deployment_id)
                 .order_by(DeploymentArchiveRow.part))
        async with self._sessions() as session:
            parts = list(await session.scalars(query))
            if not parts:
                return False
            with open(dest, "wb") as f:
                for part in parts:
                    data = await session.scalar(select(DeploymentArchiveRow.data).where(
                        DeploymentArchiveRow.deployment_id == deployment_id,
                        DeploymentArchiveRow.part == part))
                    await asyncio.to_thread(f.write, data)
        return True

    async def get_deployment(self, deployment_id: str) -> Deployment | None:
        async with self._sessions() as session:
            row = await session.get(DeploymentRow, deployment_id)
            return _deployment(row) if row else None

    async def list_deployments(
        self, model_id: str | None = None, statuses: set[str] | None = None
    ) -> list[Deployment]:
        query = select(DeploymentRow).order_by(DeploymentRow.created_at, DeploymentRow.id)
        if model_id is not None:
            query = query.where(DeploymentRow.model_id == model_id)
        if statuses is not None:
            query = query.where(DeploymentRow.status.in_([check_status(s).value for s in statuses]))
        async with self._sessions() as session:
            return [_deployment(r) for r in await session.scalars(query)]

    async def set_deployment_status(
        self, deployment_id: str, status: str, error: str | None = None
    ) -> Deployment:
        status = check_status(status).value
        async with self._sessions.begin() as session:
            row = await session.get(DeploymentRow, deployment_id, with_for_update=True)
            if row is None:
                raise NotFound(f"no deployment {deployment_id!r}", param="deployment_id")
            row.status = status
            row.error = error
            row.updated_at = _now()
            await self._announce(session, "deployment")
        return _deployment(row)

    async def mark_active_if_loading(self, deployment_id: str) -> bool:
        """Record the deployment active if the record still says building or deploying (a
        gateway that brought up its copy of a deployment whose push was interrupted); whether
        it did."""
        async with self._sessions.begin() as session:
            result = await session.execute(
                update(DeploymentRow)
                .where(DeploymentRow.id == deployment_id,
                       DeploymentRow.status.in_([Status.BUILDING.value, Status.DEPLOYING.value]))
                .values(status=Status.ACTIVE.value, error=None, updated_at=_now()))
            if result.rowcount:
                await self._announce(session, "deployment")
            return bool(result.rowcount)

    async def set_deployment_config(self, deployment_id: str, config: dict) -> Deployment:
        """Replace a deployment's recorded config (e.g. new scaling bounds)."""
        json.dumps(config, allow_nan=False)
        async with self._sessions.begin() as session:
            row = await session.get(DeploymentRow, deployment_id, with_for_update=True)
            if row is None:
                raise NotFound(f"no deployment {deployment_id!r}", param="deployment_id")
            row.config = config
            row.updated_at = _now()
            await self._announce(session, "deployment")
        return _deployment(row)

    async def delete_deployment(self, deployment_id: str) -> Deployment:
        """Delete a deployment's record (and its environments' history of it). `Conflict` while
        an environment points at it; `NotFound` when there is no such deployment."""
        async with self._sessions.begin() as session:
            row = await session.get(DeploymentRow, deployment_id, with_for_update=True)
            if row is None:
                raise NotFound(f"no deployment {deployment_id!r}", param="deployment_id")
            pointing = list(await session.scalars(
                select(EnvironmentRow.name).where(EnvironmentRow.deployment_id == deployment_id)
                .order_by(EnvironmentRow.name)
            ))
            if pointing:
                raise Conflict(
                    f"deployment {deployment_id} is what {', '.join(pointing)} point(s) at; promote "
                    "another deployment there (or delete the environment) first",
                    param="deployment_id", code="deployment_in_use",
                )
            await session.execute(
                delete(EnvironmentHistoryRow).where(EnvironmentHistoryRow.deployment_id == deployment_id)
            )
            await session.execute(
                delete(DeploymentArchiveRow).where(DeploymentArchiveRow.deployment_id == deployment_id)
            )
            await session.delete(row)
            await self._announce(session, "deployment")
        return _deployment(row)

    # environments

    async def set_environment(self, model_id: str, name: str, deployment_id: str) -> Environment:
        """Point the environment at the deployment (creating it), and append that to its
        history when the pointer moves."""
        check_environment_name(name)
        async with self._sessions.begin() as session:
            deployment = await session.get(DeploymentRow, deployment_id)
            if deployment is None:
                raise NotFound(f"no deployment {deployment_id!r}", param="deployment_id")
            if deployment.model_id != model_id:
                if await session.get(ModelRow, model_id) is None:
                    raise NotFound(f"no model {model_id!r}", param="model_id")
                raise BadRequest(
                    f"deployment {deployment_id!r} belongs to model {deployment.model_id!r}, "
                    f"not {model_id!r}",
                    param="deployment_id",
                )
            now = _now()
            values = {"deployment_id": deployment_id, "updated_at": now}
            before = await session.scalar(
                select(EnvironmentRow.deployment_id)
                .where(EnvironmentRow.model_id == model_id, EnvironmentRow.name == name)
            )
            upsert = self._insert(EnvironmentRow).values(model_id=model_id, name=name, **values)
            await session.execute(
                upsert.on_conflict_do_update(index_elements=["model_id", "name"], set_=values)
            )
            if before != deployment_id:
                session.add(EnvironmentHistoryRow(model_id=model_id, name=name,
                                                  deployment_id=deployment_id, created_at=now))
                await self._announce(session, "environment")
        return Environment(model_id=model_id, name=name, **values)

    async def get_environment(self, model_id: str, name: str) -> Environment | None:
        async with self._sessions() as session:
            row = await session.get(EnvironmentRow, (model_id, name))
            return _environment(row) if row else None

    async def list_environments(self, model_id: str) -> list[Environment]:
        query = (
            select(EnvironmentRow)
            .where(EnvironmentRow.model_id == model_id)
            .order_by(EnvironmentRow.name)
        )
        async with self._sessions() as session:
            return [_environment(r) for r in await session.scalars(query)]

    async def delete_environment(self, model_id: str, name: str) -> Environment:
        """Delete an environment and its history; `NotFound` when there is none."""
        async with self._sessions.begin() as session:
            row = await session.get(EnvironmentRow, (model_id, name), with_for_update=True)
            if row is None:
                raise NotFound(f"model {model_id} has no environment {name!r}", param="name")
            await session.execute(delete(EnvironmentHistoryRow).where(
                EnvironmentHistoryRow.model_id == model_id, EnvironmentHistoryRow.name == name))
            await session.delete(row)
            await self._announce(session, "environment")
        return _environment(row)

    async def environment_history(self, model_id: str, name: str) -> list[str]:
        """The deployments the environment was pointed at, oldest first (the last is where it
        points now)."""
        query = (
            select(EnvironmentHistoryRow.deployment_id)
            .where(EnvironmentHistoryRow.model_id == model_id, EnvironmentHistoryRow.name == name)
            .order_by(EnvironmentHistoryRow.id)
        )
        async with self._sessions() as session:
            return list(await session.scalars(query))

    async def rewind_environment(self, model_id: str, name: str, deployment_id: str) -> Environment:
        """Point the environment back at `deployment_id`, an earlier entry of its history, and
        forget the entries after its last one (so that the next rollback goes further back).
        `NotFound` when the history does not hold it."""
        async with self._sessions.begin() as session:
            row = await session.get(EnvironmentRow, (model_id, name), with_for_update=True)
            last = await session.scalar(
                select(func.max(EnvironmentHistoryRow.id)).where(
                    EnvironmentHistoryRow.model_id == model_id, EnvironmentHistoryRow.name == name,
                    EnvironmentHistoryRow.deployment_id == deployment_id)
            )
            if row is None or last is None:
                raise NotFound(f"environment {name!r} of model {model_id} was never pointed at "
                               f"deployment {deployment_id}", param="deployment_id")
            await session.execute(delete(EnvironmentHistoryRow).where(
                EnvironmentHistoryRow.model_id == model_id, EnvironmentHistoryRow.name == name,
                EnvironmentHistoryRow.id > last))
            row.deployment_id = deployment_id
            row.updated_at = _now()
            await self._announce(session, "environment")
        return _environment(row)

    # API keys

    async def create_api_key(
        self, name: str, *, scope: str = keys.ADMIN, models: list[str] | None = None,
        endpoints: list[str] | None = None, rpm: int | None = None, tpm: int | None = None,
    ) -> tuple[ApiKey, str]:
        """A new key and its plaintext `tr_{prefix}_{secret}`: the only time it is available.

        `scope` is `admin` or `invoke`; an invoke key may be limited to the ids in `models`
        (which must exist) and `endpoints`."""
        name = _name(name)
        scope, models, endpoints = keys.check_scope(scope, models, endpoints)
        rpm, tpm = keys.check_rate(rpm, "rpm"), keys.check_rate(tpm, "tpm")
        for model_id in models or ():
            if await self.get_model(model_id) is None:
                raise BadRequest(f"no model with id {model_id!r}", param="models")
        for _ in range(5):  # a prefix collision is rare; draw again
            prefix, plaintext = keys.new_plaintext()
            key_hash = await asyncio.to_thread(keys.hash_key, plaintext)
            row = ApiKeyRow(
                id=new_id("k"),
                name=name,
                prefix=prefix,
                key_hash=key_hash,
                created_at=_now(),
                revoked_at=None,
                scope=scope,
                models=models,
                endpoints=endpoints,
                rpm=rpm,
                tpm=tpm,
            )
            try:
                async with self._sessions.begin() as session:
                    session.add(row)
            except IntegrityError:
                continue
            return _api_key(row), plaintext
        raise RuntimeError("could not draw a unique API key prefix")

    async def verify_api_key(self, plaintext: str,
                             before_hash: Callable[[str], None] | None = None) -> ApiKey | None:
        """The active key that `plaintext` is, else None (malformed, unknown, wrong or revoked).

        Concurrent calls with the same plaintext share one lookup and one hash computation
        (a burst of requests with a key not yet cached costs one scrypt, not one each).
        `before_hash(prefix)` is called just before the costly hash check, only when one is
        needed (a well-formed key whose prefix is an active key's, not cached); it may raise to
        refuse the check (the gateway's rate limit of failed verifications).
        """
        if keys.parse_prefix(plaintext) is None:
            return None
        cached = self._verified.get(plaintext)
        if cached is not None:
            return cached
        fp = keys.fingerprint(plaintext)
        task = self._verifying.get(fp)
        if task is None:
            task = asyncio.ensure_future(self._verify_uncached(plaintext, before_hash))
            self._verifying[fp] = task
            task.add_done_callback(lambda _: self._verifying.pop(fp, None))
        # shield: a caller that goes away (client disconnect) does not cancel the others' check.
        return await asyncio.shield(task)

    async def _verify_uncached(self, plaintext: str,
                               before_hash: Callable[[str], None] | None) -> ApiKey | None:
        generation = self._verified.generation
        async with self._sessions() as session:
            row = await session.scalar(
                select(ApiKeyRow).where(ApiKeyRow.prefix == keys.parse_prefix(plaintext))
            )
        if row is None or row.revoked_at is not None:
            return None
        if before_hash is not None:
            before_hash(row.prefix)
        self.hash_checks += 1
        if not await asyncio.to_thread(keys.check_key, plaintext, row.key_hash):
            return None
        key = _api_key(row)
        # Not if a revocation happened meanwhile: the row we read may be stale.
        self._verified.put(plaintext, key, generation)
        return key

    async def list_api_keys(self) -> list[ApiKey]:
        query = select(ApiKeyRow).order_by(ApiKeyRow.created_at, ApiKeyRow.id)
        async with self._sessions() as session:
            return [_api_key(r) for r in await session.scalars(query)]

    async def revoke_api_key(self, key_id: str) -> ApiKey:
        """Revoke a key (again: no change). Unknown id: NotFound."""
        async with self._sessions.begin() as session:
            row = await session.get(ApiKeyRow, key_id, with_for_update=True)
            if row is None:
                raise NotFound(f"no API key {key_id!r}", param="key_id")
            if row.revoked_at is None:
                row.revoked_at = _now()
                await self._announce(session, "key")
        self._verified.drop(key_id)
        return _api_key(row)

    _UNSET: Any = object()

    async def update_api_key(self, key_id: str, *, rpm: int | None = _UNSET,
                             tpm: int | None = _UNSET) -> ApiKey:
        """Change a key's rate limits (0 or None: no limit; a limit left out stays)."""
        changes = {}
        if rpm is not self._UNSET:
            changes["rpm"] = keys.check_rate(rpm, "rpm")
        if tpm is not self._UNSET:
            changes["tpm"] = keys.check_rate(tpm, "tpm")
        async with self._sessions.begin() as session:
            row = await session.get(ApiKeyRow, key_id, with_for_update=True)
            if row is None:
                raise NotFound(f"no API key {key_id!r}", param="key_id")
            for name, value in changes.items():
                setattr(row, name, value)
            await self._announce(session, "key")
        self._verified.drop(key_id)
        return _api_key(row)

    async def refresh_keys(self) -> int:
        """Forget verified keys whose record changed (revoked or new limits, by another
        gateway); how many were forgotten. The next request with one reads its record again."""
        current = {k.id: k for k in await self.list_api_keys()}
        stale = {key.id for key in self._verified.keys() if current.get(key.id) != key}
        for key_id in stale:
            self._verified.drop(key_id)
        return len(stale)

    async def count_api_keys(self, active_only: bool = True, scope: str | None = None) -> int:
        query = select(func.count()).select_from(ApiKeyRow)
        if active_only:
            query = query.where(ApiKeyRow.revoked_at.is_(None))
        if scope is not None:
            query = query.where(ApiKeyRow.scope == scope)
        async with self._sessions() as session:
            return int(await session.scalar(query))

    # secrets

    async def set_secret(self, name: str, value: str) -> None:
        if not isinstance(name, str) or not SECRET_NAME.fullmatch(name) or len(name) > MAX_NAME:
            raise BadRequest(
                "secret name must match [A-Za-z_][A-Za-z0-9_]* (at most 255 characters)",
                param="name",
            )
        if not isinstance(value, str):
            raise BadRequest("secret value must be a string", param="value")
        values = {"value": self._box.encrypt(value), "encrypted": True, "updated_at": _now()}
        upsert = self._insert(SecretRow).values(name=name, **values)
        upsert = upsert.on_conflict_do_update(index_elements=["name"], set_=values)
        async with self._sessions.begin() as session:
            await session.execute(upsert)

    async def list_secret_names(self) -> list[str]:
        async with self._sessions() as session:
            return list(await session.scalars(select(SecretRow.name).order_by(SecretRow.name)))

    async def get_secrets(self) -> dict[str, str]:
        async with self._sessions() as session:
            rows = await session.execute(select(SecretRow.name, SecretRow.value))
            return {name: self._box.decrypt(name, value) for name, value in rows}

    async def _encrypt_plaintext_secrets(self) -> None:
        """Encrypt the rows written before secrets were encrypted at rest (once)."""
        async with self._sessions.begin() as session:
            rows = (await session.execute(
                select(SecretRow.name, SecretRow.value).where(SecretRow.encrypted.is_(False))
            )).all()
            for name, value in rows:
                await session.execute(
                    update(SecretRow).where(SecretRow.name == name)
                    .values(value=self._box.encrypt(value), encrypted=True)
                )
        if rows and self._engine.dialect.name == "sqlite":
            # The plaintext may linger in free pages and the write-ahead log: rewrite the file.
            async with self._engine.connect() as conn:
                conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
                await conn.exec_driver_sql("VACUUM")
                await conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
