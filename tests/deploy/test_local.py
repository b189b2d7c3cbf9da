"""The local process backend through the same seam: real worker processes on Unix sockets."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from managers import open_manager
from support import EXAMPLES
from trestle.deploy.local import LocalProcessBackend
from trestle.deploy.http1 import HTTP1Transport
from trestle.deploy.transport import Replica
from trestle.errors import Unavailable, UpstreamError

from .conftest import ACTIVE, FAILED, predict, push, settled

CRASHY = Path(__file__).resolve().parent.parent / "gateway" / "models" / "crashy"


def test_a_replica_process_that_dies_is_an_upstream_error_then_comes_back(tmp_path):
    async def scenario():
        async with open_manager(tmp_path / "home", LocalProcessBackend(tmp_path / "run")) as manager:
            result = await push(manager, CRASHY)
            assert (await settled(manager, result.deployment.id)).status == ACTIVE
            model = result.model.id
            status, first = await predict(manager.routing.route(model), {})
            assert status == 200
            with pytest.raises(UpstreamError, match=f"deployment {result.deployment.id} did not answer"):
                await predict(manager.routing.route(model), {"crash": True})

            async def answer():
                try:
                    return await predict(manager.routing.route(model), {})
                except (Unavailable, UpstreamError):
                    return None

            loop_result = None
            deadline = asyncio.get_running_loop().time() + 180
            while loop_result is None and asyncio.get_running_loop().time() < deadline:
                loop_result = await answer()
                if loop_result is None:
                    await asyncio.sleep(0.1)
            assert loop_result is not None, "the replica never came back"
            status, second = loop_result
            assert status == 200 and second["process"] != first["process"]

    asyncio.run(scenario())


def test_a_worker_that_fails_to_load_fails_the_deployment_with_its_reason(tmp_path):
    async def scenario():
        async with open_manager(tmp_path / "home", LocalProcessBackend(tmp_path / "run")) as manager:
            result = await push(manager, EXAMPLES / "load_fails")
            failed = await settled(manager, result.deployment.id)
            assert failed.status == FAILED
            assert "weights file model.bin is missing" in failed.error
            log = manager.log_file(result.deployment.id).read_text()
            assert "deployment failed" in log and "Traceback" in log  # the worker's own output

    asyncio.run(scenario())


def test_an_unreachable_replica_is_unavailable(tmp_path):
    """Nothing was sent: a 503 that says to retry, as while a dead replica is being restarted."""
    async def scenario():
        replica = Replica("dgone", 0, HTTP1Transport.unix(str(tmp_path / "none.sock"), "deployment dgone"))
        try:
            with pytest.raises(Unavailable, match="deployment dgone refused the connection") as info:
                await replica.send("GET", "/health", [], b"")
            assert info.value.status_code == 503
        finally:
            await replica.close()

    asyncio.run(scenario())


def test_a_replica_closed_after_it_was_routed_to_is_unavailable(tmp_path):
    """The backend closes a dead replica's transport; a request routed to it a moment before is a
    503 that says to retry, not an internal error."""
    async def scenario():
        replica = Replica("dgone", 0, HTTP1Transport.unix(str(tmp_path / "none.sock"), "deployment dgone"))
        await replica.close()
        with pytest.raises(Unavailable, match="deployment dgone has stopped") as info:
            await replica.send("POST", "/predict", [], b"{}")
        assert info.value.status_code == 503

    asyncio.run(scenario())
