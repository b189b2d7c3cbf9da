"""The manager and the routing table over the in-process backend: bring-up, routing, failure."""

from __future__ import annotations

import asyncio

import pytest

from managers import open_manager, until
from support import EXAMPLES
from trestle.deploy.inprocess import InProcessBackend
from trestle.errors import NotFound, Unavailable, UpstreamError

from .conftest import ACTIVE, FAILED, predict, push, renamed, settled


def test_a_push_comes_up_and_is_routed_by_environment_deployment_and_id(tmp_path):
    async def scenario():
        async with open_manager(tmp_path / "home") as manager:
            result = await push(manager, EXAMPLES / "hello")
            model, dep = result.model.id, result.deployment.id
            # the deployment was only recorded: a request waits for it rather than failing
            early = asyncio.create_task(predict(manager.routing.route(model), {"name": "early"}))
            assert (await settled(manager, dep)).status == ACTIVE
            assert await early == (200, {"message": "Hello, early!"})
            for replica in (
                manager.routing.route(model),
                manager.routing.route(model, environment="development"),
                manager.routing.route(model, deployment_id=dep),
            ):
                assert replica.deployment_id == dep
                assert await predict(replica, {"name": "seam"}) == (200, {"message": "Hello, seam!"})

    asyncio.run(scenario())


def test_routing_names_what_does_not_exist(tmp_path):
    async def scenario():
        async with open_manager(tmp_path / "home") as manager:
            result = await push(manager, EXAMPLES / "hello")
            await settled(manager, result.deployment.id)
            with pytest.raises(NotFound, match="no model with id mnosuch"):
                manager.routing.route("mnosuch")
            with pytest.raises(NotFound, match="no environment 'staging'"):
                manager.routing.route(result.model.id, environment="staging")
            with pytest.raises(NotFound, match="has no deployment dnosuch"):
                manager.routing.route(result.model.id, deployment_id="dnosuch")
            with pytest.raises(NotFound, match="Model APIs served here: none") as info:
                manager.routing.route(slug="no-such-slug")
            assert info.value.code == "model_not_found"

    asyncio.run(scenario())


def test_a_load_failure_is_recorded_and_production_stays_on_the_old_deployment(tmp_path):
    async def scenario():
        async with open_manager(tmp_path / "home") as manager:
            good = await push(manager, EXAMPLES / "hello")
            await settled(manager, good.deployment.id)
            bad = await push(manager, renamed(EXAMPLES / "load_fails", "hello", tmp_path),
                             promote=True)
            assert bad.model.id == good.model.id and "production" in bad.environments
            failed = await settled(manager, bad.deployment.id)
            assert failed.status == FAILED
            assert "weights file model.bin is missing" in failed.error
            with pytest.raises(Unavailable, match="failed: .*weights file"):
                manager.routing.route(good.model.id, deployment_id=bad.deployment.id)
            # production never moved; its record went back to the deployment that serves it
            replica = manager.routing.route(good.model.id)
            assert replica.deployment_id == good.deployment.id
            await until(lambda: manager.routing.intended[(good.model.id, "production")]
                        == good.deployment.id, "production's record to go back")
            envs = {e.name: e.deployment_id for e in await manager.store.list_environments(good.model.id)}
            assert envs["production"] == good.deployment.id

    asyncio.run(scenario())


def test_a_replica_that_dies_is_not_routed_to(tmp_path):
    async def scenario():
        backend = InProcessBackend()
        async with open_manager(tmp_path / "home", backend) as manager:
            result = await push(manager, EXAMPLES / "hello")
            await settled(manager, result.deployment.id)
            replica = manager.routing.route(result.model.id)
            await backend.kill(result.deployment.id)
            with pytest.raises(Unavailable, match="no running replica"):
                manager.routing.route(result.model.id)
            # a replica handed out before it died answers with the upstream error, not a hang
            with pytest.raises(UpstreamError):
                await predict(replica, {"name": "late"})

    asyncio.run(scenario())


def test_a_stream_arrives_in_pieces_and_can_be_closed_early(tmp_path):
    async def scenario():
        async with open_manager(tmp_path / "home") as manager:
            result = await push(manager, EXAMPLES / "streaming")
            await settled(manager, result.deployment.id)
            replica = manager.routing.route(result.model.id)
            body = b'{"text": "a b c", "repeat": 2}'
            upstream = await replica.send("POST", "/predict", [(b"content-type", b"application/json")], body)
            assert upstream.status == 200
            pieces = []
            async with upstream:
                async for chunk in upstream.chunks:
                    pieces.append(chunk)
            assert b"".join(pieces).decode().split() == ["a", "b", "c"] * 2
            assert len(pieces) > 1  # relayed as written, not buffered into one body
            # leave after the first piece: the exchange closes and the replica still serves
            upstream = await replica.send("POST", "/predict", [(b"content-type", b"application/json")],
                                          b'{"text": "x y z", "repeat": 1000}')
            async with upstream:
                async for _ in upstream.chunks:
                    break
            again = await replica.send("POST", "/predict", [(b"content-type", b"application/json")], body)
            assert (await again.read()).decode().split() == ["a", "b", "c"] * 2

    asyncio.run(scenario())


def test_wait_ready_retries_a_refused_connection():
    """A worker's socket exists a moment before it listens: a refused connection then is "not
    ready yet", not a failed start (a fake replica: the real race cannot be produced on demand)."""
    from trestle.deploy.backend import wait_ready
    from trestle.errors import Unavailable

    class Refusing:
        def __init__(self):
            self.calls = 0

        async def send(self, method, path, headers, body):
            self.calls += 1
            if self.calls < 3:
                raise Unavailable("refused the connection")

            class Ready:
                status = 200

                async def read(self):
                    return b'{"status": "ready"}'

            return Ready()

    replica = Refusing()
    asyncio.run(wait_ready(replica, lambda: None))
    assert replica.calls == 3
