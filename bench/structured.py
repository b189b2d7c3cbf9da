"""Benchmark: decoding speed with a JSON-schema constraint vs. the same request unconstrained.

    .venv/bin/python bench/structured.py [--threads 2] [--tokens 128] [--rounds 3]

One engine worker (SmolLM2-135M-Instruct Q4_1, 8 slots) serves every measurement of this run, so
each figure has its anchor beside it. Every request is a non-streamed chat completion of exactly
`--tokens` tokens: unconstrained ones have end tokens biased -100; constrained ones follow a
schema (an array of person objects, at least 50 of them) that cannot be complete before
`--tokens`, so neither ends early. Tokens per second of a request = completion tokens / its own
wall time.

- 1 stream: constrained and unconstrained requests alternate, `--rounds` of each;
  overhead = 1 - constrained tok/s / unconstrained tok/s. Target <= 5 %.
- 8 streams: 8 unconstrained at once (the anchor), then 4 constrained + 4 unconstrained at once,
  `--rounds` times in turn; the figure is how much slower the unconstrained streams of the mixed
  batch are than those of the all-unconstrained batch before it, the median over the rounds.
  Target <= 5 %. The constrained streams' own rate is printed too.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import yaml

from trestle.engine.builtin import SMOLLM2_SLUG, SMOLLM2_WEIGHTS

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from support import free_port, stop_process, wait_until_up  # noqa: E402

END_TOKENS = {"0": -100, "2": -100, "4": -100}  # SmolLM2's end-of-generation ids
PERSONS = {
    "type": "array",
    "minItems": 50,
    "items": {
        "type": "object",
        "properties": {
            "name": {"type": "string", "maxLength": 24},
            "age": {"type": "integer", "minimum": 0, "maximum": 120},
            "city": {"enum": ["Paris", "London", "Rome", "Berlin", "Madrid"]},
            "email": {"type": "string", "pattern": "^[a-z]{1,12}@[a-z]{1,12}\\.com$"},
        },
        "required": ["name", "age", "city", "email"],
        "additionalProperties": False,
    },
}
QUESTIONS = ["a lighthouse keeper", "a lost robot", "a mountain village", "an old violin",
             "a desert caravan", "a city garden", "a night train", "a sea turtle"]


def body(i: int, tokens: int, constrained: bool) -> dict:
    b = {"model": SMOLLM2_SLUG, "max_tokens": tokens, "temperature": 0,
         "messages": [{"role": "user", "content": f"List people who know {QUESTIONS[i % 8]}."}]}
    if constrained:
        b["response_format"] = {"type": "json_schema", "json_schema": {"name": "people", "schema": PERSONS}}
    else:
        b["logit_bias"] = END_TOKENS
    return b


async def one(client: httpx.AsyncClient, url: str, b: dict, tokens: int) -> float:
    t0 = time.perf_counter()
    r = await client.post(f"{url}/v1/chat/completions", json=b)
    r.raise_for_status()
    elapsed = time.perf_counter() - t0
    usage = r.json()["usage"]["completion_tokens"]
    assert usage == tokens, f"expected {tokens} tokens, got {usage}"
    return usage / elapsed


async def run(url: str, tokens: int, rounds: int) -> None:
    async with httpx.AsyncClient(timeout=600) as client:
        # warm up: compile the schema once, fill the prefix cache
        await one(client, url, body(0, tokens, True), tokens)
        await one(client, url, body(0, tokens, False), tokens)

        free, held = [], []
        for k in range(rounds):
            free.append(await one(client, url, body(k, tokens, False), tokens))
            held.append(await one(client, url, body(k, tokens, True), tokens))
        f1, c1 = statistics.median(free), statistics.median(held)
        over1 = 1 - c1 / f1

        anchors, frees, helds, slowdowns = [], [], [], []
        for _ in range(rounds):  # alternating, so that a slow spell of the machine falls on both
            anchor = await asyncio.gather(*(one(client, url, body(i, tokens, False), tokens) for i in range(8)))
            mixed = await asyncio.gather(
                *(one(client, url, body(i, tokens, i >= 4), tokens) for i in range(8))
            )
            anchors.append(statistics.mean(anchor))
            frees.append(statistics.mean(mixed[:4]))
            helds.append(statistics.mean(mixed[4:]))
            slowdowns.append(1 - frees[-1] / anchors[-1])
        a8, m8_free, m8_held = map(statistics.median, (anchors, frees, helds))
        over8 = statistics.median(slowdowns)

    print(f"\nSmolLM2-135M Q4_1, {tokens} tokens per request, JSON-schema constraint vs none")
    print(f"{'figure':58} {'value':>10} {'target':>8}")
    print(f"{'1 stream: unconstrained tok/s (median of %d)' % rounds:58} {f1:10.1f}")
    print(f"{'1 stream: constrained tok/s (median of %d)' % rounds:58} {c1:10.1f}")
    print(f"{'1 stream: constraint overhead':58} {over1:10.1%} {'<= 5%':>8}")
    print(f"{'8 streams, all unconstrained: tok/s per stream (median)':58} {a8:10.1f}")
    print(f"{'8 streams, 4+4 mixed: unconstrained tok/s per stream (median)':58} {m8_free:10.1f}")
    print(f"{'8 streams, 4+4 mixed: constrained tok/s per stream (median)':58} {m8_held:10.1f}")
    print(f"{'8 streams: unconstrained slowdown in the mixed batch':58} {over8:10.1%} {'<= 5%':>8}")
    print(f"{'  (median of %d alternating rounds; rounds: %s)' % (rounds, ', '.join(f'{x:.1%}' for x in slowdowns))}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "model"
        folder.mkdir()
        (folder / "config.yaml").write_text(yaml.safe_dump({
            "model_name": "bench-structured",
            "engine": {"kind": "llama_cpp", "weights": SMOLLM2_WEIGHTS, "slug": SMOLLM2_SLUG,
                       "context_length": 512, "max_batch": 8, "threads": args.threads, "max_queue": 16},
        }))
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        log = Path(tmp) / "worker.log"
        proc = subprocess.Popen(
            [sys.executable, "-m", "trestle.runtime", "--model-dir", str(folder), "--port", str(port)],
            stdout=open(log, "wb"), stderr=subprocess.STDOUT,
        )
        try:
            wait_until_up(proc, f"{url}/health", log, timeout=180)
            asyncio.run(run(url, args.tokens, args.rounds))
        finally:
            stop_process(proc)


if __name__ == "__main__":
    main()
