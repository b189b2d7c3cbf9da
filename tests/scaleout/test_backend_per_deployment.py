"""config.yaml `runtime.backend`: each deployment runs where it says (`local` processes or `ray`
actors), whatever the gateway's `--backend`; one that says nothing runs on the gateway's default;
any other value is refused at push, naming the key and the values it takes."""

from __future__ import annotations

import pytest
import yaml

from replicas import ready, tiny
from support import start_server


def on_backend(folder, backend: str):
    config = yaml.safe_load((folder / "config.yaml").read_text())
    config.setdefault("runtime", {})["backend"] = backend
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    return folder


def answers(srv, push: dict) -> str:
    with srv.client() as http:
        resp = http.post(f"/model/{push['model']['id']}/production/predict", json={})
    assert resp.status_code == 200, resp.text
    return resp.json()["version"]


@pytest.fixture(scope="module")
def local_srv(ray_cluster, tmp_path_factory):
    """A gateway whose default is local processes, told which Ray cluster to join for the
    deployments that ask for Ray."""
    server = start_server(tmp_path_factory.mktemp("mixed-home"), "--no-builtin",
                          "--backend", "local", "--ray-address", ray_cluster.address,
                          env=ray_cluster.auth_env())
    yield server
    server.stop()


@pytest.mark.cluster
def test_a_local_gateway_serves_a_local_and_a_ray_deployment(ray_cluster, local_srv, tmp_path,
                                                              deactivated):
    here = deactivated(local_srv, local_srv.push(tiny(tmp_path, "stays-here")))
    there = deactivated(local_srv, local_srv.push(on_backend(tiny(tmp_path, "goes-to-ray"), "ray")))
    assert here["deployment"]["status"] == "active" and there["deployment"]["status"] == "active"
    assert answers(local_srv, here) == "v1" and answers(local_srv, there) == "v1"
    (local,) = ready(local_srv, here["deployment"]["id"])
    (remote,) = ready(local_srv, there["deployment"]["id"])
    assert ray_cluster.node_of(remote["pid"]) in ("head", "worker") and remote["node"], remote
    assert ray_cluster.node_of(local["pid"]) is None and not local.get("node"), local
    # both keep serving side by side
    assert answers(local_srv, here) == "v1" and answers(local_srv, there) == "v1"


@pytest.mark.cluster
def test_a_ray_gateway_runs_a_deployment_that_asks_for_local_as_a_local_process(
        ray_cluster, ray_srv, tmp_path, deactivated):
    push = deactivated(ray_srv, ray_srv.push(on_backend(tiny(tmp_path, "asks-local"), "local")))
    assert answers(ray_srv, push) == "v1"
    (replica,) = ready(ray_srv, push["deployment"]["id"])
    assert ray_cluster.node_of(replica["pid"]) is None and not replica.get("node"), replica
    # the gateway's default: Ray
    default = deactivated(ray_srv, ray_srv.push(tiny(tmp_path, "says-nothing")))
    (replica,) = ready(ray_srv, default["deployment"]["id"])
    assert ray_cluster.node_of(replica["pid"]) in ("head", "worker"), replica


def test_an_unknown_backend_is_refused_at_push_naming_the_key_and_the_values(tmp_path):
    srv = start_server(tmp_path / "home", "--no-builtin")
    try:
        res = srv.cli("push", str(on_backend(tiny(tmp_path, "k8s"), "kubernetes")), check=False)
        assert res.returncode != 0
        assert "runtime.backend" in res.stderr and "'local' or 'ray'" in res.stderr, res.stderr
        models = srv.cli_json("models", "list")["models"]
        assert not any(m["name"] == "k8s" for m in models), models
    finally:
        srv.stop()
