"""The spine end to end: `trestle push` an example folder, call it through every URL form."""

from __future__ import annotations

import http.client
import json
import shutil
import time
from urllib.parse import urlsplit

import httpx
import openai

from support import EXAMPLES, metric


def test_push_prints_model_id_deployment_id_and_urls(server, tmp_path):
    # a model of its own: the first push of a model is what points production at it
    folder = shutil.copytree(EXAMPLES / "typed_input", tmp_path / "typed_input")
    (folder / "config.yaml").write_text("model_name: push-output-check\n")
    res = server.cli("push", str(folder))
    out = res.stdout
    models = {m["name"]: m for m in server.cli_json("models", "list")["models"]}
    model = models["push-output-check"]
    deps = server.cli_json("deployments", "list", "--model", model["id"])["deployments"]
    dep_id = deps[-1]["id"]  # newest last: the one this push made
    assert f"model id:      {model['id']}" in out and f"deployment id: {dep_id}  [active]" in out
    assert f"{server.url}/model/{model['id']}/production/predict" in out
    assert f"{server.url}/model/{model['id']}/deployment/{dep_id}/predict" in out


def test_every_url_form_reaches_the_model(server, pushed):
    push = pushed("hello")
    m, d = push["model"]["id"], push["deployment"]["id"]
    paths = [
        f"/model/{m}/production/predict",
        f"/model/{m}/development/predict",
        f"/model/{m}/environments/production/predict",
        f"/model/{m}/deployment/{d}/predict",
        f"/model/{m}/production/sync/predict",
    ]
    with server.client() as http:
        for path in paths:
            resp = http.post(path, json={"name": path})
            assert resp.status_code == 200, (path, resp.text)
            assert resp.json() == {"message": f"Hello, {path}!"}
        # the same paths without the prefix, under a `model-{id}.` host name
        for path in paths:
            bare = path.removeprefix(f"/model/{m}")
            resp = http.post(bare, json={"name": "host"}, headers={"Host": f"model-{m}.api.example"})
            assert resp.status_code == 200, (bare, resp.text)
            assert resp.json() == {"message": "Hello, host!"}


def test_sync_path_reaches_chat_completions_with_the_openai_client(server, pushed):
    m = pushed("openai_methods")["model"]["id"]
    client = openai.OpenAI(base_url=f"{server.url}/model/{m}/environments/production/sync/v1",
                           api_key=server.api_key, default_headers={"Authorization": f"Api-Key {server.api_key}"})
    chat = client.chat.completions.create(model="echo", messages=[{"role": "user", "content": "ping pong"}])
    assert chat.choices[0].message.content == "You said: ping pong"
    stream = client.chat.completions.create(model="echo", stream=True,
                                            messages=[{"role": "user", "content": "a b c"}])
    text = "".join(c.choices[0].delta.content or "" for c in stream)
    assert text == "You said: a b c"
    done = client.completions.create(model="echo", prompt="hi there")
    assert done.choices[0].text == "You said: hi there"


def test_missing_things_are_404_envelopes(server, pushed):
    push = pushed("hello")
    m = push["model"]["id"]
    with server.client() as http:
        cases = {
            "/model/nosuchmodel/production/predict": "no model with id nosuchmodel",
            f"/model/{m}/environments/staging/predict": "no environment 'staging'",
            f"/model/{m}/deployment/dnope/predict": "has no deployment dnope",
            f"/model/{m}/production/frobnicate": "unknown route 'frobnicate'",
        }
        for path, message in cases.items():
            resp = http.post(path, json={})
            assert resp.status_code == 404, path
            assert message in resp.json()["error"], resp.text  # Truss's shape on Truss routes
            assert resp.headers["x-baseten-error-source"] == "01"  # said by the gateway
        # a method the model does not define: the worker names it
        resp = http.post(f"/model/{m}/production/sync/v1/chat/completions", json={"messages": []})
        assert resp.status_code == 404
        assert "chat_completions" in resp.json()["error"]["message"]


def test_request_id_is_honoured_echoed_and_logged_on_both_sides(server, pushed):
    push = pushed("hello")
    with server.client() as http:
        resp = http.post(f"/model/{push['model']['id']}/production/predict", json={},
                         headers={"x-request-id": "trace-abc-123"})
        assert resp.headers["x-request-id"] == "trace-abc-123"
        fresh = http.post(f"/model/{push['model']['id']}/production/predict", json={})
        assert len(fresh.headers["x-request-id"]) == 32
        int(fresh.headers["x-request-id"], 16)  # hex
    assert "[trace-abc-123]" in server.log_text()
    worker_log = server.cli("deployments", "logs", push["deployment"]["id"]).stdout
    records = [json.loads(line) for line in worker_log.splitlines()]
    assert any(r["request_id"] == "trace-abc-123" and r["source"] == "worker" for r in records)


def test_user_errors_keep_their_status_and_bugs_are_generic_500s(server, pushed):
    push = pushed("raises")
    url = f"/model/{push['model']['id']}/production/predict"
    with server.client() as http:
        teapot = http.post(url, json={"kind": "teapot"})
        assert teapot.status_code == 418
        assert "teapot" in teapot.text
        bug = http.post(url, json={"kind": "bug", "numerator": 7})
        assert bug.status_code == 500
        assert "internal detail" not in bug.text
        assert "internal error" in bug.json()["error"]
        assert bug.headers["x-baseten-error-code"] == "600"  # the model's code failed
    log = server.cli("deployments", "logs", push["deployment"]["id"]).stdout
    assert "cannot divide 7 by zero (internal detail)" in log


def test_a_model_whose_load_fails_is_recorded_failed_with_the_reason(server):
    res = server.cli("push", str(EXAMPLES / "load_fails"), "--output", "json", check=False)
    assert res.returncode == 1
    import json

    data = json.loads(res.stdout)
    assert data["deployment"]["status"] == "failed"
    assert "weights file model.bin is missing" in data["deployment"]["error"]
    with server.client() as http:
        resp = http.post(f"/model/{data['model']['id']}/production/predict", json={})
    assert resp.status_code == 503
    assert "failed" in resp.json()["error"]


def test_later_push_serves_development_and_promote_moves_production(server, tmp_path):
    v1 = tmp_path / "v1"
    shutil.copytree(EXAMPLES / "hello", v1)
    (v1 / "config.yaml").write_text("model_name: greeter\n")
    first = server.push(v1)
    v2 = tmp_path / "v2"
    shutil.copytree(v1, v2)
    code = v2 / "model" / "model.py"
    code.write_text(code.read_text().replace('"Hello"', '"Howdy"'))
    second = server.push(v2)
    m = first["model"]["id"]
    assert second["model"]["id"] == m and second["deployment"]["id"] != first["deployment"]["id"]

    def call(env: str) -> str:
        with server.client() as http:
            return http.post(f"/model/{m}/{env}/predict", json={"name": "x"}).json()["message"]

    assert call("production") == "Hello, x!"
    assert call("development") == "Howdy, x!"
    server.cli("promote", m, second["deployment"]["id"])
    assert call("production") == "Howdy, x!"
    third = server.push(v1, "--promote")
    assert "production" in third["environments"]
    assert call("production") == "Hello, x!"


def test_health_and_metrics_need_no_key_and_count_requests(server, pushed):
    m = pushed("hello")["model"]["id"]
    with server.client() as http:
        http.post(f"/model/{m}/production/predict", json={})
    assert httpx.get(f"{server.url}/health").json() == {"status": "ok"}
    metrics = httpx.get(f"{server.url}/metrics")
    assert metrics.status_code == 200
    lines = [l for l in metrics.text.splitlines() if l.startswith("trestle_requests_total{")]
    assert any('kind="model"' in l and 'status="200"' in l and float(l.split()[-1]) >= 1 for l in lines)
    assert "trestle_request_duration_seconds_bucket" in metrics.text


def test_a_bad_environment_name_is_refused_before_anything_is_recorded(server):
    before = server.cli_json("deployments", "list")["deployments"]
    res = server.cli("push", str(EXAMPLES / "hello"), "--environment", "no spaces", check=False)
    assert res.returncode == 1
    assert "environment name must be" in res.stderr
    assert server.cli_json("deployments", "list")["deployments"] == before




def test_a_host_routed_call_is_metered_as_a_model_call(server, pushed):
    m = pushed("hello")["model"]["id"]
    before = metric(server, "trestle_requests_total", kind="model", status="200", model=m)
    with server.client() as http:
        resp = http.post("/production/predict", json={"name": "host"},
                         headers={"Host": f"model-{m}.api.example"})
    assert resp.json() == {"message": "Hello, host!"}
    assert metric(server, "trestle_requests_total", kind="model", status="200", model=m) == before + 1


def test_answers_name_no_server_software_and_carry_one_request_id(server, pushed):
    """No `server: uvicorn` banner, on a relayed answer or the gateway's own; the date stays. The
    request id is the worker's echo on a relayed answer, the gateway's own on its answers."""
    push = pushed("hello")
    with server.client() as http:
        for resp in (http.post(f"/model/{push['model']['id']}/production/predict", json={}),
                     http.get("/health")):
            assert resp.status_code == 200
            assert "server" not in resp.headers
            assert "date" in resp.headers
            assert len(resp.headers.get_list("x-request-id")) == 1


def test_an_idle_client_connection_outlives_clients_own_pools(server):
    """Clients keep idle connections for a while (httpx 5 s, aiohttp 15 s) and reuse them; the
    gateway must not be the one closing them meanwhile. The wait is the scenario itself: an idle
    spell longer than uvicorn's default keep-alive (5 s), on the same connection."""
    url = urlsplit(server.url)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
    try:
        conn.request("GET", "/health", headers=server.headers)
        first = conn.getresponse()
        first.read()
        sock = conn.sock
        time.sleep(6)
        conn.request("GET", "/health", headers=server.headers)
        again = conn.getresponse()
        assert again.status == 200 and conn.sock is sock  # answered on the same connection
    finally:
        conn.close()
