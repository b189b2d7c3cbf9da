"""Import the user's Model class from a Truss-style folder and construct it.

    folder/
      config.yaml          model_module_dir, model_class_filename, model_class_name, ...
      model/model.py       class Model: ...      (imported as the module `model.model`)
      packages/            extra importable code (optional)
      data/                handed to the model as `data_dir` (optional)

The folder itself and its `packages/` dir go first on `sys.path`, so model code can import
`model.helpers` (or `from .helpers import x`) and anything under `packages/`. The config's
`environment_variables` are put into `os.environ` before the import, so module-level code
sees them.
"""

from __future__ import annotations

import importlib
import inspect
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from trestle.deploy.config import ModelConfig


PACKAGES_DIR = "packages"
DATA_DIR = "data"
# What `Model.__init__` may ask for, by name.
INIT_ARGUMENTS = ("config", "data_dir", "secrets", "environment")


class ModelDefinitionError(Exception):
    """The model folder or class breaks the contract; the message says what to change."""


def package_dirs(model_dir: Path, config: ModelConfig) -> list[Path]:
    """The folders of importable code besides the model's: `bundled_packages_dir`, then
    `external_package_dirs` (as uploaded by `trestle push`: `trestle.deploy.build.package`)."""
    from trestle.runtime.config import external_dir

    model_dir = Path(model_dir).resolve()
    dirs = [model_dir / getattr(config, "bundled_packages_dir", PACKAGES_DIR)]
    dirs += [external_dir(model_dir, i, name)
             for i, name in enumerate(getattr(config, "external_package_dirs", []))]
    return dirs


def code_roots(model_dir: Path, config: ModelConfig) -> list[Path]:
    """The folders that hold user code (for trimming tracebacks)."""
    model_dir = Path(model_dir).resolve()
    return [model_dir / config.model_module_dir, *package_dirs(model_dir, config)]


def prepare_environment(model_dir: Path, config: ModelConfig) -> None:
    """Set the config's environment variables and make the folder's code importable: the
    folder first, then its package dirs in order (as Truss orders them)."""
    os.environ.update(config.environment_variables)
    model_dir = Path(model_dir).resolve()
    for path in reversed([model_dir, *package_dirs(model_dir, config)]):
        entry = str(path)
        if path.is_dir() and entry not in sys.path:
            sys.path.insert(0, entry)


def import_model_class(model_dir: Path, config: ModelConfig) -> type:
    """Import `model_module_dir/model_class_filename` and return `model_class_name` from it."""
    model_dir = Path(model_dir).resolve()
    where = f"{config.model_module_dir}/{config.model_class_filename}"
    file = model_dir / config.model_module_dir / config.model_class_filename
    if not file.is_file():
        raise ModelDefinitionError(
            f"{where} not found in the model folder; put the Model class there or set "
            "model_module_dir / model_class_filename in config.yaml"
        )
    if file.suffix != ".py":
        raise ModelDefinitionError(f"model_class_filename must name a .py file, got {config.model_class_filename!r}")
    prepare_environment(model_dir, config)
    package = Path(config.model_module_dir).as_posix().strip("/").replace("/", ".")
    module_name = f"{package}.{file.stem}" if package else file.stem
    module = importlib.import_module(module_name)  # user errors propagate with their traceback
    cls = getattr(module, config.model_class_name, None)
    if cls is None:
        raise ModelDefinitionError(
            f"{where} defines no {config.model_class_name!r}; name the class {config.model_class_name} "
            "or set model_class_name in config.yaml"
        )
    if not inspect.isclass(cls):
        raise ModelDefinitionError(f"{where}: {config.model_class_name} must be a class, got {type(cls).__name__}")
    return cls


def init_kwargs(cls: type, available: Mapping[str, Any]) -> dict[str, Any]:
    """The keyword arguments `cls.__init__` names (all of them when it takes `**kwargs`)."""
    try:
        params = inspect.signature(cls).parameters
    except (TypeError, ValueError):  # e.g. a C-implemented __init__ with no signature
        return {}
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return dict(available)
    kwargs: dict[str, Any] = {}
    for name, param in params.items():
        if param.kind is param.VAR_POSITIONAL:
            continue
        if name in available and param.kind is not param.POSITIONAL_ONLY:
            kwargs[name] = available[name]
        elif param.default is param.empty:
            raise ModelDefinitionError(
                f"{cls.__name__}.__init__ requires {name!r}, which trestle does not provide; "
                f"it may take any of {', '.join(INIT_ARGUMENTS)} by keyword, or **kwargs"
            )
    return kwargs


def construct(cls: type, available: Mapping[str, Any]) -> object:
    return cls(**init_kwargs(cls, available))
