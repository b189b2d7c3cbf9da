"""Fixtures: the engine worker as a real subprocess on a TCP port, loaded once per module.

The worker is `python -m trestle.runtime --model-dir DIR --port N`: it serves
`trestle.engine.app.build_app` because the folder's config.yaml has an `engine:` section.
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import httpx
import openai
import pytest

from support import EXAMPLES, SLUG, free_port, stop_process, wait_until_up



def worker_command(folder: Path, port: int) -> list[str]:
    return [sys.executable, "-m", "trestle.runtime", "--model-dir", str(folder), "--port", str(port)]


@dataclass
class Worker:
    url: str
    proc: subprocess.Popen
    log: Path

    def client(self, **kw) -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{self.url}/v1", api_key="unused", max_retries=0, timeout=120, **kw)

    def health(self) -> dict:
        return httpx.get(f"{self.url}/health", timeout=5).json()

    def stop(self) -> None:
        stop_process(self.proc)


def start_worker(folder: Path, log: Path) -> Worker:
    port = free_port()
    proc = subprocess.Popen(worker_command(folder, port), stdout=open(log, "wb"),
                            stderr=subprocess.STDOUT)
    worker = Worker(f"http://127.0.0.1:{port}", proc, log)
    wait_until_up(proc, f"{worker.url}/health", log, timeout=120)
    return worker


@pytest.fixture(scope="session")
def worker(tmp_path_factory) -> Worker:
    w = start_worker(EXAMPLES / "smollm2", tmp_path_factory.mktemp("engine") / "worker.log")
    yield w
    w.stop()


@pytest.fixture(scope="session")
def client(worker) -> openai.OpenAI:
    return worker.client()


@pytest.fixture(scope="session")
def vocab():
    """The model's vocabulary in this process, to look up token ids for the tests."""
    from trestle.engine.builtin import SMOLLM2_WEIGHTS, resolve_weights
    from trestle.engine.llama import LlamaModel

    model = LlamaModel.load(resolve_weights(SMOLLM2_WEIGHTS, EXAMPLES), context_length=64, slots=1, threads=1)
    yield model
    model.close()


@pytest.fixture(scope="session")
def slug() -> str:
    return SLUG
