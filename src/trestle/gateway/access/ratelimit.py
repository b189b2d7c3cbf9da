"""Per-key rate limits: requests and tokens per minute (docs/rate-limits.md).

    limiter = limiter_for(settings.redis_url)   # RedisLimiter (every gateway) or MemoryLimiter
    app = RateLimit(app, limiter)               # inside Authorize: the key is known

A key's `rpm` and `tpm` (`trestle keys create/update --rpm N --tpm M`) bound the data-plane
requests made with it (`/model/...`, `/v1/...`, `/api/endpoints/...`). Each limit is a counter
whose one-minute window starts with its first use: a request is refused (429, in the error
shape of its route, with `Retry-After`) while either counter is at its limit, else counted.
Tokens are counted after the answer, from the usage it reports (`usage.total_tokens`, or its
prompt and completion / input and output tokens; the usage chunk of a stream), so the answer
that crosses the limit is served and the next request is refused. Every answer to a limited key
carries `x-ratelimit-{limit,remaining,reset}-{requests,tokens}` for the limits it has (reset: a
duration like `12.5s`, when the window restarts).

With Redis the counters are shared by every gateway: one Lua script checks and counts atomically
(`RedisLimiter`). Without it each gateway counts in its own memory (`MemoryLimiter`): the limits
then hold per gateway. When Redis cannot be reached, the gateway counts in memory for
`REDIS_BACKOFF_S` before it tries Redis again (so an outage costs one failed call every few
seconds, not one per request), and logs the outage once, and its end. A key without limits costs
nothing here: no Redis round-trip, no parsing.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass
from typing import Protocol

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from trestle.errors import TooManyRequests
from trestle.gateway.access.auth import ANTHROPIC_PATHS, DATA_PLANE, calling_key
from trestle.protocol import anthropic
from trestle.protocol.errors import error_for

log = logging.getLogger("trestle.gateway.access.ratelimit")

WINDOW_MS = 60_000
MAX_USAGE_BODY = 4 * 1024 * 1024  # a JSON answer larger than this is not parsed for its usage
REDIS_TIMEOUT_S = 1.0
REDIS_BACKOFF_S = 5.0  # after a failed call, count in memory this long before trying Redis again
PREFIX = "trestle:ratelimit:"


@dataclass(frozen=True)
class Decision:
    """A request checked against a key's limits: whether it may go, and the counters after it."""

    allowed: bool
    rpm: int | None
    tpm: int | None
    requests: int  # counted in the requests window, this request included when allowed
    requests_reset_ms: int
    tokens: int
    tokens_reset_ms: int

    def headers(self) -> list[tuple[bytes, bytes]]:
        out = []
        for kind, limit, used, reset in (("requests", self.rpm, self.requests, self.requests_reset_ms),
                                         ("tokens", self.tpm, self.tokens, self.tokens_reset_ms)):
            if limit:
                out += [(f"x-ratelimit-limit-{kind}".encode(), str(limit).encode()),
                        (f"x-ratelimit-remaining-{kind}".encode(), str(max(0, limit - used)).encode()),
                        (f"x-ratelimit-reset-{kind}".encode(), duration(reset).encode())]
        return out

    def refusal(self, name: str) -> TooManyRequests:
        if self.rpm and self.requests >= self.rpm:
            what, wait = f"{self.rpm} requests per minute", self.requests_reset_ms
        else:
            what, wait = f"{self.tpm} tokens per minute", self.tokens_reset_ms
        return TooManyRequests(f"rate limit reached for this API key ({name}): {what}; "
                               f"retry in {duration(wait)}", retry_after=wait / 1000,
                               code="rate_limit_exceeded")


def duration(ms: int) -> str:
    """`250ms`, `12.5s`, `1m0s`: how OpenAI spells its reset headers."""
    if ms < 1000:
        return f"{max(0, ms)}ms"
    if ms < 60_000:
        return f"{ms / 1000:g}s"
    return f"{ms // 60_000}m{(ms % 60_000) / 1000:g}s"


class RateLimiter(Protocol):
    async def acquire(self, key_id: str, rpm: int | None, tpm: int | None) -> Decision: ...

    async def add_tokens(self, key_id: str, tokens: int) -> None: ...

    async def close(self) -> None: ...


class MemoryLimiter:
    """The counters in this process (one gateway). No awaits inside: each call is atomic."""

    def __init__(self):
        self._windows: dict[str, tuple[int, float]] = {}  # counter -> (count, ends at, monotonic)

    def _read(self, name: str, now: float) -> tuple[int, int]:
        count, ends = self._windows.get(name, (0, 0.0))
        if ends <= now:
            self._windows.pop(name, None)
            return 0, 0
        return count, math.ceil((ends - now) * 1000)

    def _add(self, name: str, n: int, now: float) -> tuple[int, int]:
        count, reset = self._read(name, now)
        if not count:
            reset = WINDOW_MS
            self._windows[name] = (n, now + WINDOW_MS / 1000)
        else:
            self._windows[name] = (count + n, self._windows[name][1])
        if len(self._windows) > 100_000:  # bounded: forget the windows that ended
            self._windows = {k: v for k, v in self._windows.items() if v[1] > now}
        return count + n, reset

    async def acquire(self, key_id: str, rpm: int | None, tpm: int | None) -> Decision:
        now = time.monotonic()
        requests, requests_reset = self._read(f"{key_id}:requests", now)
        tokens, tokens_reset = self._read(f"{key_id}:tokens", now)
        allowed = not ((rpm and requests >= rpm) or (tpm and tokens >= tpm))
        if allowed:
            requests, requests_reset = self._add(f"{key_id}:requests", 1, now)
        return Decision(bool(allowed), rpm, tpm, requests, requests_reset, tokens, tokens_reset)

    async def add_tokens(self, key_id: str, tokens: int) -> None:
        self._add(f"{key_id}:tokens", tokens, time.monotonic())

    async def close(self) -> None:
        pass


# KEYS: the requests counter, the tokens counter. ARGV: rpm, tpm (0: none), the window in ms.
# Returns {allowed, requests, requests' ms to reset, tokens, tokens' ms to reset}.
ACQUIRE = """
local rpm, tpm, window = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local requests = tonumber(redis.call('GET', KEYS[1]) or '0')
local requests_ttl = redis.call('PTTL', KEYS[1])
local tokens = tonumber(redis.call('GET', KEYS[2]) or '0')
local tokens_ttl = redis.call('PTTL', KEYS[2])
if requests_ttl < 0 then requests, requests_ttl = 0, 0 end
if tokens_ttl < 0 then tokens, tokens_ttl = 0, 0 end
if (rpm > 0 and requests >= rpm) or (tpm > 0 and tokens >= tpm) then
  return {0, requests, requests_ttl, tokens, tokens_ttl}
end
requests = redis.call('INCR', KEYS[1])
if requests == 1 then
  redis.call('PEXPIRE', KEYS[1], window)
  requests_ttl = window
end
return {1, requests, requests_ttl, tokens, tokens_ttl}
"""
# KEYS: the tokens counter. ARGV: tokens, the window in ms.
ADD = """
local n = redis.call('INCRBY', KEYS[1], ARGV[1])
if redis.call('PTTL', KEYS[1]) < 0 then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return n
"""


class RedisLimiter:
    """The counters in Redis, shared by every gateway that uses the same server."""

    def __init__(self, url: str, *, backoff_s: float = REDIS_BACKOFF_S):
        import redis.asyncio as redis

        self._errors = (redis.RedisError, OSError)
        self._redis = redis.Redis.from_url(url, socket_timeout=REDIS_TIMEOUT_S,
                                           socket_connect_timeout=REDIS_TIMEOUT_S)
        self._acquire = self._redis.register_script(ACQUIRE)
        self._add = self._redis.register_script(ADD)
        self._fallback = MemoryLimiter()
        self.backoff_s = backoff_s
        self._retry_at = 0.0  # while Redis is down: when to try it again (monotonic)
        self.down = False  # the last call to Redis failed (the outage is logged once)

    def _in_memory(self) -> bool:
        """Whether to count in memory now: Redis failed less than `backoff_s` ago."""
        return self.down and time.monotonic() < self._retry_at

    def _unreachable(self, exc: Exception) -> None:
        self._retry_at = time.monotonic() + self.backoff_s
        if not self.down:
            self.down = True
            log.warning("Redis cannot be reached (%s); rate limits are counted by this gateway "
                        "alone until it can (trying again every %gs)", type(exc).__name__,
                        self.backoff_s)

    def _reached(self) -> None:
        if self.down:
            self.down = False
            log.warning("Redis can be reached again; rate limits are counted there again")

    async def acquire(self, key_id: str, rpm: int | None, tpm: int | None) -> Decision:
        if self._in_memory():
            return await self._fallback.acquire(key_id, rpm, tpm)
        keys = [f"{PREFIX}{key_id}:requests", f"{PREFIX}{key_id}:tokens"]
        try:
            allowed, requests, requests_reset, tokens, tokens_reset = await self._acquire(
                keys=keys, args=[rpm or 0, tpm or 0, WINDOW_MS])
        except self._errors as exc:
            self._unreachable(exc)
            return await self._fallback.acquire(key_id, rpm, tpm)
        self._reached()
        return Decision(bool(allowed), rpm, tpm, int(requests), int(requests_reset), int(tokens),
                        int(tokens_reset))

    async def add_tokens(self, key_id: str, tokens: int) -> None:
        if self._in_memory():
            await self._fallback.add_tokens(key_id, tokens)
            return
        try:
            await self._add(keys=[f"{PREFIX}{key_id}:tokens"], args=[tokens, WINDOW_MS])
        except self._errors as exc:
            self._unreachable(exc)
            await self._fallback.add_tokens(key_id, tokens)
            return
        self._reached()

    async def close(self) -> None:
        await self._redis.aclose()


def limiter_for(redis_url: str | None) -> RateLimiter:
    return RedisLimiter(redis_url) if redis_url else MemoryLimiter()


class UsageCounter:
    """The tokens an answer reports: its JSON body's `usage`, or the usage in a stream's events."""

    def __init__(self, content_type: str):
        self.stream = content_type.startswith("text/event-stream")
        self.json = content_type.startswith("application/json")
        self._buffer = bytearray()
        self._seen: dict[str, int] = {}

    def feed(self, chunk: bytes) -> None:
        if not (self.stream or self.json) or len(self._buffer) > MAX_USAGE_BODY:
            return
        self._buffer += chunk
        if self.stream:
            *lines, rest = self._buffer.split(b"\n")
            self._buffer = bytearray(rest)
            for line in lines:
                # (`"usage":null` is in every chunk of an engine's stream: look for its counts)
                if line.startswith(b"data:") and b'_tokens"' in line:
                    self._take(line[5:])

    def _take(self, text: bytes) -> None:
        try:
            event = json.loads(text)
            usage = event.get("usage")
            if usage is None and isinstance(event.get("message"), dict):  # Anthropic's message_start
                usage = event["message"].get("usage")
        except (ValueError, AttributeError):
            return
        if not isinstance(usage, dict):
            return
        for field in ("total_tokens", "prompt_tokens", "completion_tokens", "input_tokens",
                      "output_tokens"):
            value = usage.get(field)
            if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
                self._seen[field] = max(value, self._seen.get(field, 0))

    def tokens(self) -> int:
        if self.json and self._buffer and len(self._buffer) <= MAX_USAGE_BODY:
            self._take(bytes(self._buffer))
            self._buffer.clear()
        seen = self._seen
        if "total_tokens" in seen:
            return seen["total_tokens"]
        return (seen.get("prompt_tokens", 0) + seen.get("completion_tokens", 0)
                + seen.get("input_tokens", 0) + seen.get("output_tokens", 0))


class RateLimit:
    """Checks a limited key's request against its limits before the request goes on, puts the
    counters in the answer's headers, and counts the tokens its answer reports."""

    def __init__(self, app: ASGIApp, limiter: RateLimiter):
        self.app = app
        self.limiter = limiter

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        key = calling_key(scope) if scope["type"] == "http" else None
        if (key is None or (key.rpm is None and key.tpm is None)
                or not scope["path"].startswith(DATA_PLANE)):
            await self.app(scope, receive, send)
            return
        decision = await self.limiter.acquire(key.id, key.rpm, key.tpm)
        if not decision.allowed:
            exc = decision.refusal(key.name)
            path = scope["path"]
            response = (anthropic.error_response(exc) if path in ANTHROPIC_PATHS
                        else error_for(path, exc, worker=False))
            headers = MutableHeaders(raw=response.raw_headers)
            for name, value in decision.headers():
                headers.append(name.decode(), value.decode())
            await response(scope, receive, send)
            return
        counter: UsageCounter | None = None

        async def send_counted(message: Message) -> None:
            nonlocal counter
            if message["type"] == "http.response.start":
                # the key's own limits replace any an upstream provider sent
                raw = [(k, v) for k, v in message.get("headers", [])
                       if not k.lower().startswith(b"x-ratelimit-")]
                if key.tpm:
                    content_type = next((v for k, v in raw if k.lower() == b"content-type"), b"")
                    counter = UsageCounter(content_type.decode("latin-1").lower())
                message = {**message, "headers": raw + decision.headers()}
            elif message["type"] == "http.response.body" and counter is not None:
                counter.feed(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, receive, send_counted)
        finally:
            if counter is not None and (tokens := counter.tokens()):
                await self.limiter.add_tokens(key.id, tokens)
