"""API key material: the plaintext format, the salted hash, and the verification cache.

A key is `tr_{prefix}_{secret}`. The prefix (8 lowercase base36 characters) is stored in clear
and finds the row; the whole plaintext is hashed with scrypt and a per-key random salt, and only
that hash is stored. Nothing here logs a key.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

from trestle.errors import BadRequest
from trestle.store.ids import ALPHABET, random_token
from trestle.store.records import ApiKey

KEY_SCHEME = "tr"
PREFIX_LENGTH = 8
SECRET_BYTES = 32
SALT_BYTES = 16
# scrypt cost: n=2**14, r=8, p=1 uses 16 MiB and takes tens of milliseconds; the cache below
# keeps that off the hot path.
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1
HASH_BYTES = 32

ADMIN, INVOKE = "admin", "invoke"
SCOPES = (ADMIN, INVOKE)
MAX_LIMITS = 100  # ids in a key's models or endpoints list
_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")


MAX_RATE = 1_000_000_000  # requests or tokens per minute


def check_rate(value: int | None, param: str) -> int | None:
    """A rate limit per minute: None or 0 means none (stored as None); BadRequest otherwise."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_RATE:
        raise BadRequest(f"`{param}` must be an integer from 0 (no limit) to {MAX_RATE}", param=param)
    return value or None


def check_scope(scope: str, models: list[str] | None, endpoints: list[str] | None,
                ) -> tuple[str, list[str] | None, list[str] | None]:
    """A key's scope and limits, validated (BadRequest naming the field otherwise)."""
    if scope not in SCOPES:
        raise BadRequest(f"unknown scope {scope!r}; expected one of {', '.join(SCOPES)}",
                         param="scope")
    for param, ids in (("models", models), ("endpoints", endpoints)):
        if ids is None:
            continue
        if scope == ADMIN:
            raise BadRequest(f"an admin key can do everything; only invoke keys take `{param}`",
                             param=param)
        if len(ids) > MAX_LIMITS or not all(isinstance(i, str) and _ID.fullmatch(i) for i in ids):
            raise BadRequest(f"`{param}` must be a list of at most {MAX_LIMITS} ids", param=param)
    dedup = lambda ids: None if ids is None else list(dict.fromkeys(ids))  # noqa: E731
    return scope, dedup(models), dedup(endpoints)


def new_plaintext() -> tuple[str, str]:
    """A fresh `(prefix, plaintext)`."""
    prefix = random_token(PREFIX_LENGTH)
    return prefix, f"{KEY_SCHEME}_{prefix}_{secrets.token_urlsafe(SECRET_BYTES)}"


def parse_prefix(plaintext: str) -> str | None:
    """The prefix of a well-formed key, else None (no error: a bad key is just not a key)."""
    if not isinstance(plaintext, str):
        return None
    parts = plaintext.split("_", 2)
    if len(parts) != 3 or parts[0] != KEY_SCHEME or not parts[2]:
        return None
    prefix = parts[1]
    if len(prefix) != PREFIX_LENGTH or any(c not in ALPHABET for c in prefix):
        return None
    return prefix


def _scrypt(plaintext: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(
        plaintext.encode(), salt=salt, n=n, r=r, p=p, maxmem=256 * n * r * p, dklen=HASH_BYTES
    )


def hash_key(plaintext: str) -> str:
    """The stored form: `scrypt$n$r$p$salt_hex$hash_hex`."""
    salt = secrets.token_bytes(SALT_BYTES)
    digest = _scrypt(plaintext, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P)
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${salt.hex()}${digest.hex()}"


def check_key(plaintext: str, stored: str) -> bool:
    """Whether `plaintext` matches the stored hash, compared in constant time."""
    try:
        scheme, n, r, p, salt_hex, digest_hex = stored.split("$")
        if scheme != "scrypt":
            return False
        digest = _scrypt(plaintext, bytes.fromhex(salt_hex), int(n), int(r), int(p))
    except ValueError:
        return False
    return hmac.compare_digest(digest, bytes.fromhex(digest_hex))


def write_key_file(path: Path, plaintext: str) -> None:
    """Write a key to `path`, readable by its owner only, replacing the file atomically."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(plaintext + "\n")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def fingerprint(plaintext: str) -> bytes:
    """A fast hash of the plaintext, used only as a cache key in memory."""
    return hashlib.sha256(plaintext.encode()).digest()


@dataclass
class _Entry:
    key: ApiKey
    expires: float


class VerifiedKeyCache:
    """Successful verifications, remembered for `ttl` seconds, keyed by `fingerprint()`.

    Only this process's revocations drop entries at once; a key revoked by another gateway on the
    same database is dropped when that change reaches this one (`Store.refresh_keys`, run by
    `trestle.store.changes`), and in any case within `ttl` seconds.
    """

    def __init__(self, ttl: float = 30.0, max_entries: int = 10_000):
        self.ttl = ttl
        self.max_entries = max_entries
        self._entries: dict[bytes, _Entry] = {}
        # Bumped by every drop(): a verification that started before a revocation must not
        # put its (possibly stale) result in the cache.
        self.generation = 0

    def get(self, plaintext: str) -> ApiKey | None:
        fp = fingerprint(plaintext)
        entry = self._entries.get(fp)
        if entry is None:
            return None
        if entry.expires <= time.monotonic():
            del self._entries[fp]
            return None
        return entry.key

    def put(self, plaintext: str, key: ApiKey, generation: int) -> None:
        if generation != self.generation or self.ttl <= 0:
            return
        now = time.monotonic()
        if len(self._entries) >= self.max_entries:
            self._entries = {fp: e for fp, e in self._entries.items() if e.expires > now}
            if len(self._entries) >= self.max_entries:
                self._entries.clear()
        self._entries[fingerprint(plaintext)] = _Entry(key, now + self.ttl)

    def drop(self, key_id: str) -> None:
        self.generation += 1
        self._entries = {fp: e for fp, e in self._entries.items() if e.key.id != key_id}

    def keys(self) -> list[ApiKey]:
        """The records remembered (possibly stale: see `Store.refresh_keys`)."""
        return [e.key for e in self._entries.values()]

    def __len__(self) -> int:
        return len(self._entries)
