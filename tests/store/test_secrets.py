"""Secrets: named values given to workers; names are identifiers; values stored as given."""

from __future__ import annotations

import logging

import pytest

from trestle.errors import BadRequest


def test_set_list_get(run, store):
    assert run(store.list_secret_names()) == []
    assert run(store.get_secrets()) == {}
    run(store.set_secret("hf_token", "hf_abc"))
    run(store.set_secret("API_KEY", "s3cr3t ✓\nline two"))
    assert run(store.list_secret_names()) == ["API_KEY", "hf_token"]
    assert run(store.get_secrets()) == {"API_KEY": "s3cr3t ✓\nline two", "hf_token": "hf_abc"}


def test_set_again_replaces(run, store):
    run(store.set_secret("token", "old"))
    run(store.set_secret("token", "new"))
    assert run(store.get_secrets()) == {"token": "new"}
    assert run(store.list_secret_names()) == ["token"]


def test_empty_value_is_kept(run, store):
    run(store.set_secret("EMPTY", ""))
    assert run(store.get_secrets()) == {"EMPTY": ""}


@pytest.mark.parametrize("name", ["", "1abc", "has-dash", "has space", "a.b", "é", None, "x" * 256])
def test_bad_name_is_bad_request(run, store, name):
    with pytest.raises(BadRequest) as info:
        run(store.set_secret(name, "v"))
    assert info.value.param == "name"
    assert run(store.list_secret_names()) == []


@pytest.mark.parametrize("name", ["_", "a", "A_1", "_private", "x" * 255])
def test_good_names(run, store, name):
    run(store.set_secret(name, "v"))
    assert run(store.list_secret_names()) == [name]


@pytest.mark.parametrize("value", [None, 1, b"bytes", {"a": 1}])
def test_non_string_value_is_bad_request(run, store, value):
    with pytest.raises(BadRequest) as info:
        run(store.set_secret("name", value))
    assert info.value.param == "value"


def test_values_never_reach_logs(run, store, caplog):
    caplog.set_level(logging.DEBUG)
    logging.getLogger("sqlalchemy.engine").setLevel(logging.INFO)
    try:
        run(store.set_secret("token", "very-secret-value-123"))
        run(store.get_secrets())
    finally:
        logging.getLogger("sqlalchemy.engine").setLevel(logging.WARNING)
    assert "secrets" in caplog.text
    assert "very-secret-value-123" not in caplog.text
