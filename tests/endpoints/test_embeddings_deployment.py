"""An embeddings engine folder pushed to `trestle serve` gets its own slug at `/v1/embeddings`,
exactly as docs/datastores.md shows it (its config.yaml and its Python example)."""

from __future__ import annotations

import re

import numpy as np
import yaml

from endpoints.conftest import MINILM_SLUG
from support import ROOT

DOC = ROOT / "docs" / "datastores.md"


def blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", DOC.read_text(), flags=re.S)


def test_the_documented_engine_folder_deploys_and_serves_embeddings(server, tmp_path):
    config = blocks("yaml")[0]
    slug = yaml.safe_load(config)["engine"]["slug"]
    assert slug != MINILM_SLUG  # not the built-in one
    folder = tmp_path / "minilm"
    folder.mkdir()
    (folder / "config.yaml").write_text(config)
    pushed = server.push(folder)
    assert pushed["deployment"]["status"] == "active", pushed

    example = blocks("python")[0]
    assert f'model="{slug}"' in example
    scope = {"URL": server.url, "KEY": server.api_key}
    exec(compile(example, str(DOC), "exec"), scope)
    res = scope["res"]
    vectors = np.asarray([d.embedding for d in res.data], dtype=np.float32)
    assert vectors.shape == (2, 384)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-4)
    assert res.usage.prompt_tokens == 6  # as the example's comment says
    assert "# 6" in example
