"""Benchmark: trestle's engine worker against `python -m llama_cpp.server`, same GGUF, same threads.

    .venv/bin/pip install -e '.[bench]'
    .venv/bin/python bench/engine.py [--threads 2] [--tokens 128] [--streams 8]

Each server runs alone (one after the other, in this one run) on SmolLM2-135M-Instruct Q4_1.
Every request is a streamed chat completion of exactly `--tokens` tokens (end tokens get a
logit bias of -100 on both servers, so lengths are equal); the concurrent streams each ask a
different question. Figures:

- single-stream decode tok/s: (tokens - 1) / (time of last token - time of first token);
- aggregate tok/s at N concurrent streams: all tokens / wall time from start to last token;
- mean TTFT at N streams: mean time from sending to the first content token.

Targets (trestle vs llama_cpp.server): single >= 1.3x, aggregate >= 2x, mean TTFT <= 0.1x.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from trestle.engine.builtin import SMOLLM2_SLUG, SMOLLM2_WEIGHTS, resolve_weights

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from support import free_port, stop_process, wait_until_up  # noqa: E402

END_TOKENS = {"0": -100, "2": -100, "4": -100}  # SmolLM2's end-of-generation ids
# A different request per stream (they share only the template's default system prompt).
TOPICS = ["a lighthouse keeper", "a lost robot", "a mountain village", "an old violin",
          "a desert caravan", "a city garden", "a night train", "a sea turtle"]


def prompt(i: int) -> list[dict]:
    return [{"role": "user", "content": f"Write a short story about {TOPICS[i % len(TOPICS)]}."}]


def start(cmd: list[str], url: str, log: Path) -> subprocess.Popen:
    proc = subprocess.Popen(cmd, stdout=open(log, "wb"), stderr=subprocess.STDOUT)
    wait_until_up(proc, f"{url}/v1/models", log, timeout=180)
    return proc


stop = stop_process


async def one_stream(client: httpx.AsyncClient, url: str, model: str, tokens: int, i: int) -> dict:
    body = {"model": model, "messages": prompt(i), "max_tokens": tokens, "temperature": 0,
            "stream": True, "logit_bias": END_TOKENS}
    sent = time.perf_counter()
    first = last = None
    pieces = 0
    async with client.stream("POST", f"{url}/v1/chat/completions", json=body) as resp:
        resp.raise_for_status()
        async for line in resp.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if chunk.get("choices") and chunk["choices"][0]["delta"].get("content"):
                now = time.perf_counter()
                first = first or now
                last = now
                pieces += 1
    return {"sent": sent, "first": first, "last": last, "pieces": pieces}


async def measure(url: str, model: str, tokens: int, streams: int) -> dict:
    async with httpx.AsyncClient(timeout=600, limits=httpx.Limits(max_connections=64)) as client:
        # tokens actually produced, from a non-streamed call's usage
        r = await client.post(f"{url}/v1/chat/completions", json={
            "model": model, "messages": prompt(0), "max_tokens": tokens, "temperature": 0,
            "logit_bias": END_TOKENS})
        produced = r.json()["usage"]["completion_tokens"]
        singles = [await one_stream(client, url, model, tokens, 0) for _ in range(3)]
        single = sorted((produced - 1) / (s["last"] - s["first"]) for s in singles)[1]  # median
        start_t = time.perf_counter()
        many = await asyncio.gather(*(one_stream(client, url, model, tokens, i) for i in range(streams)))
        wall = max(s["last"] for s in many) - start_t
    return {
        "produced": produced,
        "single_tps": single,
        "aggregate_tps": produced * streams / wall,
        "ttft_ms": 1000 * sum(s["first"] - s["sent"] for s in many) / streams,
    }


def measured(proc, url: str, model: str, tokens: int, streams: int, log: Path) -> dict:
    print(f"measuring {log.stem} ...", file=sys.stderr)
    try:
        return asyncio.run(measure(url, model, tokens, streams))
    except Exception:
        print(f"{log.stem} failed; its log ends with:\n{log.read_text(errors='replace')[-3000:]}", file=sys.stderr)
        raise
    finally:
        stop(proc)


def run_trestle(weights: Path, threads: int, streams: int, tokens: int, work: Path) -> dict:
    folder = work / "smollm2"
    folder.mkdir()
    (folder / "config.yaml").write_text(
        "engine:\n"
        f"  weights: {weights}\n  slug: {SMOLLM2_SLUG}\n  context_length: 1024\n"
        f"  max_batch: {streams}\n  threads: {threads}\n  max_queue: 64\n")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = start([sys.executable, "-m", "trestle.runtime", "--model-dir", str(folder), "--port", str(port)],
                 url, work / "trestle.log")
    return measured(proc, url, SMOLLM2_SLUG, tokens, streams, work / "trestle.log")


# `python -m llama_cpp.server` with the weight buffers trestle's engine uses (no "extra" buffer
# types: trestle.engine.llama turns them off because llama.cpp's AMX matmul crashes this build in
# the first decode on CPUs with AMX, and so does llama_cpp.server's). Same weights, same kernels.
ANCHOR = """
import runpy
import llama_cpp.llama_cpp as lib
default_params = lib.llama_model_default_params
def model_params():
    params = default_params()
    params.use_extra_bufts = False
    return params
lib.llama_model_default_params = model_params
runpy.run_module("llama_cpp.server", run_name="__main__", alter_sys=True)
"""


def run_llama_cpp_server(weights: Path, threads: int, streams: int, tokens: int, work: Path) -> dict:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = start([sys.executable, "-c", ANCHOR, "--model", str(weights), "--model_alias", "smollm2",
                  "--n_threads", str(threads), "--n_threads_batch", str(threads), "--n_ctx", "2048",
                  "--host", "127.0.0.1", "--port", str(port), "--verbose", "False",
                  # queue concurrent requests instead of aborting the running one
                  "--interrupt_requests", "False"],
                 url, work / "llama_cpp_server.log")
    return measured(proc, url, "smollm2", tokens, streams, work / "llama_cpp_server.log")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--streams", type=int, default=8)
    args = ap.parse_args()
    weights = resolve_weights(SMOLLM2_WEIGHTS, Path.cwd())
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        ours = run_trestle(weights, args.threads, args.streams, args.tokens, work)
        ref = run_llama_cpp_server(weights, args.threads, args.streams, args.tokens, work)
    print(f"SmolLM2-135M-Instruct Q4_1, {args.threads} threads, {args.tokens} tokens per request "
          f"(produced: trestle {ours['produced']}, llama_cpp.server {ref['produced']})")
    print(f"{'figure':34} {'trestle':>10} {'llama_cpp.server':>17} {'ratio':>7}  target  met")
    rows = [
        ("single-stream decode tok/s", "single_tps", ">=", 1.3),
        (f"aggregate tok/s at {args.streams} streams", "aggregate_tps", ">=", 2.0),
        (f"mean TTFT ms at {args.streams} streams", "ttft_ms", "<=", 0.1),
    ]
    for name, key, op, target in rows:
        ratio = ours[key] / ref[key]
        met = ratio >= target if op == ">=" else ratio <= target
        print(f"{name:34} {ours[key]:10.1f} {ref[key]:17.1f} {ratio:6.2f}x  {op}{target}x  {'yes' if met else 'NO'}")


if __name__ == "__main__":
    main()
