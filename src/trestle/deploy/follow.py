"""Following other gateways: how a gateway keeps in step with deployments it did not lead.

Several gateways may share one record (PostgreSQL, docs/multiple-gateways.md). Each runs its own
replicas of what the record says. The gateway a push or an activation reached *leads* that
bring-up (`DeploymentManager._bring_up`: it writes the deployment's status, and reverts the
environments if it fails); the others *follow* it: `sync` (called by `trestle.store.changes`
when another gateway changed the record) unpacks the pushed folder from the store into this
gateway's own deployments folder, starts this gateway's replicas and keeps their status in its
routing table only, writing nothing but "active" over a record a crashed leader left loading.
Failed, deactivated and deleted deployments are stopped here too; environments are re-pointed
(live once the deployment is active here); new scaling bounds are applied. Deployments a gateway
finds on start are followed the same way.

`Following` is a part of `DeploymentManager` (its state is set up there).
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import tempfile
from dataclasses import replace
from pathlib import Path

from trestle.deploy.config import ModelConfig
from trestle.deploy.build.package import unpack
from trestle.errors import BadRequest
from trestle.store import Deployment, Status

log = logging.getLogger("trestle.deploy")

RESUMABLE = {Status.BUILDING, Status.DEPLOYING, Status.ACTIVE}


class Following:
    async def sync(self) -> None:
        """Bring this gateway in step with the record after other gateways changed it: new
        deployments are followed (brought up here), failed, deactivated or deleted ones stopped,
        new scaling applied, environments re-pointed (live once their deployment is active here)."""
        async with self._changing:
            # Pointers first: a deployment an environment points at is never deleted, so every
            # pointer read here names a deployment the read below finds.
            pointers = {}
            for model in await self.store.list_models():
                for env in await self.store.list_environments(model.id):
                    pointers[(model.id, env.name)] = env.deployment_id
            records = {d.id: d for d in await self.store.list_deployments()}
            for dep_id in [d for d in self.routing.deployments if d not in records]:
                self._forget(dep_id)
            for record in records.values():
                if record.id in self._leading:  # this gateway's push, recording it now
                    continue
                if self._seen.get(record.id) != record.updated_at:
                    self._seen[record.id] = record.updated_at
                    await self._sync_deployment(self._localized(record))
            for key in [k for k in self.routing.intended if k not in pointers]:
                self.routing.intended.pop(key, None)
                self.routing.live.pop(key, None)
            for key, dep_id in pointers.items():
                if self.routing.intended.get(key) != dep_id:
                    self.routing.point(key, dep_id)
                    if self.routing.deployments[dep_id].status == Status.ACTIVE:
                        self._go_live(dep_id)

    async def _sync_deployment(self, record: Deployment) -> None:
        mine = self.routing.deployments.get(record.id)
        if mine is None or (mine.status not in RESUMABLE and record.status in RESUMABLE):
            # new here, or activated again elsewhere
            self.routing.record(record)
            if record.status in RESUMABLE:
                self._follow(record)
            return
        if record.status not in RESUMABLE and mine.status != record.status:
            # failed where it was led, or deactivated: stop this gateway's replicas too
            self.routing.record(record)
            self._retire(record.id)
            self._log(record, f"stopped here: the deployment is {record.status} (changed by "
                              "another gateway)")
            return
        if record.config != mine.config:
            self.routing.record(replace(mine, config=record.config))
            scaling = ModelConfig.from_dict(record.config, unknown="drop").scaling
            self.backend.scale(record.id, scaling)

    def _follow(self, dep: Deployment) -> None:
        if dep.status == Status.ACTIVE:  # active elsewhere; loading here
            dep = replace(dep, status=Status.DEPLOYING)
            self.routing.record(dep)
        task = asyncio.create_task(self._bring_up(dep, lead=False))
        self._tasks.add(task)
        self._following[dep.id] = task

        def done(t: asyncio.Task) -> None:
            self._tasks.discard(t)
            if self._following.get(dep.id) is t:
                del self._following[dep.id]

        task.add_done_callback(done)

    def _forget(self, deployment_id: str) -> None:
        """A deployment deleted by another gateway: requests waiting for it are told, its
        replicas here stop and its folder goes (in the background: `_retire`)."""
        dep = self.routing.forget(deployment_id)
        self._seen.pop(deployment_id, None)
        local = self._local_dirs.pop(deployment_id, None)
        self._retire(deployment_id, folder=Path(local).parent if local is not None else None)
        log.info("deployment %s (model %s) was deleted by another gateway", dep.id, dep.model_id)

    def _localized(self, dep: Deployment) -> Deployment:
        """The record with its folder on this machine, where this gateway unpacked it."""
        local = self._local_dirs.get(dep.id)
        return replace(dep, source_dir=local) if local and local != dep.source_dir else dep

    async def _local_copy(self, dep: Deployment) -> Deployment:
        """The deployment with its folder in this gateway's deployments folder: where the record
        says when this gateway took the push, else unpacked there (once) from the archive kept
        in the store. Each gateway keeps its own copy, virtualenv and log, even on one machine."""
        home = self.settings.deployments_dir / Path(dep.source_dir).parent.name
        if Path(dep.source_dir) == home / "src" and (home / "src").is_dir():
            return dep
        if not (home / "src").is_dir():
            fd, name = tempfile.mkstemp(prefix=".fetch-", suffix=".tar.gz", dir=self.upload_dir())
            os.close(fd)
            archive = Path(name)
            staging = Path(tempfile.mkdtemp(prefix=".upload-", dir=self.upload_dir()))
            try:
                if not await self.store.load_archive(dep.id, archive):
                    raise BadRequest("its folder is not on this machine and the store keeps no copy "
                                     "of it (it was pushed to a gateway on SQLite); push it again")
                await asyncio.to_thread(unpack, archive, staging, self.settings.limits)
                home.mkdir(exist_ok=True)
                staging.rename(home / "src")
            finally:
                archive.unlink(missing_ok=True)
                shutil.rmtree(staging, ignore_errors=True)
        self._local_dirs[dep.id] = str(home / "src")
        dep = self._localized(dep)
        self.routing.record(dep)
        self._log(dep, f"following deployment {dep.id}: its folder was unpacked on this gateway")
        return dep
