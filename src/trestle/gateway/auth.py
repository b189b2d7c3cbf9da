"""API-key authentication: `Authorization: Api-Key KEY` or `Authorization: Bearer KEY`.

`ApiKeyBackend` is a Starlette authentication backend: `authenticate(conn)` returns the key's
credentials and user, or raises `AuthenticationError` (answered 401 by the gateway's
`AuthenticationMiddleware`). `/health`, `/metrics` and `/openapi.json` need no key.

The store caches keys that verified; this module remembers keys that did not, so that a client
retrying a wrong key cannot make the gateway run the (deliberately slow) hash again and again.
A key that failed can never become valid later (new keys are random; revoked keys stay revoked),
so the only bound the memory needs is its size.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict

from starlette.authentication import (
    AuthCredentials, AuthenticationBackend, AuthenticationError, SimpleUser,
)
from starlette.requests import HTTPConnection
from starlette.responses import Response

from trestle.errors import Unauthorized
from trestle.protocol.errors import error_response
from trestle.store import ApiKey, Store

SCHEMES = ("api-key", "bearer")
PUBLIC_PATHS = frozenset({"/health", "/metrics", "/openapi.json"})
_REJECTED_MAX = 10_000


def credentials(authorization: str | None) -> str | None:
    """The key in an Authorization header, or None when the header has none."""
    if not authorization:
        return None
    scheme, _, key = authorization.partition(" ")
    key = key.strip()
    if scheme.lower() not in SCHEMES or not key:
        return None
    return key


class KeyUser(SimpleUser):
    def __init__(self, key: ApiKey):
        super().__init__(key.name)
        self.key = key


class ApiKeyBackend(AuthenticationBackend):
    def __init__(self, store: Store):
        self.store = store
        self._rejected: OrderedDict[bytes, None] = OrderedDict()

    async def authenticate(self, conn: HTTPConnection) -> tuple[AuthCredentials, KeyUser] | None:
        if conn.scope["path"] in PUBLIC_PATHS:
            return None
        key = credentials(conn.headers.get("authorization"))
        if key is None:
            raise AuthenticationError(
                "missing API key: send `Authorization: Api-Key YOUR_KEY` (or `Bearer YOUR_KEY`)"
            )
        digest = hashlib.sha256(key.encode()).digest()
        found = None if digest in self._rejected else await self.store.verify_api_key(key)
        if found is None:
            self._rejected[digest] = None
            if len(self._rejected) > _REJECTED_MAX:
                self._rejected.popitem(last=False)
            raise AuthenticationError("invalid or revoked API key")
        return AuthCredentials(["authenticated"]), KeyUser(found)


def on_error(conn: HTTPConnection, exc: AuthenticationError) -> Response:
    return error_response(Unauthorized(str(exc)))
