"""Models: create, unique names, lookups by id and name, listing."""

from __future__ import annotations

import re
from datetime import UTC

import pytest

from trestle.errors import BadRequest, Conflict
from trestle.store import Model


def test_create_and_get(run, store):
    model = run(store.create_model("sentiment"))
    assert isinstance(model, Model)
    assert re.fullmatch(r"m[a-z0-9]{8}", model.id)
    assert model.name == "sentiment"
    assert model.created_at.tzinfo == UTC
    assert run(store.get_model(model.id)) == model
    assert run(store.get_model_by_name("sentiment")) == model


def test_unknown_model_is_none(run, store):
    assert run(store.get_model("mnosuch00")) is None
    assert run(store.get_model_by_name("nosuch")) is None


def test_duplicate_name_is_conflict(run, store):
    run(store.create_model("dup"))
    with pytest.raises(Conflict) as info:
        run(store.create_model("dup"))
    assert info.value.param == "name"
    assert "dup" in info.value.message
    assert [m.name for m in run(store.list_models())] == ["dup"]


def test_names_are_case_sensitive_and_ids_distinct(run, store):
    a = run(store.create_model("Llama"))
    b = run(store.create_model("llama"))
    assert a.id != b.id


def test_list_in_creation_order(run, store):
    created = [run(store.create_model(f"model-{i}")) for i in range(5)]
    assert run(store.list_models()) == created


def test_list_empty(run, store):
    assert run(store.list_models()) == []


@pytest.mark.parametrize("name", ["", "   ", None, 42, "x" * 256])
def test_bad_name_is_bad_request(run, store, name):
    with pytest.raises(BadRequest) as info:
        run(store.create_model(name))
    assert info.value.param == "name"


def test_records_are_frozen(run, store):
    model = run(store.create_model("frozen"))
    with pytest.raises(AttributeError):
        model.name = "other"
