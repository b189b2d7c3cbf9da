"""config.yaml as a model worker reads it.

The gateway checks every push against `trestle.deploy.config.ModelConfig` (pydantic 2). A model
worker normally loads the folder with it too (`load_config`). A worker whose deployment pins
`pydantic<2` cannot import it, so it reads the keys the runtime uses into `WorkerConfig`, a plain
view with the same attribute names, with no pydantic at all: the folder was checked at push.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from trestle.errors import BadRequest
from trestle.pydantic_compat import V1

CONFIG_FILE = "config.yaml"


@dataclass(frozen=True)
class RuntimeSection:
    predict_concurrency: int = 1


@dataclass(frozen=True)
class WorkerConfig:
    """The keys of config.yaml the model runtime uses (see `ModelConfig` for what they mean)."""

    model_module_dir: str = "model"
    model_class_filename: str = "model.py"
    model_class_name: str = "Model"
    environment_variables: dict[str, str] = field(default_factory=dict)
    runtime: RuntimeSection = field(default_factory=RuntimeSection)
    engine: None = None  # engines always run on the gateway's own packages
    docker_server: None = None
    bundled_packages_dir: str = "packages"
    external_package_dirs: list[str] = field(default_factory=list)

    @classmethod
    def from_dict(cls, data: Any) -> "WorkerConfig":
        data = data if isinstance(data, dict) else {}
        runtime = data.get("runtime") if isinstance(data.get("runtime"), dict) else {}
        for section in ("engine", "docker_server"):
            if data.get(section):
                raise BadRequest(f"a folder with a `{section}:` section cannot have requirements "
                                 "that pin pydantic<2")
        return cls(
            model_module_dir=str(data.get("model_module_dir") or "model"),
            model_class_filename=str(data.get("model_class_filename") or "model.py"),
            model_class_name=str(data.get("model_class_name") or "Model"),
            environment_variables=env_strings(data.get("environment_variables") or {}),
            runtime=RuntimeSection(predict_concurrency=int(runtime.get("predict_concurrency", 1))),
            bundled_packages_dir=str(data.get("bundled_packages_dir") or "packages"),
            external_package_dirs=[str(d) for d in data.get("external_package_dirs") or []],
        )


def env_strings(values: dict) -> dict[str, str]:
    """`environment_variables` as strings, as Truss sets them: `true`/`false` for booleans,
    `str()` for numbers, an empty string for null."""
    out = {}
    for name, value in values.items():
        if isinstance(value, bool):
            value = "true" if value else "false"
        elif value is None:
            value = ""
        out[str(name)] = str(value)
    return out


EXTERNAL_DIR = ".external_packages"


def external_dir(model_dir: Path, index: int, name: str) -> Path:
    """Where the `index`th of `external_package_dirs` (`name`) is in a pushed folder: inside the
    folder, where it is; outside it, where `trestle push` put its copy."""
    inside = (model_dir / name).resolve()
    if inside == model_dir or model_dir in inside.parents:
        return inside
    return model_dir / EXTERNAL_DIR / str(index)


def load_config(folder: Path):
    """The folder's config: a `ModelConfig` (checked), or a `WorkerConfig` under pydantic 1."""
    if not V1:
        from trestle.deploy.config import ModelConfig

        return ModelConfig.load(folder)
    path = Path(folder) / CONFIG_FILE
    if not path.is_file():
        raise BadRequest(f"the model folder has no {CONFIG_FILE}")
    return WorkerConfig.from_dict(yaml.safe_load(path.read_text()))
