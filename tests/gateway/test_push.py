"""What a push does and says: slugs stay with their model, a broken first push is repaired by
the next good one, and the printed URLs are the ones that work for that kind of model."""

from __future__ import annotations

import shutil

import httpx
import yaml

from support import EXAMPLES, SLUG


def _engine_folder(tmp_path, name: str, model_name: str, slug: str):
    folder = tmp_path / name
    folder.mkdir()
    config = yaml.safe_load((EXAMPLES / "smollm2-single" / "config.yaml").read_text())
    config["model_name"] = model_name
    config["engine"]["slug"] = slug
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    return folder


def test_a_slug_served_by_another_model_is_refused_naming_that_model(server, tmp_path):
    res = server.cli("push", str(EXAMPLES / "smollm2-single"), check=False)
    assert res.returncode == 1
    assert "409" in res.stderr and "already served by model SmolLM2-135M-Instruct" in res.stderr
    assert "engine.slug" in res.stderr
    names = {m["name"] for m in server.cli_json("models", "list")["models"]}
    assert "SmolLM2-135M-Instruct-single" not in names  # nothing recorded
    # the slug still reaches the built-in model
    with server.client() as http:
        chat = http.post("/v1/chat/completions", json={
            "model": SLUG, "max_tokens": 1, "messages": [{"role": "user", "content": "Hi"}]})
    assert chat.status_code == 200
    # a new deployment of the model that holds the slug is fine
    same = _engine_folder(tmp_path, "same", "SmolLM2-135M-Instruct", SLUG)
    push = server.push(same)
    assert push["deployment"]["status"] == "active"


def test_a_failed_first_push_is_repaired_by_the_next_good_push(server, tmp_path):
    folder = tmp_path / "repaired"
    shutil.copytree(EXAMPLES / "load_fails", folder)
    (folder / "config.yaml").write_text("model_name: repaired-later\n")
    res = server.cli("push", str(folder), check=False)
    assert res.returncode == 1
    assert "[failed]" in res.stdout and "http" not in res.stdout  # no URL that cannot work
    shutil.rmtree(folder / "model")
    shutil.copytree(EXAMPLES / "hello" / "model", folder / "model")
    res = server.cli("push", str(folder))
    assert "[active]" in res.stdout
    assert "production points at deployment" in res.stdout and "never became active" in res.stdout
    model = next(m for m in server.cli_json("models", "list")["models"]
                 if m["name"] == "repaired-later")
    with server.client() as http:
        resp = http.post(f"/model/{model['id']}/production/predict", json={"name": "again"})
    assert resp.status_code == 200 and resp.json() == {"message": "Hello, again!"}
    deps = server.cli_json("deployments", "list", "--model", model["id"])["deployments"]
    assert model["environments"]["production"] == deps[-1]["id"]


def _urls(stdout: str) -> dict[str, str]:
    out = {}
    for line in stdout.splitlines():
        label, sep, value = line.partition(":")
        assert sep and value.startswith(" "), f"malformed line {line!r}"
        out[label] = value.strip()
    return out


def test_an_engine_push_prints_its_slug_and_the_openai_urls_not_predict(server, tmp_path):
    folder = _engine_folder(tmp_path, "eng", "push-output-engine", "acme/push-output")
    res = server.cli("push", str(folder))
    lines = _urls(res.stdout)
    assert "predict" not in res.stdout
    assert lines["model"].startswith("acme/push-output")
    assert lines["chat completions"] == f"{server.url}/v1/chat/completions"
    with server.client() as http:
        for label in ("chat completions", "deployment chat completions"):
            resp = http.post(lines[label], json={
                "model": "acme/push-output", "max_tokens": 1,
                "messages": [{"role": "user", "content": "Hi"}]})
            assert resp.status_code == 200, (label, resp.text)


def test_a_model_push_prints_openai_urls_only_when_the_class_has_those_methods(server):
    hello = _urls(server.cli("push", str(EXAMPLES / "hello")).stdout)
    assert "chat completions" not in hello and "completions" not in hello
    openai_methods = _urls(server.cli("push", str(EXAMPLES / "openai_methods")).stdout)
    with httpx.Client(headers=server.headers, timeout=120) as http:
        for label in ("development", "deployment"):
            assert http.post(hello[label], json={"name": "x"}).status_code == 200
        resp = http.post(openai_methods["chat completions"], json={
            "model": "m", "messages": [{"role": "user", "content": "Hi"}]})
        assert resp.status_code == 200, resp.text
