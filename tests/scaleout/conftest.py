"""The session's two-node Ray cluster (`scaleout.cluster`), and a `trestle serve --backend ray`
joined to it. The cluster takes ~20 s to start: the whole session shares it; the test that stops
the worker node starts it again.
"""

from __future__ import annotations

import pytest

from scaleout.cluster import RayCluster
from support import Server, start_server


@pytest.fixture(scope="session")
def ray_cluster() -> RayCluster:
    cluster = RayCluster()
    try:
        cluster.start_head()
        cluster.start_worker()
        yield cluster
    finally:
        cluster.close()


@pytest.fixture(scope="session")
def ray_srv(ray_cluster, tmp_path_factory) -> Server:
    server = start_server(tmp_path_factory.mktemp("ray-home"), "--no-builtin", "--backend", "ray",
                          "--ray-address", ray_cluster.address, env=ray_cluster.auth_env())
    yield server
    server.stop()


@pytest.fixture
def deactivated():
    """`deactivated(srv, push)` returns `push` and deactivates its deployment when the test ends,
    so that its replicas give their CPUs back to the session's cluster (12 CPUs, one a replica)."""
    pushed = []

    def push(srv: Server, answer: dict) -> dict:
        pushed.append((srv, answer["deployment"]["id"]))
        return answer

    yield push
    for srv, dep in pushed:
        srv.cli("deployments", "deactivate", dep, check=False)
