"""Environments: a named pointer from a model to one of its deployments (promote = upsert)."""

from __future__ import annotations

import pytest

from trestle.errors import BadRequest, Conflict, NotFound
from trestle.store import Environment


@pytest.fixture
def model(run, store):
    return run(store.create_model("chat"))


@pytest.fixture
def deployments(run, store, model):
    return [run(store.create_deployment(model.id, {}, f"/d{i}")) for i in range(2)]


def test_set_get_and_move(run, store, model, deployments):
    first, second = deployments
    env = run(store.set_environment(model.id, "production", first.id))
    assert isinstance(env, Environment)
    assert (env.model_id, env.name, env.deployment_id) == (model.id, "production", first.id)
    assert run(store.get_environment(model.id, "production")) == env

    moved = run(store.set_environment(model.id, "production", second.id))
    assert moved.deployment_id == second.id
    assert moved.updated_at >= env.updated_at
    assert run(store.get_environment(model.id, "production")) == moved
    assert len(run(store.list_environments(model.id))) == 1


def test_list_by_name(run, store, model, deployments):
    first, second = deployments
    run(store.set_environment(model.id, "production", first.id))
    run(store.set_environment(model.id, "development", second.id))
    run(store.set_environment(model.id, "canary-2", second.id))
    envs = run(store.list_environments(model.id))
    assert [(e.name, e.deployment_id) for e in envs] == [
        ("canary-2", second.id), ("development", second.id), ("production", first.id),
    ]


def test_environments_are_per_model(run, store, model, deployments):
    other = run(store.create_model("other"))
    other_dep = run(store.create_deployment(other.id, {}, "/o"))
    run(store.set_environment(model.id, "production", deployments[0].id))
    run(store.set_environment(other.id, "production", other_dep.id))
    assert run(store.get_environment(model.id, "production")).deployment_id == deployments[0].id
    assert run(store.get_environment(other.id, "production")).deployment_id == other_dep.id
    assert run(store.list_environments(other.id))[0].model_id == other.id


def test_unknown_environment_is_none(run, store, model):
    assert run(store.get_environment(model.id, "production")) is None
    assert run(store.list_environments(model.id)) == []
    assert run(store.list_environments("mnosuch00")) == []


def test_unknown_deployment_is_not_found(run, store, model):
    with pytest.raises(NotFound) as info:
        run(store.set_environment(model.id, "production", "dnosuch00"))
    assert info.value.param == "deployment_id"


def test_unknown_model_is_not_found(run, store, deployments):
    with pytest.raises(NotFound) as info:
        run(store.set_environment("mnosuch00", "production", deployments[0].id))
    assert info.value.param == "model_id"


def test_deployment_of_another_model_is_bad_request(run, store, model, deployments):
    other = run(store.create_model("other"))
    with pytest.raises(BadRequest) as info:
        run(store.set_environment(other.id, "production", deployments[0].id))
    assert info.value.param == "deployment_id"
    assert run(store.get_environment(other.id, "production")) is None


@pytest.mark.parametrize("name", ["", "-leading", "has space", "a/b", "x" * 65, None])
def test_bad_name_is_bad_request(run, store, model, deployments, name):
    with pytest.raises(BadRequest) as info:
        run(store.set_environment(model.id, name, deployments[0].id))
    assert info.value.param == "name"


def test_history_records_each_move_and_rewind_drops_what_came_after(run, store, model, deployments):
    first, second = deployments
    third = run(store.create_deployment(model.id, {}, "/d3"))
    for dep in (first, second, second, third):  # pointing at the same one again is no move
        run(store.set_environment(model.id, "production", dep.id))
    assert run(store.environment_history(model.id, "production")) == [first.id, second.id, third.id]
    env = run(store.rewind_environment(model.id, "production", first.id))
    assert env.deployment_id == first.id
    assert run(store.get_environment(model.id, "production")).deployment_id == first.id
    assert run(store.environment_history(model.id, "production")) == [first.id]
    with pytest.raises(NotFound):
        run(store.rewind_environment(model.id, "production", third.id))


def test_delete_environment_and_deployment(run, store, model, deployments):
    first, second = deployments
    run(store.set_environment(model.id, "staging", first.id))
    run(store.set_environment(model.id, "staging", second.id))
    with pytest.raises(Conflict) as info:
        run(store.delete_deployment(second.id))
    assert "staging" in info.value.message
    run(store.delete_deployment(first.id))  # no longer pointed at: its history entries go too
    assert run(store.get_deployment(first.id)) is None
    assert run(store.environment_history(model.id, "staging")) == [second.id]
    deleted = run(store.delete_environment(model.id, "staging"))
    assert deleted.deployment_id == second.id
    assert run(store.get_environment(model.id, "staging")) is None
    assert run(store.environment_history(model.id, "staging")) == []
    with pytest.raises(NotFound):
        run(store.delete_environment(model.id, "staging"))
    with pytest.raises(NotFound):
        run(store.delete_deployment(first.id))
