"""Where trestle keeps its state, and how `trestle serve` is configured.

Everything lives under one data directory, `TRESTLE_HOME` (default `~/.trestle`):

    TRESTLE_HOME/
      trestle.db            the SQLite store (unless TRESTLE_DATABASE_URL points elsewhere)
      admin_key             the first API key, created when auth is on and no key exists (0600)
      deployments/{id}/     each pushed folder (src/), its virtualenv (venv/) and log (worker.log)

Request bodies are bounded while they stream in (413 past the limit), by route:

    /model/.../predict, /model/.../sync/...   TRESTLE_MAX_PREDICT_BODY_BYTES   default 64 MiB
    /api/v1/push                              the upload limit of `trestle.deploy.package`
    everything else (/v1/*, /api/*, ...)      TRESTLE_MAX_BODY_BYTES           default 8 MiB
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from trestle.store.engine import sqlite_url

DEFAULT_PORT = 8700
MiB = 1024 * 1024
PUSH_PATH = "/api/v1/push"


_UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}


def _env_bytes(name: str, default: int) -> int:
    """A size from the environment: bytes, or a number with K, M, G or T (powers of 1024)."""
    value = os.environ.get(name, "").strip()
    if not value:
        return default
    unit = value[-1].upper() if value[-1].isalpha() else ""
    number = value[:-1] if unit else value
    if not number.isdigit() or unit not in _UNITS or int(number) < 1:
        raise ValueError(f"{name} must be a size such as 8388608 or 8M, got {value!r}")
    return int(number) * _UNITS[unit]


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
    max_body_bytes: int = field(default_factory=lambda: _env_bytes("TRESTLE_MAX_BODY_BYTES", 8 * MiB))
    max_predict_body_bytes: int = field(
        default_factory=lambda: _env_bytes("TRESTLE_MAX_PREDICT_BODY_BYTES", 64 * MiB))

    def body_limit(self, path: str) -> tuple[int, str] | None:
        """The body limit of a route and the setting that sets it; None: the route has its own."""
        if path.startswith("/model/"):
            return self.max_predict_body_bytes, "TRESTLE_MAX_PREDICT_BODY_BYTES"
        if path == PUSH_PATH:
            return None
        return self.max_body_bytes, "TRESTLE_MAX_BODY_BYTES"

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
    def deployments_dir(self) -> Path:
        return self.home / "deployments"
