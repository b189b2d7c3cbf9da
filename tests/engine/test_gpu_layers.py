"""`engine.gpu_layers` reaches llama.cpp's n_gpu_layers: a GPU build offloads, a CPU-only build
refuses it clearly instead of silently running on the CPU."""

import llama_cpp
import pytest

from trestle.deploy.config import ModelConfig
from trestle.engine.builtin import SMOLLM2_WEIGHTS, resolve_weights
from trestle.engine.llama import LlamaModel
from trestle.errors import BadRequest, TrestleError

from support import EXAMPLES


def test_gpu_layers_is_a_config_field():
    config = ModelConfig.from_dict({"engine": {"weights": "w.gguf", "slug": "s", "gpu_layers": -1}})
    assert config.engine.gpu_layers == -1
    with pytest.raises(BadRequest):
        ModelConfig.from_dict({"engine": {"weights": "w.gguf", "slug": "s", "gpu_layers": -2}})


def test_gpu_layers_needs_a_gpu_build():
    path = resolve_weights(SMOLLM2_WEIGHTS, EXAMPLES)
    if llama_cpp.llama_supports_gpu_offload():
        LlamaModel.load(path, context_length=64, slots=1, threads=1, gpu_layers=-1).close()
        return
    with pytest.raises(TrestleError, match="needs a GPU build of llama-cpp-python"):
        LlamaModel.load(path, context_length=64, slots=1, threads=1, gpu_layers=4)
    LlamaModel.load(path, context_length=64, slots=1, threads=1, gpu_layers=0).close()
