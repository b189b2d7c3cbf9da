"""A pushed folder, checked before it is recorded: unpacked, its config.yaml loaded and checked,
its model code where it must be (and nowhere for a deployment that fronts an `upstream:`), its
tokenizer and requirements files readable; and the methods its Model class defines, read from the
source without running it.
"""

from __future__ import annotations

import ast
from pathlib import Path

from trestle import tokencount
from trestle.deploy.build.package import unpack
from trestle.deploy.build.requirements import read_requirements
from trestle.deploy.config import ModelConfig
from trestle.errors import BadRequest
from trestle.settings import Limits


def check_folder(archive: Path, staging: Path, limits: Limits) -> ModelConfig:
    """Unpack a pushed folder into `staging` and check it: its config, its model code (there, or
    not there for an `upstream:`), its tokenizer and requirements files. Blocking: run it in a
    thread."""
    unpack(archive, staging, limits)
    config = ModelConfig.load(staging, limits)
    config.check_new()
    if config.upstream is not None:
        _check_no_model_code(staging, config)
    elif config.engine is None and config.docker_server is None:
        _check_model_code(staging, config)
    if config.bridge.tokenizer is not None:  # read it now: a bad file fails the push, not usage
        tokencount.load_for(config.bridge.tokenizer, staging).close()
    read_requirements(staging, config.requirements, config.requirements_file)  # a bad file: 400
    return config


def _check_model_code(folder: Path, config: ModelConfig) -> None:
    path = folder / config.model_module_dir / config.model_class_filename
    if not path.is_file():
        raise BadRequest(
            f"{config.model_module_dir}/{config.model_class_filename} is missing: a model folder "
            "needs config.yaml and model/model.py with a Model class (or an `engine:` section)"
        )


def _check_no_model_code(folder: Path, config: ModelConfig) -> None:
    path = folder / config.model_module_dir / config.model_class_filename
    if path.is_file():
        raise BadRequest(
            f"config.yaml has an `upstream:` section, so {config.model_module_dir}/"
            f"{config.model_class_filename} would never run: a deployment either fronts a "
            "server elsewhere or runs model code; remove one of them", param="upstream")


OPENAI_METHODS = ("chat_completions", "completions")


def openai_methods(folder: Path, config: ModelConfig) -> list[str]:
    """The OpenAI methods the deployment answers: both for an engine or an upstream, else those
    its Model class defines."""
    if config.engine is not None or config.upstream is not None:
        return list(OPENAI_METHODS)
    defined = defined_methods(folder, config)
    return [m for m in OPENAI_METHODS if m in defined]


def defined_methods(folder: Path, config: ModelConfig) -> set[str]:
    """The methods the folder's Model class defines, read from the source without running it
    (a class built dynamically shows none; an engine, upstream or docker_server folder has none)."""
    if config.engine is not None or config.upstream is not None or config.docker_server is not None:
        return set()
    path = folder / config.model_module_dir / config.model_class_filename
    try:
        tree = ast.parse(path.read_bytes())
    except (OSError, SyntaxError, ValueError):
        return set()
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == config.model_class_name:
            return {n.name for n in node.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}
    return set()
