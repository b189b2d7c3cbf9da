"""API keys at the gateway: who is calling (authentication), and what their key may do (scopes).

`ApiKeyBackend` is a Starlette authentication backend: `authenticate(conn)` reads
`Authorization: Api-Key KEY` or `Authorization: Bearer KEY` (on the Anthropic route,
`/v1/messages`, also `x-api-key: KEY`, as Anthropic's clients send it) and returns the key's
credentials (its scope) and user, or raises `AuthenticationError` (answered 401 by the gateway's
`AuthenticationMiddleware`, in Anthropic's envelope on that route). `/health`, `/metrics` and
`/openapi.json` need no key.

A wrong key costs a deliberately slow scrypt hash, so failed checks are rationed: the store runs
the hash only for a key whose prefix is an active key's, and only after `KeyThrottle.take` has
found a token for that prefix and for the client's address (else 429, `Retry-After`). Keys that
failed are remembered for a while (`REJECTED_TTL_S`), so retrying one costs nothing; keys that
verified are remembered too, so a flood of wrong keys never locks a working key out.

`Authorize` (inside the authentication middleware) enforces the key's scope: `admin` may do
everything; `invoke` only the data plane (`DATA_PLANE`), and, for a limited key, only the models
and endpoints it lists. An `invoke` key that is not limited may also search datasets
(`POST /api/datasets/{dataset}/search`); everything else about datasets needs `admin`. Routes
that pick a model from the body (the `/v1` Model APIs by slug) call `require_model(scope,
model_id)` themselves.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections import OrderedDict

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily
from starlette.authentication import (
    AuthCredentials, AuthenticationBackend, AuthenticationError, SimpleUser,
)
from starlette.requests import HTTPConnection
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from trestle.errors import Forbidden, Unauthorized
from trestle.gateway.access.throttle import KeyThrottle
from trestle.protocol.errors import ANTHROPIC_ROUTES, error_for
from trestle.store import ApiKey, Store
from trestle.store.keys import ADMIN

SCHEMES = ("api-key", "bearer")
PUBLIC_PATHS = frozenset({"/health", "/metrics", "/openapi.json"})
DATA_PLANE = ("/model/", "/v1/", "/api/endpoints/")
_DATASET_SEARCH = re.compile(r"^/api/datasets/[^/]+/search$")
HOW = "send `Authorization: Api-Key YOUR_KEY` (or `Bearer YOUR_KEY`)"
ANTHROPIC_PATHS = ANTHROPIC_ROUTES  # where `x-api-key` is a key too
HOW_ANTHROPIC = "send `x-api-key: YOUR_KEY` (or `Authorization: Bearer YOUR_KEY`)"
REJECTED_TTL_S = 300.0
_REMEMBERED_MAX = 10_000


def credentials(authorization: str | None, x_api_key: str | None = None) -> str:
    """The key in an Authorization header (or, where given, an x-api-key header);
    AuthenticationError saying what is wrong otherwise."""
    if x_api_key is not None and not (authorization and authorization.strip()):
        if not x_api_key.strip():
            raise AuthenticationError(f"empty x-api-key header: {HOW_ANTHROPIC}")
        return x_api_key.strip()
    if not authorization or not authorization.strip():
        raise AuthenticationError(f"missing API key: {HOW}")
    scheme, _, key = authorization.strip().partition(" ")
    if scheme.lower() not in SCHEMES:
        shown = scheme[:20] if scheme.isascii() and scheme.isalnum() else "(unreadable)"
        raise AuthenticationError(f"unsupported authorization scheme {shown!r}: {HOW}")
    key = key.strip()
    if not key:
        raise AuthenticationError(f"missing API key after {scheme!r}: {HOW}")
    return key


class KeyUser(SimpleUser):
    def __init__(self, key: ApiKey):
        super().__init__(key.name)
        self.key = key


class _Remembered:
    """Fingerprints of keys, each for `ttl` seconds (None: until evicted), at most `max_size`."""

    def __init__(self, ttl: float | None, max_size: int = _REMEMBERED_MAX):
        self.ttl = ttl
        self.max_size = max_size
        self._items: OrderedDict[bytes, float] = OrderedDict()

    def __contains__(self, digest: bytes) -> bool:
        expires = self._items.get(digest)
        if expires is None:
            return False
        if expires <= time.monotonic():
            del self._items[digest]
            return False
        return True

    def add(self, digest: bytes) -> None:
        self._items.pop(digest, None)
        self._items[digest] = time.monotonic() + self.ttl if self.ttl else float("inf")
        if len(self._items) > self.max_size:
            self._items.popitem(last=False)

    def discard(self, digest: bytes) -> None:
        self._items.pop(digest, None)


class ApiKeyBackend(AuthenticationBackend):
    def __init__(self, store: Store, throttle: KeyThrottle | None = None,
                 registry: CollectorRegistry | None = None):
        self.store = store
        self.throttle = throttle or KeyThrottle()
        self._rejected = _Remembered(REJECTED_TTL_S)
        self._verified = _Remembered(None)
        if registry is not None:
            registry.register(_HashChecks(store))

    async def authenticate(self, conn: HTTPConnection) -> tuple[AuthCredentials, KeyUser] | None:
        if conn.scope["path"] in PUBLIC_PATHS:
            return None
        anthropic_route = conn.scope["path"] in ANTHROPIC_PATHS
        key = credentials(conn.headers.get("authorization"),
                          conn.headers.get("x-api-key") if anthropic_route else None)
        digest = hashlib.sha256(key.encode()).digest()
        if digest in self._rejected:
            raise AuthenticationError("invalid or revoked API key")
        address = conn.client.host if conn.client else "unknown"
        taken: list[str] = []

        def before_hash(prefix: str) -> None:
            if digest not in self._verified:
                self.throttle.take(prefix, address)
                taken.append(prefix)

        found = await self.store.verify_api_key(key, before_hash)
        if found is None:
            self._verified.discard(digest)
            self._rejected.add(digest)
            raise AuthenticationError("invalid or revoked API key")
        for prefix in taken:
            self.throttle.give_back(prefix, address)
        self._verified.add(digest)
        return AuthCredentials([found.scope]), KeyUser(found)


class _HashChecks:
    """`trestle_api_key_hash_checks_total`: scrypt checks of API keys run by the store."""

    def __init__(self, store: Store):
        self.store = store

    def collect(self):
        yield CounterMetricFamily("trestle_api_key_hash_checks", "API key hash (scrypt) checks run",
                                  value=self.store.hash_checks)


def on_error(conn: HTTPConnection, exc: AuthenticationError) -> Response:
    how = HOW_ANTHROPIC if conn.scope["path"] in ANTHROPIC_PATHS else HOW
    return error_for(conn.scope["path"], Unauthorized(str(exc).replace(HOW, how)), worker=False)


def calling_key(scope: Scope) -> ApiKey | None:
    """The key of the request, or None when auth is off (or the path is public)."""
    user = scope.get("user")
    return user.key if isinstance(user, KeyUser) else None


def require_model(scope: Scope, model_id: str) -> None:
    """Forbidden unless the request's key may call `model_id`."""
    key = calling_key(scope)
    if key is not None and not key.may_call_model(model_id):
        raise Forbidden(f"this API key ({key.name}) may not call model {model_id}; "
                        f"it is limited to: {_limits(key)}", code="model_not_allowed")


def _limits(key: ApiKey) -> str:
    listed = [f"model {m}" for m in key.models or ()] + [f"endpoint {e}" for e in key.endpoints or ()]
    return ", ".join(listed) or "nothing"


def _segment(path: str, prefix: str) -> str:
    return path[len(prefix):].split("/", 1)[0]


class Authorize:
    """The key's scope against the path: 403 (naming the scope needed) when it does not allow it."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        key = calling_key(scope) if scope["type"] == "http" else None
        if key is not None and key.scope != ADMIN:
            self.check(key, scope)
        await self.app(scope, receive, send)

    @staticmethod
    def check(key: ApiKey, scope: Scope) -> None:
        path = scope["path"]
        if scope["method"] == "POST" and _DATASET_SEARCH.match(path):
            if key.limited:
                raise Forbidden(f"this API key ({key.name}) is limited to: {_limits(key)}; "
                                "searching datasets needs an unlimited key", code="dataset_not_allowed")
            return
        if not path.startswith(DATA_PLANE):
            raise Forbidden(
                f"this API key has the `{key.scope}` scope, which calls models only; "
                f"{scope['method']} {path} needs a key with the `admin` scope",
                code="admin_scope_required",
            )
        if path.startswith("/model/"):
            require_model(scope, _segment(path, "/model/"))
        elif path.startswith("/api/endpoints/"):
            endpoint = _segment(path, "/api/endpoints/")
            if not key.may_call_endpoint(endpoint):
                raise Forbidden(f"this API key ({key.name}) may not call endpoint {endpoint}; "
                                f"it is limited to: {_limits(key)}", code="endpoint_not_allowed")
