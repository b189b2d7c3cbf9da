"""Gateway overhead: the same model called through `trestle serve` and straight on a worker socket.

Run:  .venv/bin/python bench/gateway.py [--requests 4000] [--rounds 8]

Both paths hit the same example model (`examples/hello`) in a worker process of the same kind,
in the same run, so the figures are ratios against an anchor measured alongside:
  - added p50 / p99 latency at concurrency 1   (target: added p50 <= 0.3 ms); the two paths are
    measured in alternating rounds and the added p50 is the median of the rounds' differences
  - throughput at concurrency 16, gateway / direct (target: >= 0.5x)
  - CPU time per request at concurrency 1 of the gateway process and of the worker (no target):
    unlike latency it hardly moves when other work shares the machine, so it compares versions
    of the gateway on a loaded machine
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from support import EXAMPLES, start_server  # noqa: E402

BODY = b'{"name": "bench"}'


async def run_load(session: aiohttp.ClientSession, url: str, total: int, concurrency: int):
    latencies: list[float] = []
    remaining = total

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            t0 = time.perf_counter()
            async with session.post(url, data=BODY,
                                    headers={"Content-Type": "application/json"}) as resp:
                await resp.read()
                assert resp.status == 200, resp.status
            latencies.append(time.perf_counter() - t0)

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - t0
    return latencies, total / elapsed


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def worker_process(gateway_pid: int) -> int:
    """The worker's Python process: a descendant of the gateway, under the sandbox's launchers."""
    pids = subprocess.run(["pgrep", "-f", "-x", "[^ ]*python[0-9.]* -m trestle.runtime .*"],
                          capture_output=True, text=True).stdout.split()
    for pid in map(int, pids):
        parent = pid
        while parent > 1:
            parent = int(Path(f"/proc/{parent}/stat").read_text().rsplit(")", 1)[1].split()[1])
            if parent == gateway_pid:
                return pid
    raise RuntimeError("the gateway's worker process was not found")


async def latency_rounds(paths: dict[str, tuple[aiohttp.ClientSession, str, dict[str, int]]],
                         n: int, rounds: int) -> dict[str, dict]:
    """Concurrency-1 latency of each path in alternating rounds (direct, gateway, direct, ...), so
    that a slow spell of a shared machine falls on both; CPU time of each path's processes."""
    lat: dict[str, list[float]] = {name: [] for name in paths}
    p50s: dict[str, list[float]] = {name: [] for name in paths}
    cpu = {name: dict.fromkeys(pids, 0.0) for name, (_, _, pids) in paths.items()}
    for _ in range(rounds):
        for name, (session, url, pids) in paths.items():
            before = {k: cpu_seconds(p) for k, p in pids.items()}
            got, _ = await run_load(session, url, n // rounds, 1)
            for k, p in pids.items():
                cpu[name][k] += cpu_seconds(p) - before[k]
            lat[name] += got
            p50s[name].append(pct(got, 0.5))
    return {name: {"name": name, "p50": pct(lat[name], 0.5), "p99": pct(lat[name], 0.99),
                   "round_p50s": p50s[name],
                   "cpu": {k: v / (n // rounds * rounds) for k, v in cpu[name].items()}}
            for name in paths}


async def main_async(args) -> None:
    home = Path(tempfile.mkdtemp(prefix="trestle-bench-"))
    server = start_server(home, "--no-auth", "--no-builtin")
    sock = Path(tempfile.mkdtemp(prefix="tb-")) / "direct.sock"
    direct = subprocess.Popen(
        [sys.executable, "-m", "trestle.runtime", "--model-dir", str(EXAMPLES / "hello"),
         "--socket", str(sock)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        push = server.push(EXAMPLES / "hello")
        worker_pid = worker_process(server.proc.pid)
        url = f"{server.url}/model/{push['model']['id']}/production/predict"
        transport = httpx.HTTPTransport(uds=str(sock))
        for _ in range(300):
            try:
                if httpx.Client(transport=transport).get("http://w/health").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        async with aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=str(sock), limit=0)) as ds, \
                aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as gs:
            paths = {"direct": (ds, "http://worker/predict", {"worker": direct.pid}),
                     "gateway": (gs, url, {"gateway": server.proc.pid, "worker": worker_pid})}
            for session, target, _ in paths.values():
                await run_load(session, target, 200, 4)  # warm-up: connections, caches
            results = await latency_rounds(paths, args.requests, args.rounds)
            for name, (session, target, _) in paths.items():
                _, results[name]["rps16"] = await run_load(session, target, args.requests, 16)
    finally:
        direct.terminate()
        server.stop()

    d, g = results["direct"], results["gateway"]
    print(f"{'path':<10}{'p50 ms':>10}{'p99 ms':>10}{'req/s @16':>12}")
    for r in (d, g):
        print(f"{r['name']:<10}{r['p50']*1e3:>10.3f}{r['p99']*1e3:>10.3f}{r['rps16']:>12.0f}")
    per_round = sorted((gp - dp) * 1e3 for gp, dp in zip(g["round_p50s"], d["round_p50s"]))
    added50 = statistics.median(per_round)
    added99 = (g["p99"] - d["p99"]) * 1e3
    ratio = g["rps16"] / d["rps16"]
    print(f"added p50 at concurrency 1: {added50:.3f} ms   (target <= 0.300 ms) "
          f"{'MET' if added50 <= 0.3 else 'MISSED'}   (median of {len(per_round)} alternating rounds; "
          f"rounds ranged {per_round[0]:.3f} to {per_round[-1]:.3f} ms)")
    print(f"added p99 at concurrency 1: {added99:.3f} ms   (no target; reported)")
    print(f"throughput at concurrency 16, gateway/direct: {ratio:.2f}x   (target >= 0.50x) "
          f"{'MET' if ratio >= 0.5 else 'MISSED'}")
    print(f"CPU per request at concurrency 1: gateway {g['cpu']['gateway'] * 1e3:.3f} ms, "
          f"its worker {g['cpu']['worker'] * 1e3:.3f} ms, direct worker {d['cpu']['worker'] * 1e3:.3f} ms"
          "   (no target; compares gateway versions on a loaded machine)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=4000)
    parser.add_argument("--rounds", type=int, default=8, help="alternating latency rounds (default 8)")
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
