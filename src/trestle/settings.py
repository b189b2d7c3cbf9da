"""Where trestle keeps its state, and how `trestle serve` is configured.

Everything lives under one data directory, `TRESTLE_HOME` (default `~/.trestle`):

    TRESTLE_HOME/
      trestle.db            the SQLite store (unless TRESTLE_DATABASE_URL points elsewhere)
      admin_key             the first API key, created when auth is on and no key exists (0600)
      secrets.key           the key that encrypts the secrets in the store (0600)
      deployments/{id}/     each pushed folder (src/), its virtualenv (venv/) and log (worker.log)
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from trestle.store.engine import sqlite_url

DEFAULT_PORT = 8700


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or not raw.strip():
        return default
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"{name} must be an integer, not {raw!r}") from None


def default_home() -> Path:
    return Path(os.environ.get("TRESTLE_HOME") or Path.home() / ".trestle").expanduser()


@dataclass(frozen=True)
class Settings:
    home: Path = field(default_factory=default_home)
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    auth: bool = True
    builtin_models: bool = True
    database_url: str | None = None
    # Each deployment's worker.log is rotated past this size, keeping this many old files
    # (worker.log.1, ...). Env: TRESTLE_WORKER_LOG_MAX_BYTES, TRESTLE_WORKER_LOG_BACKUPS.
    worker_log_max_bytes: int = field(
        default_factory=lambda: _env_int("TRESTLE_WORKER_LOG_MAX_BYTES", 64 * 1024 * 1024))
    worker_log_backups: int = field(default_factory=lambda: _env_int("TRESTLE_WORKER_LOG_BACKUPS", 3))

    @property
    def db_url(self) -> str:
        return (
            self.database_url
            or os.environ.get("TRESTLE_DATABASE_URL")
            or sqlite_url(self.home / "trestle.db")
        )

    @property
    def admin_key_file(self) -> Path:
        return self.home / "admin_key"

    @property
    def secrets_key_file(self) -> Path:
        return self.home / "secrets.key"

    @property
    def deployments_dir(self) -> Path:
        return self.home / "deployments"
