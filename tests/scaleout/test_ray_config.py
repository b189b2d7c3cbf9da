"""What the ray backend reads from a deployment without a cluster: config.yaml `resources` as
Ray's actor options, what it refuses before starting anything, and which backend each deployment
goes to."""

from __future__ import annotations

import asyncio

import pytest
import yaml

from trestle.deploy.backend import DeploymentSpec, ReadinessError
from trestle.deploy.ray.backend import RayBackend
from trestle.deploy.ray.placement import actor_options


def folder_with(tmp_path, **config):
    src = tmp_path / "src"
    src.mkdir(parents=True)
    (src / "config.yaml").write_text(yaml.safe_dump({"model_name": "m", **config}))
    return src


@pytest.mark.parametrize("resources, expected", [
    (None, {"num_cpus": 1.0}),
    ({"cpu": "2"}, {"num_cpus": 2.0}),
    ({"cpu": "500m", "memory": "2Gi"}, {"num_cpus": 0.5, "memory": 2 * 1024**3}),
    ({"memory": "1G", "use_gpu": True}, {"num_cpus": 1.0, "memory": 10**9, "num_gpus": 1.0}),
    ({"accelerator": "T4:2"}, {"num_cpus": 1.0, "num_gpus": 2.0}),
    ({"accelerator": "A10G", "memory": "512Mi"}, {"num_cpus": 1.0, "num_gpus": 1.0, "memory": 512 * 1024**2}),
])
def test_resources_become_ray_actor_options(tmp_path, resources, expected):
    src = folder_with(tmp_path, **({"resources": resources} if resources else {}))
    assert actor_options(src) == expected


def test_a_resource_ray_cannot_read_is_refused_naming_it(tmp_path):
    with pytest.raises(ReadinessError, match="resources: 'lots' is not a memory size"):
        actor_options(folder_with(tmp_path, resources={"memory": "lots"}))


def test_build_commands_are_refused_on_ray_saying_why(tmp_path):
    folder_with(tmp_path)
    spec = DeploymentSpec("d1", "m1", tmp_path, build_commands=("apt-get install -y x",))
    with pytest.raises(ReadinessError, match="build_commands cannot run on the ray backend"):
        asyncio.run(RayBackend().prepare(spec))


def test_requirements_become_the_runtime_env_pip_list(tmp_path):
    src = folder_with(tmp_path)
    (src / "reqs.txt").write_text("# pinned\nsix==1.17.0\n\n")
    spec = DeploymentSpec("d1", "m1", tmp_path, requirements=("idna==3.10",), requirements_file="reqs.txt")
    backend = RayBackend()
    asyncio.run(backend.prepare(spec))
    assert backend._envs["d1"] == {"pip": ["idna==3.10", "six==1.17.0"]}


def test_a_requirements_file_s_includes_are_read_in_place_for_the_nodes(tmp_path):
    src = folder_with(tmp_path)
    (src / "reqs").mkdir()
    (src / "reqs" / "main.txt").write_text("six==1.17.0  # pinned\n-r more.txt\n")
    (src / "reqs" / "more.txt").write_text("idna==3.10\n")
    spec = DeploymentSpec("d1", "m1", tmp_path, requirements_file="reqs/main.txt")
    backend = RayBackend()
    asyncio.run(backend.prepare(spec))
    assert backend._envs["d1"] == {"pip": ["six==1.17.0", "idna==3.10"]}  # no file the nodes lack
    (src / "reqs" / "main.txt").write_text("six\n-c pins.txt\n")
    (src / "reqs" / "pins.txt").write_text("six==1.17.0\n")
    with pytest.raises(ReadinessError, match="constraints file 'reqs/pins.txt'"):
        asyncio.run(backend.prepare(spec))


def test_each_deployment_goes_to_the_backend_its_spec_names_else_the_default(tmp_path):
    from trestle.settings import Settings
    from trestle.deploy.backend import make_backend
    from trestle.deploy.local import LocalProcessBackend

    backend = make_backend(Settings(home=tmp_path, backend="local", ray_address="10.0.0.1:6379"))
    try:
        ray = backend.backend_for(DeploymentSpec("d1", "m1", tmp_path, backend="ray"))
        assert isinstance(ray, RayBackend) and ray.address == "10.0.0.1:6379"  # joined lazily
        assert isinstance(backend.backend_for(DeploymentSpec("d2", "m1", tmp_path)),
                          LocalProcessBackend)
        assert backend.backend_for(DeploymentSpec("d3", "m1", tmp_path, backend="ray")) is ray
    finally:
        asyncio.run(backend.close())
    on_ray = make_backend(Settings(home=tmp_path, backend="ray"))
    assert isinstance(on_ray.backend_for(DeploymentSpec("d1", "m1", tmp_path, backend="local")),
                      LocalProcessBackend)
    assert isinstance(on_ray.backend_for(DeploymentSpec("d2", "m1", tmp_path)), RayBackend)
    asyncio.run(on_ray.close())

