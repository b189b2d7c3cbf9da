"""Which ASGI app a worker serves for a model folder: the model runtime, or an engine by kind.

A config without `engine:` is served by the model runtime (`trestle.runtime.truss.app`); one with
it by the builder registered for `engine.kind` in `ENGINES`. An engine is added here beside
`llama_cpp` (and its kind to `EngineConfig.kind`). Builders import their app when called, so a
worker imports only the engine it serves (llama.cpp is loaded only by llama_cpp workers).
A config with `docker_server:` is served by `trestle.runtime.truss.docker_server` (the user's own
server, proxied).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from starlette.types import ASGIApp

from trestle.errors import BadRequest
from trestle.runtime.secrets import Secrets

if TYPE_CHECKING:
    from trestle.deploy.config import ModelConfig

# builder(config, model_dir, secrets=..., environment=...) -> the worker's app
AppBuilder = Callable[..., ASGIApp]


def model_runtime(
    config: ModelConfig, model_dir: Path, *, secrets: Secrets, environment: dict[str, str] | None
) -> ASGIApp:
    from trestle.runtime.truss.app import build_app

    return build_app(config, model_dir, secrets=secrets, environment=environment)


def llama_cpp(
    config: ModelConfig, model_dir: Path, *, secrets: Secrets, environment: dict[str, str] | None
) -> ASGIApp:
    from trestle.engine.app import build_app

    return build_app(config, model_dir)


def sentence_transformers(
    config: ModelConfig, model_dir: Path, *, secrets: Secrets, environment: dict[str, str] | None
) -> ASGIApp:
    from trestle.embeddings.app import build_app  # imports torch (in the worker only)

    return build_app(config, model_dir)


def docker_server(
    config: ModelConfig, model_dir: Path, *, secrets: Secrets, environment: dict[str, str] | None
) -> ASGIApp:
    from trestle.runtime.truss.docker_server import build_app

    return build_app(config, model_dir)


ENGINES: dict[str, AppBuilder] = {
    "llama_cpp": llama_cpp,
    "sentence_transformers": sentence_transformers,
}


def app_builder(config: ModelConfig) -> AppBuilder:
    """The builder for `config`: its engine kind's, or the model runtime's."""
    if getattr(config, "docker_server", None) is not None:
        return docker_server
    if config.engine is None:
        return model_runtime
    kind = config.engine.kind
    if kind not in ENGINES:
        raise BadRequest(
            f"engine.kind {kind!r} is not served by this worker; known kinds: {', '.join(sorted(ENGINES))}",
            param="engine.kind",
        )
    return ENGINES[kind]
