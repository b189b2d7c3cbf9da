"""Models, deployments and environments: pushing, bringing up and promoting.

The store is the record (what was pushed, what each environment should point at); the manager
stages pushes, brings deployments up through the replica backend, and keeps the routing table
(`trestle.deploy.routing`, which the request path reads without I/O) in step with the record.
An environment's live pointer moves only when its new deployment is active, so the old one keeps
serving until then; if the new one fails, the environment's record goes back to the old one.

Several gateways may share one record (PostgreSQL): the gateway a push reached leads its
bring-up; the others follow it (`trestle.deploy.follow`).
"""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
import shutil
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

from pydantic import ValidationError

from trestle.deploy.backend import DeploymentSpec, ReadinessError, ReplicaBackend, deployment_log
from trestle.deploy.config import ModelConfig, ScalingConfig
from trestle.deploy.folder import check_folder, defined_methods, openai_methods
from trestle.deploy.follow import RESUMABLE, Following
from trestle.deploy.build.package import pack
from trestle.deploy.routing import DEVELOPMENT, PRODUCTION, RoutingTable
from trestle.deploy.upstream import UpstreamBackend
from trestle.errors import BadRequest, Conflict, NotFound
from trestle.protocol.validation import to_bad_request
from trestle.settings import Settings
from trestle.store import Deployment, Model, Status, Store
from trestle.store.ids import new_id
from trestle.store.store import check_environment_name

log = logging.getLogger("trestle.deploy")


@dataclass(frozen=True)
class PushResult:
    model: Model
    deployment: Deployment
    environments: list[str]  # environments that will point at the deployment once it is active
    ignored_keys: list[str]  # config.yaml keys Truss defines that trestle does not use
    notes: list[str]  # what the push did besides the obvious (e.g. repaired production)
    methods: list[str]  # the OpenAI methods a Model class defines (engine: both)


class DeploymentManager(Following):
    def __init__(self, store: Store, backend: ReplicaBackend, settings: Settings):
        self.store = store
        self.backend = UpstreamBackend(backend)  # deployments with `upstream:` run no worker
        self.settings = settings
        self.routing = RoutingTable(self.backend, metrics=getattr(backend, "metrics", None))
        self._tasks: set[asyncio.Task] = set()
        # Held by writes that change the record and the routing table together (push, promote,
        # scale, status, and the lifecycle's rollback, delete and environments), and by `sync`,
        # so that a sync never sees one without the other and two changes to one model never
        # interleave. Only those quick writes run under it: archive uploads, stopping replicas
        # and removing folders run outside (`_retire`), so a slow one holds up no other change.
        self._changing = asyncio.Lock()
        self._following: dict[str, asyncio.Task] = {}  # deployment id -> its follower bring-up
        self._retiring: dict[str, asyncio.Task] = {}  # deployment id -> its replicas stopping
        self._leading: set[str] = set()  # deployments recorded by this gateway's push, not yet
        # in its routing table: `sync` leaves them to the push
        self._seen: dict[str, object] = {}  # deployment id -> updated_at of the record synced
        self._local_dirs: dict[str, str] = {}  # deployment id -> its folder on this machine

    # -- lifecycle -----------------------------------------------------------------------------
    async def start(self) -> None:
        """Load the record and bring back every deployment that was up (or on its way up)."""
        for dep in await self.store.list_deployments():
            self.routing.record(dep)
        for model in await self.store.list_models():
            for env in await self.store.list_environments(model.id):
                self.routing.point((model.id, env.name), env.deployment_id)
        for dep in list(self.routing.deployments.values()):
            if dep.status in RESUMABLE:
                if self.store.shared:  # another gateway may serve it: follow, as sync does
                    self._follow(dep)
                else:
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
        """Push the gzip tar at `archive` (see `trestle.deploy.build.package.receive`)."""
        if environment is not None:
            check_environment_name(environment, param="environment")
        staging = Path(tempfile.mkdtemp(prefix=".upload-", dir=self.upload_dir()))
        try:
            config = await asyncio.to_thread(check_folder, archive, staging, self.settings.limits)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        model_name = config.model_name or name
        try:
            if not model_name:
                raise BadRequest("config.yaml has no model_name and none was given",
                                 param="model_name")
            await self._check_slug(config, model_name)
            methods = openai_methods(staging, config)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return await self._record(staging, config, model_name, promote, environment, methods,
                                  archive)

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

    async def _check_slug(self, config: ModelConfig, model_name: str) -> None:
        """A Model API slug belongs to one model: another model's push cannot take it over."""
        if config.engine is None:
            return
        slug = config.engine.slug
        for dep in self.routing.deployments.values():
            if (dep.config or {}).get("engine", {}).get("slug") != slug or dep.status == Status.FAILED:
                continue
            holder = await self.store.get_model(dep.model_id)
            if holder is not None and holder.name != model_name:
                raise Conflict(
                    f"the slug {slug!r} is already served by model {holder.name} ({holder.id}); "
                    "choose another engine.slug, or push with that model's model_name to deploy "
                    "a new version of it", param="engine.slug")

    async def _record(self, staging: Path, config: ModelConfig, model_name: str,
                      promote: bool, environment: str | None, methods: list[str],
                      archive: Path) -> PushResult:
        model = await self._model_named(model_name)
        first = not await self.store.list_deployments(model.id)
        raw_config = config.record()
        # deployments/{model_name}-{random}/ holds src/ (the pushed folder), venv/ and worker.log;
        # the record points at src/ and the rest derives from it
        safe = re.sub(r"[^A-Za-z0-9_.-]", "_", model_name)[:60]
        home = self.settings.deployments_dir / f"{safe}-{secrets.token_hex(4)}"
        home.mkdir()
        staging.rename(home / "src")
        # The archive upload may take a while: outside the lock, with the new id marked as led
        # here so that a sync meanwhile does not follow it as another gateway's push.
        dep_id = new_id("d")
        self._leading.add(dep_id)
        try:
            dep = await self.store.create_deployment(model.id, raw_config, source_dir=str(home / "src"),
                                                     archive=archive, deployment_id=dep_id)
            async with self._changing:
                self.routing.record(dep)
        finally:
            self._leading.discard(dep_id)
        self._log(dep, f"pushed as deployment {dep.id} of model {model.name} ({model.id})")
        if config.ignored_keys:
            self._log(dep, f"config.yaml keys trestle does not use: {', '.join(config.ignored_keys)}")

        envs, notes = [DEVELOPMENT], list(config.notes)
        if "websocket" in defined_methods(home / "src", config):
            notes.append("the Model's `websocket` method is not served: trestle does not serve "
                         "websocket endpoints (a handshake gets a 501); its HTTP methods are")
        for note in notes:
            self._log(dep, note)
        stuck = self._production_never_served(model.id)
        if first or promote or stuck:
            envs.append(PRODUCTION)
        if stuck and not promote:
            notes.append(f"production points at deployment {stuck}, which never became active: "
                         "it moves to this deployment once this one is active")
            self._log(dep, notes[-1])
        if environment and environment not in envs:
            envs.append(environment)
        for env in envs:
            await self._set_intended(model.id, env, dep.id)
        self._spawn(self._bring_up(dep))
        return PushResult(model, dep, envs, config.ignored_keys, notes, methods)

    def _production_never_served(self, model_id: str) -> str | None:
        """The deployment production points at, if production has never been live and that
        deployment failed (a broken first push): the next push that works should take over."""
        key = (model_id, PRODUCTION)
        target = self.routing.intended.get(key)
        if target is None or self.routing.live.get(key) is not None:
            return None
        dep = self.routing.deployments.get(target)
        return target if dep is not None and dep.status == Status.FAILED else None

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
        async with self._changing:
            dep = self.routing.deployments.get(deployment_id)
            if dep is None or dep.model_id != model_id:
                raise NotFound(f"model {model_id} has no deployment {deployment_id}",
                               param="deployment_id")
            if dep.status not in RESUMABLE:
                raise BadRequest(f"deployment {deployment_id} is {dep.status}; only a live "
                                 "deployment can be promoted", param="deployment_id")
            await self._point(model_id, environment, deployment_id)
            if dep.status == Status.ACTIVE:
                self._go_live(deployment_id)
        self._log(dep, f"environment {environment} now points at this deployment")

    async def scale(self, deployment_id: str, changes: dict) -> ScalingConfig:
        """New scaling bounds for a deployment (`changes`: ScalingConfig fields): recorded in its
        config, applied to its running replicas at once. Bad bounds are a BadRequest."""
        async with self._changing:
            dep = self.deployment(deployment_id)
            config = dict(dep.config or {})
            try:
                scaling = ScalingConfig.model_validate({**config.get("scaling", {}), **changes})
            except ValidationError as exc:
                raise to_bad_request(exc, ScalingConfig) from None
            config["scaling"] = scaling.model_dump(exclude_defaults=True)
            record = await self.store.set_deployment_config(deployment_id, config)
            # Only the config changes here: this gateway's own view of the deployment (its
            # status, its folder when it follows another gateway's push) stays as it is.
            dep = replace(self.deployment(deployment_id), config=record.config)
            self.routing.record(dep)
            self._seen[deployment_id] = record.updated_at  # nothing for `sync` to redo
            self.backend.scale(deployment_id, scaling)
        self._log(dep, f"scaling set to {scaling.model_dump()}")
        return scaling

    async def _set_intended(self, model_id: str, env: str, deployment_id: str) -> None:
        async with self._changing:
            await self._point(model_id, env, deployment_id)

    async def _point(self, model_id: str, env: str, deployment_id: str) -> None:
        """Point the environment at the deployment, in the record and here (lock held)."""
        await self.store.set_environment(model_id, env, deployment_id)
        self.routing.point((model_id, env), deployment_id)

    # -- bringing a deployment up --------------------------------------------------------------
    async def _bring_up(self, dep: Deployment, *, lead: bool = True) -> None:
        """Build and start the deployment's replicas here; `lead`: write its status to the
        record (else only to this gateway's routing table: see the module docstring)."""
        set_status = self._set_status if lead else self._set_local_status
        config = ModelConfig.from_dict(dep.config, unknown="drop")  # older records may have more
        await self._retired(dep.id)  # replicas of an earlier life of it still stopping
        try:
            if not lead:
                dep = await self._local_copy(dep)
            if config.requirements or config.requirements_file or config.build_commands:
                dep = await set_status(dep, Status.BUILDING)
                listed = f" and {config.requirements_file}" if config.requirements_file else ""
                self._log(dep, f"building a virtualenv with {len(config.requirements)} "
                               f"requirement(s){listed}")
                await self.backend.prepare(self._spec(dep, config, {}))
            dep = await set_status(dep, Status.DEPLOYING)
            all_secrets = await self.store.get_secrets()
            wanted = set(config.secrets)
            if config.upstream is not None and config.upstream.api_key_secret:
                wanted.add(config.upstream.api_key_secret)
            missing = sorted(wanted - all_secrets.keys())
            if missing:
                self._log(dep, f"secrets not set (use `trestle secrets set NAME`): {', '.join(missing)}")
            spec = self._spec(dep, config, {k: v for k, v in all_secrets.items() if k in wanted})
            await self.backend.start(
                spec, on_failed=lambda reason: self._spawn(self._failed(dep, reason, lead=lead)))
        except (ReadinessError, BadRequest) as exc:
            self._log(dep, f"deployment failed: {exc}")
            await set_status(dep, Status.FAILED, error=str(exc))
            if lead:
                await self._revert_intended(dep)
            return
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug of ours: record it rather than losing the deployment
            log.exception("deployment %s: unexpected error while bringing it up", dep.id)
            await set_status(dep, Status.FAILED, error=f"internal error: {exc}")
            if lead:
                await self._revert_intended(dep)
            return
        dep = await set_status(dep, Status.ACTIVE)
        self._go_live(dep.id)
        self._log(dep, "deployment is active")
        if not lead:
            await self.store.mark_active_if_loading(dep.id)

    def _go_live(self, deployment_id: str) -> None:
        """Point the environments meant for the deployment at it; a deployment that no longer
        serves any environment drains, then scales to its minimum (it stays reachable by id)."""
        for old in self.routing.go_live(deployment_id):
            self.backend.settle(old)
            self._log(self.routing.deployments[old], "no environment points here any more: "
                      "scaling to min_replicas once in-flight requests finish")

    def _retire(self, deployment_id: str, *, folder: Path | None = None) -> asyncio.Task:
        """Stop the deployment's replicas (and remove its `folder`) in the background, outside
        the lock: a drain or a slow stop holds up no other change. A later bring-up of the
        same deployment waits for it (`_retired`)."""
        following = self._following.pop(deployment_id, None)
        if following is not None:
            following.cancel()
        before = self._retiring.get(deployment_id)

        async def retire() -> None:
            for task in (before, following):
                if task is not None:
                    await asyncio.gather(task, return_exceptions=True)
            await self.backend.stop(deployment_id)
            if folder is not None:
                await asyncio.to_thread(shutil.rmtree, folder, True)

        task = asyncio.create_task(retire())
        self._tasks.add(task)
        self._retiring[deployment_id] = task

        def done(t: asyncio.Task) -> None:
            self._tasks.discard(t)
            if self._retiring.get(deployment_id) is t:
                del self._retiring[deployment_id]

        task.add_done_callback(done)
        return task

    async def _retired(self, deployment_id: str) -> None:
        task = self._retiring.get(deployment_id)
        if task is not None:
            await asyncio.gather(task, return_exceptions=True)

    async def _failed(self, dep: Deployment, reason: str, *, lead: bool = True) -> None:
        """The backend gave up on a running deployment (its replicas kept crashing)."""
        await self.backend.stop(dep.id)
        self._log(dep, f"deployment failed: {reason}")
        await (self._set_status if lead else self._set_local_status)(dep, Status.FAILED, error=reason)

    def _spec(self, dep: Deployment, config: ModelConfig, secrets: dict[str, str]) -> DeploymentSpec:
        return DeploymentSpec(
            deployment_id=dep.id, model_id=dep.model_id, home=Path(dep.source_dir).parent,
            requirements=tuple(config.requirements),
            requirements_file=config.requirements_file,
            build_commands=tuple(config.build_commands), scaling=config.scaling,
            secrets=secrets, environment=self._environment_of(dep),
            request_timeout=config.runtime.request_timeout,
            liveness_timeout=config.runtime.liveness_timeout, upstream=config.upstream,
            backend=config.runtime.backend,
        )

    def _environment_of(self, dep: Deployment) -> str | None:
        envs = self.routing.environments_of(dep.id)
        if PRODUCTION in envs:
            return PRODUCTION
        return envs[0] if envs else None

    async def _revert_intended(self, dep: Deployment) -> None:
        for key, target in list(self.routing.intended.items()):
            if target != dep.id:
                continue
            previous = self.routing.live.get(key)
            if previous and previous != dep.id:
                await self._set_intended(key[0], key[1], previous)

    async def _set_status(self, dep: Deployment, status: Status, error: str | None = None) -> Deployment:
        async with self._changing:
            dep = self._localized(await self.store.set_deployment_status(dep.id, status, error=error))
            self.routing.record(dep)
        return dep

    async def _set_local_status(self, dep: Deployment, status: Status,
                                error: str | None = None) -> Deployment:
        dep = replace(dep, status=status, error=error)
        self.routing.record(dep)
        return dep

    # -- helpers -------------------------------------------------------------------------------
    def deployment(self, deployment_id: str) -> Deployment:
        dep = self.routing.deployments.get(deployment_id)
        if dep is None:
            raise NotFound(f"no deployment with id {deployment_id}")
        return dep

    def log_file(self, deployment_id: str) -> Path:
        return deployment_log(Path(self.deployment(deployment_id).source_dir).parent)

    def _log(self, dep: Deployment, message: str) -> None:
        log.info("deployment %s: %s", dep.id, message)
        home = Path(dep.source_dir).parent
        if not home.is_dir():  # followed from another gateway, not unpacked here (yet)
            return
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S")
        with open(deployment_log(home), "a") as f:
            f.write(f"{stamp} [trestle] {message}\n")

    def upload_dir(self) -> Path:
        """Where pushes are received and unpacked (beside the deployments: renames stay cheap)."""
        self.settings.deployments_dir.mkdir(parents=True, exist_ok=True)
        return self.settings.deployments_dir
