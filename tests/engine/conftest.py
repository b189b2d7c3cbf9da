"""Fixtures: the engine worker as a real subprocess on a TCP port, loaded once per session.

The worker is `python -m trestle.runtime --model-dir DIR --port N` (tests/support.py's `Worker`):
it serves `trestle.engine.app.build_app` because the folder's config.yaml has an `engine:` section.
`worker.stats()` is its /health body, the scheduler's counters included.
"""

from __future__ import annotations

import openai
import pytest

from support import EXAMPLES, SLUG, Worker, start_worker


@pytest.fixture(scope="session")
def worker(tmp_path_factory) -> Worker:
    w = start_worker(EXAMPLES / "smollm2", tmp_path_factory.mktemp("engine") / "worker.log")
    yield w
    w.stop()


@pytest.fixture(scope="session")
def client(worker) -> openai.OpenAI:
    return worker.openai()


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
