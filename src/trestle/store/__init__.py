"""The store: models, deployments, environments, API keys and secrets, in SQL.

SQLAlchemy 2 (async) over SQLite (`sqlite+aiosqlite:///PATH`, the default) or PostgreSQL
(`postgresql+asyncpg://...`); Alembic migrations ship in `migrations/` and run on `Store.open`.
See docs/store.md.
"""

from trestle.store.engine import sqlite_url
from trestle.store.records import DEPLOYMENT_STATUSES, ApiKey, Deployment, Environment, Model, Status
from trestle.store.store import Store

__all__ = [
    "DEPLOYMENT_STATUSES",
    "ApiKey",
    "Deployment",
    "Environment",
    "Model",
    "Status",
    "Store",
    "sqlite_url",
]
