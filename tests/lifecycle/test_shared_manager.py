"""Deployment managers of two gateways on one PostgreSQL database (in one process, over the
in-process backend): what one gateway does to a deployment while another follows it, and the
manager's lock (`DeploymentManager._changing`) around every change of the record.

Each test drives the follower's `sync` itself (as the change feed would on a notification), so
what it sees does not depend on timing. Deployments are brought up one at a time: in one process,
two model folders loading at once would race on `sys.modules` (`trestle.deploy.inprocess`).
"""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path

import pytest
import yaml

from postgres import throwaway_cluster
from managers import open_manager, until
from support import EXAMPLES
from trestle.deploy.backend import deployment_log
from trestle.deploy.inprocess import InProcessBackend
from trestle.deploy.lifecycle import Lifecycle
from trestle.deploy.manager import DeploymentManager
from trestle.errors import NotFound
from trestle.store import Status

# load() waits until a file `go` is in the deployment's folder (or the folder is gone): a test
# holds one gateway's copy in `deploying` as long as it needs, without timing anything.
GATED = '''
import time
from pathlib import Path

FOLDER = Path(__file__).resolve().parent.parent


class Model:
    def load(self):
        deadline = time.monotonic() + 300
        while FOLDER.is_dir() and not (FOLDER / "go").exists() and time.monotonic() < deadline:
            time.sleep(0.02)

    def predict(self, model_input):
        return {"loaded": True}
'''


@pytest.fixture(scope="module")
def cluster():
    with throwaway_cluster() as c:
        yield c


def folder(root: Path, name: str, source: Path = EXAMPLES / "hello", **config) -> Path:
    dest = root / f"{name}-{len(list(root.iterdir()))}"
    shutil.copytree(source, dest)
    (dest / "config.yaml").write_text(yaml.safe_dump({"model_name": name, **config}))
    return dest


def gated(root: Path, name: str) -> Path:
    dest = folder(root, name)
    (dest / "model" / "model.py").write_text(GATED)
    return dest


def manager_on(url: str, home: Path, backend=None):
    return open_manager(home, backend, database_url=url)



async def active(manager: DeploymentManager, deployment_id: str):
    return await until(lambda: deployment_id in manager.routing.deployments
                       and manager.deployment(deployment_id).status == Status.ACTIVE,
                       f"deployment {deployment_id} to be active")


async def predict(manager: DeploymentManager, model_id: str, **route) -> tuple[int, dict]:
    sender = manager.routing.route(model_id, **route)
    upstream = await sender.send("POST", "/predict", [(b"content-type", b"application/json")],
                                 json.dumps({"name": "x"}).encode())
    return upstream.status, json.loads(await upstream.read())


def test_scale_on_a_follower_keeps_its_own_view_of_the_deployment(cluster, tmp_path):
    url = cluster.new_database()

    async def scenario():
        async with manager_on(url, tmp_path / "a") as a, manager_on(url, tmp_path / "b") as b:
            pushed = await a.push_folder(folder(tmp_path, "scaled"))
            dep = pushed.deployment.id
            await active(a, dep)
            await b.sync()
            await active(b, dep)
            own = b.deployment(dep).source_dir
            assert own != a.deployment(dep).source_dir  # B runs its own copy

            scaling = await b.scale(dep, {"max_replicas": 3})  # on the gateway that follows
            assert scaling.max_replicas == 3
            mine = b.deployment(dep)
            assert (mine.source_dir, mine.status) == (own, Status.ACTIVE)
            assert mine.config["scaling"]["max_replicas"] == 3
            assert await predict(b, pushed.model.id) == (200, {"message": "Hello, x!"})
            # B's log says so, not A's (the folder of the record is A's)
            assert "scaling set to" in deployment_log(Path(own).parent).read_text()
            leader_log = deployment_log(Path(a.deployment(dep).source_dir).parent)
            assert "scaling set to" not in leader_log.read_text()
            # the record and the other gateway have it
            assert (await a.store.get_deployment(dep)).config["scaling"]["max_replicas"] == 3
            await a.sync()
            assert a.deployment(dep).config["scaling"]["max_replicas"] == 3

    asyncio.run(scenario())


def test_a_request_waiting_for_a_deployment_deleted_elsewhere_gets_a_404_at_once(cluster, tmp_path):
    url = cluster.new_database()

    async def scenario():
        async with manager_on(url, tmp_path / "a") as a, manager_on(url, tmp_path / "b") as b:
            first = await a.push_folder(folder(tmp_path, "doomed"))
            model, v1 = first.model.id, first.deployment.id
            await active(a, v1)
            await b.sync()
            await active(b, v1)
            v2 = (await a.push_folder(gated(tmp_path, "doomed"))).deployment.id
            (Path(a.deployment(v2).source_dir) / "go").touch()  # A's copy loads; B's will not
            await active(a, v2)
            await a.promote(model, "development", v1)  # nothing points at v2: it may be deleted
            await b.sync()
            assert b.deployment(v2).status == Status.DEPLOYING  # B's copy is held loading
            copy = await until(lambda: (p := Path(b.deployment(v2).source_dir).parent).is_relative_to(
                tmp_path / "b") and p, "B to unpack its copy")

            waiting = asyncio.create_task(predict(b, model, deployment_id=v2))
            await until(lambda: v2 in b.routing._loaded or waiting.done(), "the request to wait")
            await Lifecycle(a).delete(v2)
            await b.sync()
            with pytest.raises(NotFound, match="was deleted while this request waited") as caught:
                await asyncio.wait_for(waiting, 60)  # not the 120 s cold-start wait
            assert caught.value.code == "deployment_deleted"
            with pytest.raises(NotFound):
                b.routing.route(model, deployment_id=v2)
            await until(lambda: not copy.exists(), "B's copy of the deleted deployment to go")

    asyncio.run(scenario())


class SlowStop(InProcessBackend):
    """Stopping a deployment waits until the test lets it (as a long drain would)."""

    def __init__(self):
        super().__init__()
        self.release = asyncio.Event()
        self.stopping: list[str] = []

    async def stop(self, deployment_id: str) -> None:
        if deployment_id in self._deployments:
            self.stopping.append(deployment_id)
            await self.release.wait()
        await super().stop(deployment_id)

    async def close(self) -> None:
        self.release.set()
        await super().close()


def test_a_slow_stop_holds_up_no_other_change(cluster, tmp_path):
    url = cluster.new_database()

    async def scenario():
        slow = SlowStop()
        async with manager_on(url, tmp_path / "a") as a, manager_on(url, tmp_path / "b", slow) as b:
            stopped = (await a.push_folder(folder(tmp_path, "stopped"))).deployment.id
            await active(a, stopped)
            await b.sync()
            await active(b, stopped)
            other = await a.push_folder(folder(tmp_path, "other"))
            await active(a, other.deployment.id)
            await b.sync()
            await active(b, other.deployment.id)

            await Lifecycle(a).deactivate(stopped)
            syncing = asyncio.create_task(b.sync())  # B stops its replicas of it: slowly
            await until(lambda: stopped in slow.stopping, "B to start stopping the deployment")
            # meanwhile, on B: other changes go through
            await asyncio.wait_for(b.promote(other.model.id, "staging", other.deployment.id), 60)
            await asyncio.wait_for(b.scale(other.deployment.id, {"max_replicas": 2}), 60)
            await asyncio.wait_for(syncing, 60)
            assert b.deployment(stopped).status == Status.INACTIVE
            slow.release.set()
            await until(lambda: slow.replica(stopped) is None, "the replicas to stop")

    asyncio.run(scenario())


def test_rollback_delete_and_delete_environment_wait_for_the_lock(cluster, tmp_path):
    url = cluster.new_database()

    async def scenario():
        async with manager_on(url, tmp_path / "a") as manager:
            lifecycle = Lifecycle(manager)
            v1 = await manager.push_folder(folder(tmp_path, "locked"))
            model = v1.model.id
            await active(manager, v1.deployment.id)
            v2 = await manager.push_folder(folder(tmp_path, "locked"))
            await active(manager, v2.deployment.id)
            await lifecycle.create_environment(model, "staging")
            await lifecycle.promote(v2.deployment.id)  # production: v1 -> v2

            async def blocked_while_held(operation):
                """The operation waits while a push or promote holds the lock (held here)."""
                async with manager._changing:
                    task = asyncio.create_task(operation)
                    await until(lambda: task.done() or manager._changing._waiters,
                                "the operation to run or wait")
                    assert not task.done(), "it ran while the lock was held"
                return await task

            back = await blocked_while_held(lifecycle.rollback(model))
            assert back.deployment_id == v1.deployment.id
            await blocked_while_held(lifecycle.delete_environment(model, "staging"))
            assert await manager.store.get_environment(model, "staging") is None
            await lifecycle.promote(v1.deployment.id, "development")  # v2: pointed at by none
            await blocked_while_held(lifecycle.delete(v2.deployment.id))
            assert await manager.store.get_deployment(v2.deployment.id) is None

    asyncio.run(scenario())
