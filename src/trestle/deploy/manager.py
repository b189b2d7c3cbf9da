"""Models, deployments and environments: pushing, bringing up, promoting, and routing to replicas.

The store is the record (what was pushed, what each environment should point at); this manager
keeps the live routing table in memory so that the request path never waits on the database.
An environment's live pointer moves only when its new deployment is active, so the old one keeps
serving until then; if the new one fails, the environment's record goes back to the old one.
"""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from trestle.deploy.backend import DeploymentSpec, ReadinessError, Replica, ReplicaBackend
from trestle.deploy.config import ModelConfig
from trestle.deploy.package import pack, unpack
from trestle.deploy.venv import BuildError, build_venv
from trestle.errors import BadRequest, Conflict, NotFound, Unavailable
from trestle.settings import Settings
from trestle.store import Deployment, Model, Store
from trestle.store.store import check_environment_name

log = logging.getLogger("trestle.deploy")

PRODUCTION = "production"
DEVELOPMENT = "development"
RESUMABLE = {"building", "deploying", "active"}


@dataclass(frozen=True)
class PushResult:
    model: Model
    deployment: Deployment
    environments: list[str]  # environments that will point at the deployment once it is active
    ignored_keys: list[str]  # config.yaml keys Truss defines that trestle does not use


class DeploymentManager:
    def __init__(self, store: Store, backend: ReplicaBackend, settings: Settings):
        self.store = store
        self.backend = backend
        self.settings = settings
        self._deployments: dict[str, Deployment] = {}
        self._live: dict[tuple[str, str], str] = {}  # (model_id, env) -> deployment serving it now
        self._intended: dict[tuple[str, str], str] = {}  # what the store says it should be
        self._slugs: dict[str, str] = {}  # Model API slug -> model_id
        self._tasks: set[asyncio.Task] = set()

    # -- lifecycle -----------------------------------------------------------------------------
    async def start(self) -> None:
        """Load the record and bring back every deployment that was up (or on its way up)."""
        for dep in await self.store.list_deployments():
            self._deployments[dep.id] = dep
            self._note_slug(dep)
        for model in await self.store.list_models():
            for env in await self.store.list_environments(model.id):
                self._intended[(model.id, env.name)] = env.deployment_id
        for dep in list(self._deployments.values()):
            if dep.status in RESUMABLE:
                self._spawn(self._bring_up(dep))

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.backend.close()

    def _spawn(self, coro) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- push / promote ------------------------------------------------------------------------
    async def push(
        self, archive: Path, *, name: str | None = None, promote: bool = False,
        environment: str | None = None,
    ) -> PushResult:
        """Push the gzip tar at `archive` (see `trestle.deploy.package.receive`)."""
        if environment is not None:
            check_environment_name(environment, param="environment")
        staging = Path(tempfile.mkdtemp(prefix=".upload-", dir=self.upload_dir()))
        try:
            config = await asyncio.to_thread(self._unpack, archive, staging)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        model_name = config.model_name or name
        if not model_name:
            shutil.rmtree(staging, ignore_errors=True)
            raise BadRequest("config.yaml has no model_name and none was given", param="model_name")
        return await self._record(staging, config, model_name, promote, environment)

    async def push_folder(self, folder: Path, **kwargs) -> PushResult:
        """Push a folder that is already on this machine (used for built-in models)."""
        fd, name = tempfile.mkstemp(prefix=".push-", suffix=".tar.gz", dir=self.upload_dir())
        archive = Path(name)
        try:
            with open(fd, "wb") as f:
                f.write(pack(folder))
            return await self.push(archive, **kwargs)
        finally:
            archive.unlink(missing_ok=True)

    def _unpack(self, archive: Path, staging: Path) -> ModelConfig:
        """Unpack and check a pushed folder (blocking: runs in a thread)."""
        limits = self.settings.limits
        unpack(archive, staging, limits)
        config = ModelConfig.load(staging, limits)
        if config.engine is None:
            self._check_model_code(staging, config)
        return config

    async def _record(self, staging: Path, config: ModelConfig, model_name: str,
                      promote: bool, environment: str | None) -> PushResult:
        model = await self._model_named(model_name)
        first = not await self.store.list_deployments(model.id)
        raw_config = config.record()
        # deployments/{model_name}-{random}/ holds src/ (the pushed folder), venv/ and worker.log;
        # the record points at src/ and the rest derives from it
        safe = re.sub(r"[^A-Za-z0-9_.-]", "_", model_name)[:60]
        home = self.settings.deployments_dir / f"{safe}-{secrets.token_hex(4)}"
        home.mkdir()
        staging.rename(home / "src")
        dep = await self.store.create_deployment(model.id, raw_config, source_dir=str(home / "src"))
        self._deployments[dep.id] = dep
        self._note_slug(dep)
        self._log(dep, f"pushed as deployment {dep.id} of model {model.name} ({model.id})")
        if config.ignored_keys:
            self._log(dep, f"config.yaml keys trestle does not use: {', '.join(config.ignored_keys)}")

        envs = [DEVELOPMENT]
        if first or promote:
            envs.append(PRODUCTION)
        if environment and environment not in envs:
            envs.append(environment)
        for env in envs:
            await self._set_intended(model.id, env, dep.id)
        self._spawn(self._bring_up(dep))
        return PushResult(model, dep, envs, config.ignored_keys)

    async def _model_named(self, name: str) -> Model:
        """The model called `name`, created on its first push (two first pushes may race)."""
        model = await self.store.get_model_by_name(name)
        if model is None:
            try:
                model = await self.store.create_model(name)
            except Conflict:
                model = await self.store.get_model_by_name(name)
        return model

    async def promote(self, model_id: str, environment: str, deployment_id: str) -> None:
        dep = self._deployments.get(deployment_id)
        if dep is None or dep.model_id != model_id:
            raise NotFound(f"model {model_id} has no deployment {deployment_id}", param="deployment_id")
        if dep.status not in ("active", "deploying", "building"):
            raise BadRequest(f"deployment {deployment_id} is {dep.status}; only a live deployment "
                             "can be promoted", param="deployment_id")
        await self._set_intended(model_id, environment, deployment_id)
        if dep.status == "active":
            self._live[(model_id, environment)] = deployment_id
        self._log(dep, f"environment {environment} now points at this deployment")

    async def _set_intended(self, model_id: str, env: str, deployment_id: str) -> None:
        await self.store.set_environment(model_id, env, deployment_id)
        self._intended[(model_id, env)] = deployment_id

    # -- bringing a deployment up --------------------------------------------------------------
    async def _bring_up(self, dep: Deployment) -> None:
        config = ModelConfig.from_dict(dep.config, unknown="drop")  # older records may have more
        home = Path(dep.source_dir).parent
        log_file = home / "worker.log"
        try:
            python = sys.executable
            if config.requirements:
                dep = await self._set_status(dep, "building")
                self._log(dep, f"building a virtualenv with {len(config.requirements)} requirement(s)")
                python = await build_venv(home / "venv", config.requirements, log_file)
            dep = await self._set_status(dep, "deploying")
            all_secrets = await self.store.get_secrets()
            wanted = set(config.secrets)
            missing = sorted(wanted - all_secrets.keys())
            if missing:
                self._log(dep, f"secrets not set (use `trestle secrets set NAME`): {', '.join(missing)}")
            spec = DeploymentSpec(
                deployment_id=dep.id, model_id=dep.model_id, source_dir=Path(dep.source_dir),
                log_file=log_file, python=python, replicas=config.scaling.min_replicas or 1,
                secrets={k: v for k, v in all_secrets.items() if k in wanted},
                environment=self._environment_of(dep),
            )
            await self.backend.start(spec)
        except (ReadinessError, BuildError, BadRequest) as exc:
            self._log(dep, f"deployment failed: {exc}")
            await self._set_status(dep, "failed", error=str(exc))
            await self._revert_intended(dep)
            return
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug of ours: record it rather than losing the deployment
            log.exception("deployment %s: unexpected error while bringing it up", dep.id)
            await self._set_status(dep, "failed", error=f"internal error: {exc}")
            await self._revert_intended(dep)
            return
        dep = await self._set_status(dep, "active")
        for key, target in self._intended.items():
            if target == dep.id:
                self._live[key] = dep.id
        self._log(dep, "deployment is active")

    def _environment_of(self, dep: Deployment) -> str | None:
        envs = [env for (m, env), d in self._intended.items() if d == dep.id]
        if PRODUCTION in envs:
            return PRODUCTION
        return envs[0] if envs else None

    async def _revert_intended(self, dep: Deployment) -> None:
        for key, target in list(self._intended.items()):
            if target != dep.id:
                continue
            previous = self._live.get(key)
            if previous and previous != dep.id:
                await self._set_intended(key[0], key[1], previous)

    async def _set_status(self, dep: Deployment, status: str, error: str | None = None) -> Deployment:
        dep = await self.store.set_deployment_status(dep.id, status, error=error)
        self._deployments[dep.id] = dep
        return dep

    # -- routing (hot path: no I/O) ------------------------------------------------------------
    def route(self, model_id: str, *, environment: str | None = None,
              deployment_id: str | None = None) -> Replica:
        if deployment_id is not None:
            dep = self._deployments.get(deployment_id)
            if dep is None or dep.model_id != model_id:
                raise NotFound(f"model {model_id} has no deployment {deployment_id}")
            return self._replica(dep)
        key = (model_id, environment or PRODUCTION)
        live = self._live.get(key)
        if live is not None:
            return self._replica(self._deployments[live])
        intended = self._intended.get(key)
        if intended is None:
            if not any(m == model_id for m, _ in self._intended) and not any(
                d.model_id == model_id for d in self._deployments.values()
            ):
                raise NotFound(f"no model with id {model_id}")
            raise NotFound(f"model {model_id} has no environment {key[1]!r}")
        return self._replica(self._deployments[intended])

    def route_slug(self, slug: str) -> Replica:
        model_id = self._slugs.get(slug)
        if model_id is None:
            known = ", ".join(sorted(self._slugs)) or "none"
            raise NotFound(f"The model `{slug}` does not exist. Model APIs served here: {known}",
                           param="model", code="model_not_found")
        return self.route(model_id)

    def slugs(self) -> list[str]:
        return sorted(slug for slug, model_id in self._slugs.items()
                      if (model_id, PRODUCTION) in self._live)

    def _replica(self, dep: Deployment) -> Replica:
        if dep.status == "active":
            replica = self.backend.replica(dep.id)
            if replica is not None:
                return replica
            raise Unavailable(f"deployment {dep.id} has no running replica right now; retry shortly")
        if dep.status in ("building", "deploying"):
            raise Unavailable(f"deployment {dep.id} is still {dep.status}; retry when it is active")
        if dep.status == "failed":
            raise Unavailable(f"deployment {dep.id} failed: {dep.error}")
        raise Unavailable(f"deployment {dep.id} is {dep.status}")

    def _note_slug(self, dep: Deployment) -> None:
        engine = (dep.config or {}).get("engine")
        if engine and engine.get("slug"):
            self._slugs[engine["slug"]] = dep.model_id

    # -- helpers -------------------------------------------------------------------------------
    def deployment(self, deployment_id: str) -> Deployment:
        dep = self._deployments.get(deployment_id)
        if dep is None:
            raise NotFound(f"no deployment with id {deployment_id}")
        return dep

    def log_file(self, deployment_id: str) -> Path:
        return Path(self.deployment(deployment_id).source_dir).parent / "worker.log"

    def _log(self, dep: Deployment, message: str) -> None:
        log.info("deployment %s: %s", dep.id, message)
        path = Path(dep.source_dir).parent / "worker.log"
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S")
        with open(path, "a") as f:
            f.write(f"{stamp} [trestle] {message}\n")

    def upload_dir(self) -> Path:
        """Where pushes are received and unpacked (beside the deployments: renames stay cheap)."""
        self.settings.deployments_dir.mkdir(parents=True, exist_ok=True)
        return self.settings.deployments_dir

    @staticmethod
    def _check_model_code(folder: Path, config: ModelConfig) -> None:
        path = folder / config.model_module_dir / config.model_class_filename
        if not path.is_file():
            raise BadRequest(
                f"{config.model_module_dir}/{config.model_class_filename} is missing: a model folder "
                "needs config.yaml and model/model.py with a Model class (or an `engine:` section)"
            )
