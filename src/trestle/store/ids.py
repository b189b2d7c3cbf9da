"""Short, random, URL-safe ids: one letter for the kind, then lowercase base36.

Lowercase because model ids appear in host names (`model-{id}.example.com`), which DNS folds.
"""

from __future__ import annotations

import secrets
import string

ALPHABET = string.ascii_lowercase + string.digits
ID_LENGTH = 8  # after the kind letter: 36**8 ≈ 2.8e12 values


def random_token(length: int) -> str:
    return "".join(secrets.choice(ALPHABET) for _ in range(length))


def new_id(kind: str) -> str:
    """A new id such as `m4k2x9q0a` for kind `m` (models), `d` (deployments), `k` (keys)."""
    return kind + random_token(ID_LENGTH)
