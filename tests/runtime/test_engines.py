"""Engine kinds: every kind config.yaml accepts has an app builder; no engine means the model runtime."""

from __future__ import annotations

from typing import get_args

import pytest

from trestle.deploy.config import EngineConfig, ModelConfig
from trestle.errors import BadRequest
from trestle.runtime.engines import ENGINES, app_builder, llama_cpp, model_runtime

ENGINE = {"weights": "w.gguf", "slug": "acme/w"}


def test_every_configurable_kind_has_a_builder():
    assert set(ENGINES) == set(get_args(EngineConfig.model_fields["kind"].annotation))


def test_a_folder_without_engine_is_served_by_the_model_runtime():
    assert app_builder(ModelConfig.from_dict({"model_name": "m"})) is model_runtime
    assert app_builder(ModelConfig.from_dict({"model_name": "m", "engine": ENGINE})) is llama_cpp


def test_an_unregistered_kind_is_refused_naming_the_known_ones():
    config = ModelConfig.from_dict({"model_name": "m", "engine": ENGINE})
    config.engine = EngineConfig.model_construct(kind="embeddings", **ENGINE)  # past config validation
    with pytest.raises(BadRequest) as caught:
        app_builder(config)
    assert caught.value.param == "engine.kind"
    assert "'embeddings' is not served" in caught.value.message and "llama_cpp" in caught.value.message
