"""Deployments: create, status changes with errors, listing by model and status."""

from __future__ import annotations

import re

import pytest

from trestle.errors import BadRequest, NotFound
from trestle.store import DEPLOYMENT_STATUSES, Deployment

CONFIG = {"model_name": "echo", "runtime": {"predict_concurrency": 4}, "requirements": ["x==1"]}


@pytest.fixture
def model(run, store):
    return run(store.create_model("echo"))


def test_create_and_get(run, store, model):
    dep = run(store.create_deployment(model.id, CONFIG, "/srv/models/d1"))
    assert isinstance(dep, Deployment)
    assert re.fullmatch(r"d[a-z0-9]{8}", dep.id)
    assert (dep.model_id, dep.status, dep.config, dep.source_dir, dep.error) == (
        model.id, "building", CONFIG, "/srv/models/d1", None,
    )
    assert dep.created_at == dep.updated_at
    assert run(store.get_deployment(dep.id)) == dep


def test_create_with_status(run, store, model):
    dep = run(store.create_deployment(model.id, {}, "/s", status="active"))
    assert run(store.get_deployment(dep.id)).status == "active"


def test_create_for_unknown_model_is_not_found(run, store):
    with pytest.raises(NotFound) as info:
        run(store.create_deployment("mnosuch00", {}, "/s"))
    assert info.value.param == "model_id"
    assert run(store.list_deployments()) == []


def test_create_with_bad_status_is_value_error(run, store, model):
    with pytest.raises(ValueError, match="running"):
        run(store.create_deployment(model.id, {}, "/s", status="running"))


def test_config_must_be_a_dict(run, store, model):
    with pytest.raises(BadRequest) as info:
        run(store.create_deployment(model.id, ["not", "a", "dict"], "/s"))
    assert info.value.param == "config"


def test_unknown_deployment_is_none(run, store):
    assert run(store.get_deployment("dnosuch00")) is None


def test_status_walk_and_error(run, store, model):
    dep = run(store.create_deployment(model.id, CONFIG, "/s"))
    deploying = run(store.set_deployment_status(dep.id, "deploying"))
    assert deploying.status == "deploying" and deploying.error is None
    assert deploying.updated_at >= dep.updated_at
    failed = run(store.set_deployment_status(dep.id, "failed", error="ImportError: no module x"))
    assert (failed.status, failed.error) == ("failed", "ImportError: no module x")
    assert run(store.get_deployment(dep.id)) == failed
    # A later status without an error clears the old one.
    again = run(store.set_deployment_status(dep.id, "active"))
    assert (again.status, again.error) == ("active", None)
    assert again.created_at == dep.created_at
    assert again.config == CONFIG


def test_every_status_is_accepted(run, store, model):
    dep = run(store.create_deployment(model.id, {}, "/s"))
    for status in sorted(DEPLOYMENT_STATUSES):
        assert run(store.set_deployment_status(dep.id, status)).status == status


def test_set_status_of_unknown_is_not_found(run, store):
    with pytest.raises(NotFound) as info:
        run(store.set_deployment_status("dnosuch00", "active"))
    assert info.value.param == "deployment_id"


def test_set_bad_status_is_value_error_and_changes_nothing(run, store, model):
    dep = run(store.create_deployment(model.id, {}, "/s"))
    with pytest.raises(ValueError):
        run(store.set_deployment_status(dep.id, "ACTIVE"))
    assert run(store.get_deployment(dep.id)) == dep


def test_list_filters(run, store, model):
    other = run(store.create_model("other"))
    a = run(store.create_deployment(model.id, {}, "/a"))
    b = run(store.create_deployment(model.id, {}, "/b", status="active"))
    c = run(store.create_deployment(other.id, {}, "/c", status="active"))
    d = run(store.create_deployment(other.id, {}, "/d"))
    run(store.set_deployment_status(d.id, "failed", error="boom"))
    d = run(store.get_deployment(d.id))

    assert run(store.list_deployments()) == [a, b, c, d]
    assert run(store.list_deployments(model_id=model.id)) == [a, b]
    assert run(store.list_deployments(statuses={"active"})) == [b, c]
    assert run(store.list_deployments(statuses={"active", "failed"})) == [b, c, d]
    assert run(store.list_deployments(model_id=other.id, statuses={"building"})) == []
    assert run(store.list_deployments(statuses=set())) == []
    assert run(store.list_deployments(model_id="mnosuch00")) == []


def test_list_with_bad_status_is_value_error(run, store):
    with pytest.raises(ValueError):
        run(store.list_deployments(statuses={"active", "bogus"}))


def test_config_round_trips_nested_json(run, store, model):
    config = {"a": [1, 2.5, None, True], "b": {"c": "ü ✓"}, "empty": {}}
    dep = run(store.create_deployment(model.id, config, "/s"))
    assert run(store.get_deployment(dep.id)).config == config


@pytest.mark.parametrize("config", [{"when": object()}, {"x": float("nan")}, {1j: "key"}])
def test_config_that_is_not_json_is_bad_request(run, store, model, config):
    with pytest.raises(BadRequest) as info:
        run(store.create_deployment(model.id, config, "/s"))
    assert info.value.param == "config"
    assert run(store.list_deployments()) == []
