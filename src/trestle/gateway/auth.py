"""API-key authentication: `Authorization: Api-Key KEY` or `Authorization: Bearer KEY`.

The store caches keys that verified; this module remembers keys that did not, so that a client
retrying a wrong key cannot make the gateway run the (deliberately slow) hash again and again.
A key that failed can never become valid later (new keys are random; revoked keys stay revoked),
so the only bound the memory needs is its size.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict

from trestle.errors import Unauthorized
from trestle.store import ApiKey, Store

SCHEMES = ("api-key", "bearer")
_REJECTED_MAX = 10_000
_rejected: OrderedDict[bytes, None] = OrderedDict()


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
    digest = hashlib.sha256(key.encode()).digest()
    found = None if digest in _rejected else await store.verify_api_key(key)
    if found is None:
        _rejected[digest] = None
        if len(_rejected) > _REJECTED_MAX:
            _rejected.popitem(last=False)
        raise Unauthorized("invalid or revoked API key")
    return found
