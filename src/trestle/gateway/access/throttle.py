"""Token buckets for failed key verifications: a wrong key costs a scrypt hash, so it is rationed.

    throttle = KeyThrottle()
    throttle.take(prefix, address)     # before a hash check; raises TooManyRequests when empty
    throttle.give_back(prefix, address)  # the key was right: only failures count

Each real key's prefix and each client address gets a bucket of `burst` checks that refills at
`rate` per second. A check takes one token from both (none when either is empty, and the caller
gets a 429 with `Retry-After`); a check that succeeds gives them back, so only failures count
(taking first keeps a burst of concurrent wrong keys from all being checked at once). The buckets live in this process's memory, bounded in number: a
full bucket is the same as no bucket, so the oldest are dropped first.
"""

from __future__ import annotations

import time
from collections import OrderedDict

from trestle.errors import TooManyRequests

MAX_BUCKETS = 10_000


class TokenBuckets:
    def __init__(self, burst: float, rate: float, max_buckets: int = MAX_BUCKETS):
        self.burst = burst
        self.rate = rate
        self.max_buckets = max_buckets
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # key -> (tokens, at)

    def wait(self, key: str, now: float) -> float:
        """Seconds until `key` has a token (0: it has one now)."""
        tokens, at = self._buckets.get(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - at) * self.rate)
        return 0.0 if tokens >= 1 else (1 - tokens) / self.rate

    def take(self, key: str, now: float) -> None:
        tokens, at = self._buckets.pop(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - at) * self.rate)
        self._buckets[key] = (tokens - 1, now)
        while len(self._buckets) > self.max_buckets:
            self._buckets.popitem(last=False)

    def give_back(self, key: str) -> None:
        if key in self._buckets:
            tokens, at = self._buckets[key]
            self._buckets[key] = (min(self.burst, tokens + 1), at)


class KeyThrottle:
    """Hash checks per key prefix and per client address (defaults: bursts of 10, then 1 / 2 s)."""

    def __init__(self, burst: float = 10, rate: float = 0.5):
        self.by_prefix = TokenBuckets(burst, rate)
        self.by_address = TokenBuckets(burst, rate)

    def take(self, prefix: str, address: str) -> None:
        now = time.monotonic()
        wait = max(self.by_prefix.wait(prefix, now), self.by_address.wait(address, now))
        if wait > 0:
            raise TooManyRequests(
                "too many failed API key checks for this key prefix or from this address; "
                "retry later", retry_after=wait, code="key_checks_rate_limited",
            )
        self.by_prefix.take(prefix, now)
        self.by_address.take(address, now)

    def give_back(self, prefix: str, address: str) -> None:
        self.by_prefix.give_back(prefix)
        self.by_address.give_back(address)
