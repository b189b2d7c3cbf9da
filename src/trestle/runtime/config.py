"""config.yaml as a worker reads it.

The gateway checks every push against `trestle.deploy.config.ModelConfig` (pydantic 2), so a
worker need not check it again. A model worker (and a docker_server one) reads the keys the
runtime uses into `WorkerConfig`, a plain view with the same attribute names and no pydantic: a
deployment that pins `pydantic<2` can import it, and a cold start does not pay for building the
config's pydantic models (a few hundred milliseconds). An engine worker, which always runs on
the gateway's own packages, loads the checked `ModelConfig`.
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
class HealthChecksSection:
    period: float = 10.0
    failure_threshold: int = 3
    timeout: float = 5.0


@dataclass(frozen=True)
class RuntimeSection:
    predict_concurrency: int = 1
    health_checks: HealthChecksSection = field(default_factory=HealthChecksSection)


@dataclass(frozen=True)
class DockerServerSection:
    start_command: str
    server_port: int = 8000
    predict_endpoint: str = "/predict"
    readiness_endpoint: str = "/"
    liveness_endpoint: str = "/"


@dataclass(frozen=True)
class WorkerConfig:
    """The keys of config.yaml the model runtime uses (see `ModelConfig` for what they mean)."""

    model_module_dir: str = "model"
    model_class_filename: str = "model.py"
    model_class_name: str = "Model"
    environment_variables: dict[str, str] = field(default_factory=dict)
    runtime: RuntimeSection = field(default_factory=RuntimeSection)
    engine: None = None  # engine folders load `ModelConfig`
    docker_server: DockerServerSection | None = None
    bundled_packages_dir: str = "packages"
    external_package_dirs: list[str] = field(default_factory=list)

    @classmethod
    def from_dict(cls, data: Any) -> "WorkerConfig":
        """The view of a checked config.yaml; a value of the wrong type is a BadRequest (a
        folder that did not come through `trestle push`)."""
        data = data if isinstance(data, dict) else {}
        if data.get("engine"):
            raise BadRequest("a folder with an `engine:` section cannot have requirements that pin "
                             "pydantic<2: an engine runs on trestle's own packages")
        try:
            runtime = _section(data, "runtime")
            checks = _section(runtime, "health_checks")
            docker = _section(data, "docker_server") if data.get("docker_server") else None
            return cls(
                model_module_dir=str(data.get("model_module_dir") or cls.model_module_dir),
                model_class_filename=str(data.get("model_class_filename") or cls.model_class_filename),
                model_class_name=str(data.get("model_class_name") or cls.model_class_name),
                environment_variables=env_strings(data.get("environment_variables") or {}),
                runtime=RuntimeSection(
                    predict_concurrency=int(runtime.get("predict_concurrency", RuntimeSection.predict_concurrency)),
                    health_checks=HealthChecksSection(
                        period=float(checks.get("period", HealthChecksSection.period)),
                        failure_threshold=int(checks.get("failure_threshold", HealthChecksSection.failure_threshold)),
                        timeout=float(checks.get("timeout", HealthChecksSection.timeout)))),
                docker_server=None if docker is None else DockerServerSection(
                    start_command=str(docker["start_command"]),
                    **{k: (int(v) if k == "server_port" else str(v)) for k, v in docker.items()
                       if k in ("server_port", "predict_endpoint", "readiness_endpoint",
                                "liveness_endpoint")}),
                bundled_packages_dir=str(data.get("bundled_packages_dir") or cls.bundled_packages_dir),
                external_package_dirs=[str(d) for d in data.get("external_package_dirs") or []],
            )
        except (AttributeError, KeyError, TypeError, ValueError) as exc:
            raise BadRequest(f"{CONFIG_FILE} is not valid ({type(exc).__name__}: {exc}); "
                             "check it with `trestle push`") from None


def _section(data: dict, name: str) -> dict:
    value = data.get(name)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise TypeError(f"`{name}` must be a mapping")
    return value


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
    """The folder's config: a `WorkerConfig`, or for an engine folder the checked `ModelConfig`."""
    path = Path(folder) / CONFIG_FILE
    if not path.is_file():
        raise BadRequest(f"the model folder has no {CONFIG_FILE}")
    data = yaml.load(path.read_text(), Loader=_LOADER)
    if isinstance(data, dict) and data.get("engine") and not V1:
        from trestle.deploy.config import ModelConfig

        return ModelConfig.load(folder)
    return WorkerConfig.from_dict(data)


_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
