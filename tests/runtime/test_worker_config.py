"""The worker's plain view of config.yaml (no pydantic: a model may pin pydantic<2) reads what the
gateway's checked `ModelConfig` means, defaults included."""

from __future__ import annotations

import pytest

from trestle.deploy.config import ModelConfig
from trestle.runtime.config import WorkerConfig

SAMPLES = [
    {},
    {"model_module_dir": "src", "model_class_filename": "m.py", "model_class_name": "M",
     "bundled_packages_dir": "pkgs", "external_package_dirs": ["../shared"],
     "environment_variables": {"A": "1"},
     "runtime": {"predict_concurrency": 4, "health_checks": {"period": 2, "failure_threshold": 5,
                                                              "timeout": 1}}},
    {"runtime": {"health_checks": {"period": 3}}},
]


@pytest.mark.parametrize("data", SAMPLES, ids=["defaults", "every key", "one health key"])
def test_the_worker_reads_what_the_gateway_checked(data):
    checked, view = ModelConfig.model_validate(data), WorkerConfig.from_dict(data)
    for name in ("model_module_dir", "model_class_filename", "model_class_name",
                 "bundled_packages_dir", "external_package_dirs", "environment_variables"):
        assert getattr(view, name) == getattr(checked, name), name
    assert view.runtime.predict_concurrency == checked.runtime.predict_concurrency
    for name in ("period", "failure_threshold", "timeout"):
        assert getattr(view.runtime.health_checks, name) == getattr(checked.runtime.health_checks, name), name
