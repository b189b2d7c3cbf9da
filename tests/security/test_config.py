"""config.yaml is bounded (size, aliases, nesting, numbers) and its keys are handled one way.

Unit tests drive `ModelConfig.parse`; the rest pushes to a real `trestle serve` (crafted archives
for what the CLI would refuse locally, the real CLI for what a user sees).
"""

from __future__ import annotations

import json

import httpx
import pytest

from support import start_server
from trestle.deploy.config import ModelConfig
from trestle.errors import BadRequest
from trestle.settings import Limits

from .archives import MODEL, entry, folder, targz

LIMITS = Limits()

# 9 levels of 9 aliases: under 400 bytes of YAML that expand to 9^9 (387 million) strings.
ALIAS_BOMB = "model_metadata:\n" + "".join(
    f"  {name}: &{name} [{','.join([f'*{prev}'] * 9) if prev else ','.join(['lol'] * 9)}]\n"
    for prev, name in zip([None, *"abcdefgh"], "abcdefghi")
)
DEEP = "model_metadata: " + "[" * 10_000 + "]" * 10_000 + "\n"
LONG_INT = "runtime:\n  predict_concurrency: " + "7" * 5000 + "\n"


def parse_error(text: str, limits: Limits | None = LIMITS) -> BadRequest:
    with pytest.raises(BadRequest) as info:
        ModelConfig.parse(text, limits)
    return info.value


# -- bounds, unit ------------------------------------------------------------------------------------
def test_an_alias_bomb_is_refused_before_it_expands():
    assert len(ALIAS_BOMB.encode()) < 400
    err = parse_error(ALIAS_BOMB)
    assert err.code == "max_config_bytes"
    assert "aliases are expanded" in err.message and "--max-config-bytes" in err.message


def test_aliases_within_the_limit_work():
    text = "defaults: &env {A: '1'}\nenvironment_variables: *env\nmodel_name: m\n"
    with pytest.raises(BadRequest, match="unknown key: defaults"):
        ModelConfig.parse(text, LIMITS)
    config = ModelConfig.parse("environment_variables: &env {A: '1', B: '2'}\nmodel_name: m\n", LIMITS)
    assert config.environment_variables == {"A": "1", "B": "2"}


def test_a_recursive_alias_is_refused():
    err = parse_error("model_metadata: &a [1, *a]\n")
    assert "inside the value it names" in err.message


def test_the_file_size_is_bounded():
    text = "description: " + "x" * (300 * 1024) + "\n"
    err = parse_error(text)
    assert err.code == "max_config_bytes" and "256K" in err.message
    small = Limits(config_bytes=1024)
    assert "1K (limit: --max-config-bytes" in parse_error("description: " + "x" * 2000, small).message


@pytest.mark.parametrize("limits", [LIMITS, None], ids=["gateway", "trusted"])
def test_deep_nesting_is_a_400_not_a_crash(limits):
    err = parse_error(DEEP, limits)
    assert "nests deeper than" in err.message
    if limits is not None:
        assert err.code == "max_config_depth" and "--max-config-depth" in err.message


@pytest.mark.parametrize("text", [
    LONG_INT,
    "model_metadata: {n: " + "1" * 5000 + "}\n",
    "model_metadata: {n: !!int '" + "1" * 5000 + "'}\n",
    "model_metadata: {n: " + "1" * 4000 + ".5}\n",
    "model_metadata: {n: " + ":".join(["1"] * 3000) + "}\n",  # a YAML 1.1 base-60 integer
], ids=["int", "nested_int", "tagged_int", "float", "sexagesimal"])
def test_overlong_numbers_are_400s(text):
    assert "number of more than 100 characters" in parse_error(text).message


def test_a_long_number_in_quotes_is_a_string_and_checked_by_type():
    ok = ModelConfig.parse("model_name: '" + "1" * 5000 + "'\n", LIMITS)
    assert ok.model_name == "1" * 5000
    err = parse_error("runtime:\n  predict_concurrency: '" + "1" * 5000 + "'\n")
    assert err.param == "runtime.predict_concurrency"


@pytest.mark.parametrize("text, words", [
    ("model_name: [unclosed\n", "not valid YAML"),
    ("- a list\n", "must be a mapping"),
    ("x: *nowhere\n", "names no anchor"),
    ("model_metadata: {when: 2001-13-45}\n", "cannot read"),
])
def test_other_yaml_mistakes_are_400s(text, words):
    assert words in parse_error(text).message


# -- keys, unit -----------------------------------------------------------------------------------
@pytest.mark.parametrize("text, named, suggested", [
    ("runtime: {predict_concurency: 2}\n", "runtime.predict_concurency", "runtime.predict_concurrency"),
    ("model_nmae: m\n", "model_nmae", "model_name"),
    ("engine: {weights: w, slug: s, max_bacth: 2}\n", "engine.max_bacth", "engine.max_batch"),
    ("scaling: {min_replica: 2}\n", "scaling.min_replica", "scaling.min_replicas"),
    ("resourses: {cpu: '1'}\n", "resourses", "resources"),  # a Truss key is suggested too
])
def test_unknown_keys_are_refused_naming_the_nearest_known_key(text, named, suggested):
    err = parse_error(text)
    assert err.message == f"config.yaml: unknown key: {named} (did you mean {suggested}?)"
    assert err.param == named


def test_every_unknown_key_is_named_at_once():
    err = parse_error("model_nmae: m\nzzz: 1\nruntime: {predict_concurency: 2}\n")
    assert err.message.startswith("config.yaml: unknown keys: ")
    for key in ("model_nmae (did you mean model_name?)", "zzz,",
                "runtime.predict_concurency (did you mean runtime.predict_concurrency?)"):
        assert key in err.message


def test_truss_keys_trestle_does_not_use_are_accepted_listed_and_not_recorded():
    text = ("model_name: m\npython_version: py311\nresources: {cpu: '2', accelerator: A10G}\n"
            "model_metadata: {example_model_input: {a: 1}}\n"
            "runtime: {predict_concurrency: 3, streaming_read_timeout: 30}\n")
    config = ModelConfig.parse(text, LIMITS)
    assert config.ignored_keys == ["python_version", "resources", "model_metadata",
                                   "runtime.streaming_read_timeout"]
    assert config.record() == {"model_name": "m", "runtime": {"predict_concurrency": 3}}


def test_records_from_older_versions_still_load():
    config = ModelConfig.from_dict({"model_name": "m", "model_nmae": "x", "resources": {}},
                                   unknown="drop")
    assert config.model_name == "m" and config.ignored_keys == ["resources"]


# -- a real gateway ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def gateway(tmp_path_factory):
    srv = start_server(tmp_path_factory.mktemp("config"), "--no-builtin")
    yield srv
    srv.stop()


def push_config(srv, config: str) -> httpx.Response:
    body = targz([entry("config.yaml", data=config.encode()), folder("model"),
                  entry("model/model.py", data=MODEL)])
    with httpx.Client(base_url=srv.url, headers=srv.headers, timeout=300) as http:
        return http.post("/api/v1/push", content=body)


def gateway_rss(srv) -> int:
    for line in (open(f"/proc/{srv.proc.pid}/status")).read().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def test_the_gateway_refuses_an_alias_bomb_and_stores_nothing(gateway):
    rss = gateway_rss(gateway)
    resp = push_config(gateway, "model_name: bomb\n" + ALIAS_BOMB)
    assert resp.status_code == 400, resp.text
    assert resp.json()["error"]["code"] == "max_config_bytes"
    with gateway.client() as http:
        listing = http.get("/api/v1/deployments")
    assert listing.status_code == 200 and len(listing.content) < 100_000
    assert all(d["config"].get("model_name") != "bomb" for d in listing.json()["deployments"])
    assert gateway_rss(gateway) - rss < 50 * 1024 * 1024


@pytest.mark.parametrize("config, status, words", [
    (DEEP, 400, "nests deeper than 32 levels"),
    (LONG_INT, 400, "number of more than 100 characters"),
    ("model_name: m\nruntime: {predict_concurency: 2}\n", 400,
     "unknown key: runtime.predict_concurency (did you mean runtime.predict_concurrency?)"),
    ("model_nmae: m\n", 400, "unknown key: model_nmae (did you mean model_name?)"),
    ("model_name: m\nengine: {weights: w, slug: s, max_bacth: 2}\n", 400,
     "unknown key: engine.max_bacth (did you mean engine.max_batch?)"),
])
def test_the_gateway_answers_config_mistakes_with_400s(gateway, config, status, words):
    resp = push_config(gateway, config)
    assert resp.status_code == status, resp.text
    assert words in resp.json()["error"]["message"]


def test_the_record_keeps_only_keys_trestle_reads(gateway):
    config = ("model_name: truss-keys\npython_version: py311\nresources: {cpu: '1'}\n"
              "model_metadata: {note: " + "n" * 1000 + "}\n")
    resp = push_config(gateway, config)
    assert resp.status_code == 201, resp.text
    body = resp.json()
    assert body["ignored_keys"] == ["python_version", "resources", "model_metadata"]
    assert body["deployment"]["config"] == {"model_name": "truss-keys"}
    with gateway.client() as http:
        dep = http.get(f"/api/v1/deployments/{body['deployment']['id']}").json()
    assert dep["config"] == {"model_name": "truss-keys"}


def test_the_cli_lists_truss_keys_it_does_not_use_and_refuses_typos(gateway, tmp_path):
    good = tmp_path / "good"
    (good / "model").mkdir(parents=True)
    (good / "model" / "model.py").write_bytes(MODEL)
    (good / "config.yaml").write_text("model_name: listed\npython_version: py311\n"
                                      "runtime: {predict_concurrency: 2, enable_debug_logs: true}\n")
    out = gateway.cli("push", str(good)).stdout
    assert "not used:      python_version, runtime.enable_debug_logs" in out
    assert "[active]" in out
    as_json = json.loads(gateway.cli("push", str(good), "--no-wait", "--output", "json").stdout)
    assert as_json["ignored_keys"] == ["python_version", "runtime.enable_debug_logs"]

    (good / "config.yaml").write_text("model_name: typo\nruntime: {predict_concurency: 2}\n")
    res = gateway.cli("push", str(good), check=False)
    assert res.returncode == 1
    assert "unknown key: runtime.predict_concurency (did you mean runtime.predict_concurrency?)" in res.stderr
