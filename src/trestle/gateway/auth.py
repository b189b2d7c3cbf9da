"""API-key authentication: `Authorization: Api-Key KEY` or `Authorization: Bearer KEY`."""

from __future__ import annotations

from trestle.errors import Unauthorized
from trestle.store import ApiKey, Store

SCHEMES = ("api-key", "bearer")


def credentials(authorization: str | None) -> str | None:
    """The key in an Authorization header, or None when the header has none."""
    if not authorization:
        return None
    scheme, _, key = authorization.partition(" ")
    key = key.strip()
    if scheme.lower() not in SCHEMES or not key:
        return None
    return key


async def authenticate(store: Store, authorization: str | None) -> ApiKey:
    key = credentials(authorization)
    if key is None:
        raise Unauthorized(
            "missing API key: send `Authorization: Api-Key YOUR_KEY` (or `Bearer YOUR_KEY`)"
        )
    found = await store.verify_api_key(key)
    if found is None:
        raise Unauthorized("invalid or revoked API key")
    return found
