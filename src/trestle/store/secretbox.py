"""Secrets at rest: each value is encrypted with Fernet (AES-128-CBC + HMAC-SHA256, from
`cryptography`) under a key kept in a file outside the database.

The key file (`TRESTLE_HOME/secrets.key` by default: beside a SQLite store) is created on first
use, mode 0600, 32 random bytes in URL-safe base64. A copy of the database without the key file
holds no readable secret; lose the key file and the secrets must be set again. Values are never
logged, and a token that does not decrypt under the key is an error that names the secret only.
"""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken

KEY_FILE = "secrets.key"


class SecretKeyError(Exception):
    """The key file is unreadable, malformed, or not the key the secrets were encrypted with."""


class SecretBox:
    def __init__(self, key_file: Path):
        self.key_file = Path(key_file)
        self._fernet: Fernet | None = None

    def _key(self) -> Fernet:
        if self._fernet is None:
            self._fernet = Fernet(_load_or_create(self.key_file))
        return self._fernet

    def encrypt(self, value: str) -> str:
        return self._key().encrypt(value.encode()).decode("ascii")

    def decrypt(self, name: str, token: str) -> str:
        try:
            return self._key().decrypt(token.encode("ascii")).decode()
        except (InvalidToken, UnicodeError):
            raise SecretKeyError(
                f"secret {name!r} does not decrypt with the key in {self.key_file.name}: "
                "was the key file replaced? Set the secret again"
            ) from None


def _load_or_create(path: Path) -> bytes:
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    else:
        with os.fdopen(fd, "wb") as f:
            f.write(Fernet.generate_key() + b"\n")
    try:
        key = path.read_bytes().strip()
        Fernet(key)
    except (OSError, ValueError) as exc:
        raise SecretKeyError(f"the secrets key file {path.name} is not usable: {type(exc).__name__}") from None
    return key
