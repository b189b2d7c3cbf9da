"""What a user does to deployments after pushing them: environments, promote, rollback,
deactivate, activate, delete.

    lifecycle = Lifecycle(manager)
    await lifecycle.create_environment(model_id, "staging", deployment_id=None)  # production's
    await lifecycle.promote(deployment_id, "staging")
    await lifecycle.rollback(model_id, "production")     # back to what it pointed at before
    await lifecycle.deactivate(deployment_id)            # replicas stopped, record kept: 503s
    await lifecycle.activate(deployment_id)              # deploying again, then active
    await lifecycle.delete(deployment_id)                # 409 while an environment points at it

The store is the record (each environment's pointer and its history, `environment_history`);
the deployment manager (`trestle.deploy.manager`) brings deployments up and keeps the routing
table in step; this module is the rules of each operation, and the errors that say why one is
refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from trestle.deploy.manager import RESUMABLE, DeploymentManager
from trestle.deploy.routing import DEVELOPMENT, PRODUCTION
from trestle.errors import BadRequest, Conflict, NotFound
from trestle.store import Deployment, Status
from trestle.store.store import check_environment_name

BUILT_IN_ENVIRONMENTS = (PRODUCTION, DEVELOPMENT)


@dataclass(frozen=True)
class EnvironmentState:
    model_id: str
    name: str
    deployment_id: str  # what it points at (the record)
    serving: str | None  # what answers its requests now (differs while a promotion deploys)
    history: list[str]  # every deployment it was pointed at, oldest first


class Lifecycle:
    def __init__(self, manager: DeploymentManager):
        self.manager = manager
        self.store = manager.store
        self.routing = manager.routing

    # -- environments --------------------------------------------------------------------------
    async def environments(self, model_id: str) -> list[EnvironmentState]:
        await self._model(model_id)
        out = []
        for env in await self.store.list_environments(model_id):
            out.append(EnvironmentState(
                model_id, env.name, env.deployment_id,
                self.routing.live.get((model_id, env.name)),
                await self.store.environment_history(model_id, env.name),
            ))
        return out

    async def environment(self, model_id: str, name: str) -> EnvironmentState:
        for env in await self.environments(model_id):
            if env.name == name:
                return env
        raise NotFound(f"model {model_id} has no environment {name!r}", param="name")

    async def create_environment(self, model_id: str, name: str,
                                 deployment_id: str | None = None) -> EnvironmentState:
        """A new environment, pointing at `deployment_id` (default: where production points)."""
        check_environment_name(name)
        await self._model(model_id)
        if await self.store.get_environment(model_id, name) is not None:
            raise Conflict(f"model {model_id} already has an environment {name!r}; move it with "
                           "`trestle deployments promote DEPLOYMENT --environment NAME`",
                           param="name", code="environment_exists")
        if deployment_id is None:
            deployment_id = self.routing.intended.get((model_id, PRODUCTION))
            if deployment_id is None:
                raise BadRequest(f"model {model_id} has no production deployment to start the "
                                 "environment from; name one (deployment_id)", param="deployment_id")
        await self.manager.promote(model_id, name, deployment_id)
        return await self.environment(model_id, name)

    async def delete_environment(self, model_id: str, name: str) -> EnvironmentState:
        """Delete a named environment (production and development stay). The deployment it
        pointed at keeps running: deactivate or delete it on its own."""
        if name in BUILT_IN_ENVIRONMENTS:
            raise Conflict(f"{name} is an environment every model has; it cannot be deleted",
                           param="name", code="builtin_environment")
        async with self.manager._changing:
            env = await self.environment(model_id, name)
            await self.store.delete_environment(model_id, name)
            self.routing.intended.pop((model_id, name), None)
            self.routing.live.pop((model_id, name), None)
        return env

    # -- promote and rollback ------------------------------------------------------------------
    async def promote(self, deployment_id: str, environment: str = PRODUCTION) -> EnvironmentState:
        """Point `environment` (created if new) at the deployment. It goes live once the
        deployment is active; until then the environment keeps serving what it served."""
        dep = self.manager.deployment(deployment_id)
        if dep.status == Status.INACTIVE:
            raise Conflict(f"deployment {deployment_id} is inactive; activate it first "
                           f"(`trestle deployments activate {deployment_id}`)",
                           param="deployment_id", code="deployment_inactive")
        await self.manager.promote(dep.model_id, environment, deployment_id)
        return await self.environment(dep.model_id, environment)

    async def rollback(self, model_id: str, environment: str = PRODUCTION) -> EnvironmentState:
        """Point the environment back at the last active deployment it pointed at before the
        current one; a second rollback goes further back."""
        async with self.manager._changing:  # what it points at cannot move meanwhile
            current = await self.environment(model_id, environment)
            target = None
            for candidate in reversed(current.history):
                if candidate == current.deployment_id:
                    continue
                dep = self.routing.deployments.get(candidate)
                if dep is not None and dep.status == Status.ACTIVE:
                    target = dep
                    break
            if target is None:
                raise Conflict(f"environment {environment} of model {model_id} has no earlier "
                               "active deployment to roll back to", param="environment",
                               code="no_previous")
            await self.store.rewind_environment(model_id, environment, target.id)
            self.routing.point((model_id, environment), target.id, live=True)
        self.manager._log(target, f"environment {environment} rolled back to this deployment "
                                  f"(from {current.deployment_id})")
        return await self.environment(model_id, environment)

    # -- deactivate, activate, delete ----------------------------------------------------------
    async def deactivate(self, deployment_id: str) -> Deployment:
        """Stop the deployment's replicas and keep its record: requests to it get a 503 that says
        it is inactive until it is activated again."""
        dep = self.manager.deployment(deployment_id)
        if dep.status == Status.INACTIVE:
            return dep
        if dep.status in (Status.BUILDING, Status.DEPLOYING):
            raise Conflict(f"deployment {deployment_id} is still {dep.status}; deactivate it once "
                           "it is active (or failed)", param="deployment_id", code="deployment_busy")
        dep = await self.manager._set_status(dep, Status.INACTIVE)  # new requests: 503 from now
        await self.manager._retire(deployment_id)
        self.manager._log(dep, "deactivated: replicas stopped")
        return dep

    async def activate(self, deployment_id: str) -> Deployment:
        """Bring an inactive deployment back (deploying, then active); the environments that
        point at it serve it again once it is active."""
        dep = self.manager.deployment(deployment_id)
        if dep.status in RESUMABLE:
            return dep
        if dep.status != Status.INACTIVE:
            raise Conflict(f"deployment {deployment_id} is {dep.status}; only an inactive deployment "
                           "can be activated (push the folder again to retry a failed one)",
                           param="deployment_id", code="not_inactive")
        dep = await self.manager._set_status(dep, Status.DEPLOYING)
        self.manager._log(dep, "activated")
        self.manager._spawn(self.manager._bring_up(dep))
        return dep

    async def delete(self, deployment_id: str) -> Deployment:
        """Delete the deployment: its replicas, its record and its folder. Refused (409) while
        an environment points at it, or while it is still coming up."""
        async with self.manager._changing:  # no promote can point at it meanwhile
            dep = self.manager.deployment(deployment_id)
            pointing = sorted({env for (m, env), d in [*self.routing.intended.items(),
                                                        *self.routing.live.items()]
                               if d == deployment_id})
            if pointing:
                raise Conflict(f"deployment {deployment_id} is what {', '.join(pointing)} point(s) "
                               "at; promote another deployment there (or delete the environment) "
                               "first", param="deployment_id", code="deployment_in_use")
            if dep.status in (Status.BUILDING, Status.DEPLOYING):
                raise Conflict(f"deployment {deployment_id} is still {dep.status}; delete it once "
                               "it is active, failed or inactive", param="deployment_id",
                               code="deployment_busy")
            await self.store.delete_deployment(deployment_id)  # refuses if the record disagrees
            self.routing.forget(deployment_id)
            self.manager._seen.pop(deployment_id, None)
            self.manager._local_dirs.pop(deployment_id, None)
        # replicas and folder go outside the lock: a drain holds up no other change
        await self.manager._retire(deployment_id, folder=Path(dep.source_dir).parent)
        return dep

    async def _model(self, model_id: str) -> None:
        if await self.store.get_model(model_id) is None:
            raise NotFound(f"no model with id {model_id}", param="model_id")
