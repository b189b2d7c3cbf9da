"""Where trestle keeps its state, and how `trestle serve` is configured.

Everything lives under one data directory, `TRESTLE_HOME` (default `~/.trestle`):

    TRESTLE_HOME/
      trestle.db            the SQLite store (unless TRESTLE_DATABASE_URL points elsewhere)
      admin_key             the first API key, created when auth is on and no key exists (0600)
      secrets.key           the key that encrypts the secrets in the store (0600)
      deployments/{id}/     each pushed folder (src/), its virtualenv (venv/) and log (worker.log)

Request bodies are bounded while they stream in (413 past the limit), by route:

    /model/.../predict, /model/.../sync/...   TRESTLE_MAX_PREDICT_BODY_BYTES   default 64 MiB
    /api/v1/push                              the upload limit of `trestle.deploy.build.package`
    /api/datasets/{id}/upload                 DATASET_UPLOAD_BYTES (the files' limit of
                                              `trestle.endpoints.retrieval.ingest`, and the
                                              form around them)
    everything else (/v1/*, /api/*, ...)      TRESTLE_MAX_BODY_BYTES           default 8 MiB

`Limits` bounds what a push may carry; each limit is a `trestle serve` option and an environment
variable (docs/security.md, "Limits").
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, fields
from pathlib import Path

DEFAULT_PORT = 8700
MiB = 1024 * 1024
# A dataset upload's body: `trestle.endpoints.retrieval.ingest.MAX_UPLOAD_BYTES` of files (100 MiB)
# and 1 MiB of multipart framing and other fields (a test checks the two agree).
DATASET_UPLOAD_BYTES = 101 * MiB
PUSH_PATH = "/api/v1/push"


_UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}
_SIZE = re.compile(r"^\s*(\d+)\s*([KMGT]?)(?:I?B)?\s*$", re.I)


def parse_size(text: str | int) -> int:
    """`"512"`, `"64K"`, `"2G"`, `"10MiB"` -> bytes (K, M, G, T are powers of 1024)."""
    if isinstance(text, int):
        return text
    match = _SIZE.match(str(text))
    if not match:
        raise ValueError(f"{text!r} is not a size (examples: 65536, 64K, 200M, 2G)")
    return int(match.group(1)) * _UNITS[match.group(2).upper()]


def format_size(n: int) -> str:
    """The shortest exact spelling of `n` bytes that `parse_size` reads back (`2G`, `1536K`)."""
    for unit in ("T", "G", "M", "K"):
        if n and n % _UNITS[unit] == 0:
            return f"{n // _UNITS[unit]}{unit}"
    return str(n)


@dataclass(frozen=True)
class Limits:
    """What a push may carry. Breaching a size limit of the upload is a 413, of config.yaml a 400;
    either names the limit by its `trestle serve` option."""

    upload_bytes: int = 2 * 1024**3  # the push body as sent (gzip), counted while it arrives
    unpacked_bytes: int = 8 * 1024**3  # all files of the folder together, unpacked
    upload_files: int = 10_000  # files and folders in the pushed folder
    config_bytes: int = 256 * 1024  # config.yaml, and config.yaml with its YAML aliases expanded
    config_depth: int = 32  # nesting of mappings and lists in config.yaml

    @staticmethod
    def option(name: str) -> str:
        """The `trestle serve` option that sets limit `name`: `upload_bytes` -> `--max-upload-bytes`."""
        return "--max-" + name.replace("_", "-")

    @staticmethod
    def envvar(name: str) -> str:
        return "TRESTLE_MAX_" + name.upper()

    def describe(self, name: str, unit: str = "") -> str:
        """The value and how to change it, for error messages:
        `8M (limit: --max-upload-bytes / TRESTLE_MAX_UPLOAD_BYTES)`."""
        value = getattr(self, name)
        shown = format_size(value) if name.endswith("_bytes") else str(value)
        return f"{shown}{unit} (limit: {self.option(name)} / {self.envvar(name)})"

    @classmethod
    def names(cls) -> list[str]:
        return [f.name for f in fields(cls)]


def _env_bytes(name: str, default: int) -> int:
    """A size from the environment (`parse_size` spellings), or `default` when unset."""
    value = os.environ.get(name, "").strip()
    if not value:
        return default
    try:
        size = parse_size(value)
    except ValueError as exc:
        raise ValueError(f"{name}: {exc}") from None
    if size < 1:
        raise ValueError(f"{name} must be at least 1 byte, got {value!r}")
    return size


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or not raw.strip():
        return default
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"{name} must be an integer, not {raw!r}") from None


def _env_float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw is None or not raw.strip():
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{name} must be a number of seconds, not {raw!r}") from None
    if not 0 <= value <= 86400:
        raise ValueError(f"{name} must be from 0 to 86400 seconds, not {raw!r}")
    return value


def default_home() -> Path:
    return Path(os.environ.get("TRESTLE_HOME") or Path.home() / ".trestle").expanduser()


@dataclass(frozen=True)
class Settings:
    home: Path = field(default_factory=default_home)
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    auth: bool = True
    builtin_models: bool = True
    builtin_embeddings: bool = True  # the embeddings Model API too (when builtin_models)
    database_url: str | None = None
    # What runs the workers: "local" (processes on this machine) or "ray" (actors on a Ray
    # cluster, trestle.deploy.ray), and the cluster's address (None: start a local Ray).
    backend: str = field(default_factory=lambda: os.environ.get("TRESTLE_BACKEND") or "local")
    ray_address: str | None = field(default_factory=lambda: os.environ.get("TRESTLE_RAY_ADDRESS") or None)
    # Each deployment's worker.log is rotated past this size, keeping this many old files
    # (worker.log.1, ...). Env: TRESTLE_WORKER_LOG_MAX_BYTES, TRESTLE_WORKER_LOG_BACKUPS.
    worker_log_max_bytes: int = field(
        default_factory=lambda: _env_bytes("TRESTLE_WORKER_LOG_MAX_BYTES", 64 * MiB))
    worker_log_backups: int = field(default_factory=lambda: _env_int("TRESTLE_WORKER_LOG_BACKUPS", 3))
    # On SIGTERM or Ctrl-C, `trestle serve` stops accepting connections and gives the requests
    # and streams in flight this many seconds to finish before it stops the workers.
    drain_timeout: float = field(default_factory=lambda: _env_float("TRESTLE_DRAIN_TIMEOUT", 30.0))
    max_body_bytes: int = field(default_factory=lambda: _env_bytes("TRESTLE_MAX_BODY_BYTES", 8 * MiB))
    max_predict_body_bytes: int = field(
        default_factory=lambda: _env_bytes("TRESTLE_MAX_PREDICT_BODY_BYTES", 64 * MiB))
    # Redis for rate limits shared by several gateways (docs/rate-limits.md); None: in memory.
    redis_url: str | None = field(default_factory=lambda: os.environ.get("TRESTLE_REDIS_URL") or None)
    # On PostgreSQL, how often the gateway re-reads the record besides LISTEN/NOTIFY
    # (docs/multiple-gateways.md).
    sync_poll_s: float = field(default_factory=lambda: _env_float("TRESTLE_SYNC_POLL_S", 10.0))
    # How long a verified API key is remembered (a revocation on another gateway that does not
    # reach this one in time still takes effect after this long).
    key_cache_ttl: float = field(default_factory=lambda: _env_float("TRESTLE_KEY_CACHE_TTL", 30.0))

    def body_limit(self, path: str) -> tuple[int, str] | None:
        """The body limit of a route and what sets it (a setting, or the dataset upload limit);
        None: the route bounds its body itself (a push: `trestle.deploy.build.package`)."""
        if path.startswith("/model/"):
            return self.max_predict_body_bytes, "TRESTLE_MAX_PREDICT_BODY_BYTES"
        if path == PUSH_PATH:
            return None
        if path.startswith("/api/datasets/") and path.endswith("/upload"):
            return DATASET_UPLOAD_BYTES, "dataset uploads: 100 MiB of files, 1 MiB of form"
        return self.max_body_bytes, "TRESTLE_MAX_BODY_BYTES"

    limits: Limits = field(default_factory=Limits)

    @property
    def db_url(self) -> str:
        # Imported here: SQLAlchemy takes seconds to import, and the CLI (which reads the
        # defaults above) never opens the store.
        from trestle.store.engine import sqlite_url

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
