"""Store costs on the request path: API-key verification and environment lookup (SQLite).

Run:  .venv/bin/python bench/store.py [--n 2000]

Prints p50 / p99 per call, with targets:
  - verify_api_key, cached (every request after the first)     target: p50 <= 0.05 ms
  - verify_api_key, first sight of a key (scrypt, in a thread)  target: p50 <= 100 ms
    (slow on purpose: it is what makes a stolen hash expensive to crack; the cache hides it)
  - get_environment (the routing lookup)                        target: p50 <= 1 ms
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

from trestle.store import Store, sqlite_url


async def timed(n: int, call) -> list[float]:
    out = []
    for _ in range(n):
        start = time.perf_counter()
        await call()
        out.append((time.perf_counter() - start) * 1000)
    return out


def report(label: str, ms: list[float], target_ms: float) -> None:
    p50 = statistics.median(ms)
    p99 = statistics.quantiles(ms, n=100)[98] if len(ms) >= 100 else max(ms)
    verdict = "ok" if p50 <= target_ms else "MISSED"
    print(
        f"{label:<34} p50 {p50:9.3f} ms   p99 {p99:9.3f} ms   "
        f"target p50 <= {target_ms} ms  {verdict}"
    )


async def main(n: int) -> None:
    home = Path(tempfile.mkdtemp(prefix="trestle-bench-"))
    async with await Store.open(sqlite_url(home / "trestle.db")) as store:
        model = await store.create_model("bench")
        dep = await store.create_deployment(model.id, {}, "/bench")
        await store.set_environment(model.id, "production", dep.id)

        fresh = [await store.create_api_key(f"k{i}") for i in range(20)]
        first = []
        for _, plaintext in fresh:
            first += await timed(1, lambda p=plaintext: store.verify_api_key(p))
        _, plaintext = fresh[0]
        cached = await timed(n, lambda: store.verify_api_key(plaintext))
        env = await timed(n, lambda: store.get_environment(model.id, "production"))

    report("verify_api_key (cached)", cached, 0.05)
    report("verify_api_key (first, scrypt)", first, 100)
    report("get_environment", env, 1)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=2000)
    asyncio.run(main(parser.parse_args().n))
