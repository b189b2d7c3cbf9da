"""The web console in a real browser (Chromium through Playwright) against the real server:
sign in, models, promote, logs, playground, datasets, keys; and that no page or response the
console uses carries a key or a secret value."""

from __future__ import annotations

import json
import re
import shutil
import uuid

import httpx
import pytest

from support import EXAMPLES, SLUG, wait_for

pytestmark = pytest.mark.browser


def sign_in(page, server, path: str = "/") -> None:
    """Open `path`, get sent to the sign-in page, and sign in with the server's admin key."""
    page.goto(server.url + path)
    page.wait_for_url("**/console/signin**")
    page.get_by_label("API key").fill(server.api_key)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(lambda url: "/console/signin" not in url)


def push_copy(server, tmp_path, name: str, *args: str) -> dict:
    """Push examples/hello under another model name (a model of this test's own)."""
    folder = tmp_path / name
    if not folder.exists():
        shutil.copytree(EXAMPLES / "hello", folder)
        (folder / "config.yaml").write_text(f"model_name: {name}\n")
    return server.push(folder, *args)


def test_sign_in_then_the_built_in_model_is_listed(server, page):
    page.goto(server.url + "/")
    page.wait_for_url("**/console/signin?next=%2F")
    page.get_by_label("API key").fill("not-a-key")
    page.get_by_role("button", name="Sign in").click()
    page.get_by_role("alert").filter(has_text="not valid").wait_for()
    page.get_by_label("API key").fill(server.api_key)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(server.url + "/")
    models = page.get_by_role("table", name="Models")
    models.get_by_role("link", name="SmolLM2-135M-Instruct").wait_for()
    assert "active" in models.inner_text()
    # the key is held by this tab only: not in localStorage, not in a cookie, not in the page
    assert page.evaluate("localStorage.length") == 0
    assert page.evaluate("document.cookie") == ""
    assert page.evaluate("sessionStorage.getItem('trestle.api_key')") == server.api_key
    assert server.api_key not in page.content()
    assert page.errors == []


def test_a_pushed_model_appears_is_promoted_and_its_logs_follow(server, page, tmp_path):
    name = f"console-{uuid.uuid4().hex[:6]}"
    sign_in(page, server, "/console/models")
    first = push_copy(server, tmp_path, name)  # through the CLI, while the page is open
    model_id = first["model"]["id"]
    row = page.get_by_role("row").filter(has=page.get_by_role("link", name=name))
    row.get_by_text("production").wait_for()  # appeared without reloading the page
    second = push_copy(server, tmp_path, name)
    new_dep = second["deployment"]["id"]
    assert second["environments"] != ["production"]

    row.get_by_role("link", name=name).click()
    page.wait_for_url(f"**/console/models/{model_id}")
    deployments = page.get_by_role("table", name="Deployments")
    line = deployments.locator(f"tr[data-deployment='{new_dep}']")
    line.get_by_text("active").wait_for()
    line.get_by_label("Environment to promote to").select_option("production")
    line.get_by_role("button", name=f"Promote {new_dep}").click()
    dialog = page.get_by_role("dialog")
    assert "production" in dialog.inner_text()
    dialog.get_by_role("button", name="Confirm").click()
    page.get_by_role("status").filter(has_text="promoted").wait_for()
    env = page.get_by_role("table", name="Environments").get_by_role("row").filter(has_text="production")
    env.get_by_text(new_dep).first.wait_for()
    with server.client() as c:
        wait_for(lambda: c.get(f"/api/v1/models/{model_id}/environments/production").json()
                 ["deployment_id"] == new_dep, "production to point at the promoted deployment")
    # the snippets call the model without a key in them
    assert f"/model/{model_id}/production/predict" in page.locator("figure.snippet").first.inner_text()

    line.get_by_role("link", name="Logs").click()
    page.wait_for_url(f"**/console/logs?deployment={new_dep}")
    page.get_by_role("status").filter(has_text="following").wait_for()
    rid = f"console-{uuid.uuid4().hex}"
    with server.client() as c:  # a request made after the page started following
        answer = c.post(f"/model/{model_id}/production/predict", json={"name": "logs"},
                        headers={"x-request-id": rid})
        assert answer.status_code == 200, answer.text
    page.get_by_label("Request id").fill(rid)
    logs = page.get_by_role("log", name="Log lines")
    logs.get_by_text(rid).first.wait_for()
    assert all(rid in line for line in logs.locator(".line").all_inner_texts())
    assert page.errors == []


def test_playground_streams_a_chat_with_usage_and_time_to_first_token(server, page):
    sign_in(page, server, "/console/playground")
    page.get_by_label("Chat with").select_option(SLUG)
    page.get_by_label("max_tokens", exact=True).fill("12")
    page.get_by_label("seed", exact=True).fill("7")
    page.get_by_label("logprobs", exact=True).check()
    page.get_by_label("Message", exact=True).fill("Say hello.")
    with page.expect_response("**/v1/chat/completions") as info:
        page.get_by_role("button", name="Send").click()
    response = info.value
    assert response.headers["content-type"].startswith("text/event-stream")
    body = json.loads(response.request.post_data)
    assert body["stream"] is True and body["max_tokens"] == 12 and body["seed"] == 7 and body["logprobs"]
    page.locator("[data-stat=usage]").filter(has_text="completion tokens").wait_for()
    assert re.fullmatch(r"\d+ ms", page.locator("[data-stat=ttft]").inner_text())
    reply = page.locator(".msg[data-role=assistant] .content")
    assert reply.inner_text().strip()
    assert page.get_by_role("table", name="Log probabilities").locator("tbody tr").count() >= 1
    assert page.errors == []


def test_upload_a_file_to_a_dataset_and_search_it(server, page, tmp_path):
    name = f"console-docs-{uuid.uuid4().hex[:6]}"
    doc = tmp_path / "lighthouse.md"
    doc.write_text("# Lighthouse\n\nThe lighthouse keeper feeds the cat named Biscuit every morning.\n\n"
                   "# Harbour\n\nFerries leave the harbour at noon on weekdays.\n")
    sign_in(page, server, "/console/datasets")
    page.get_by_label("New dataset name").fill(name)
    page.get_by_role("button", name="Create").click()
    page.get_by_role("heading", name=f"Dataset {name}").wait_for()
    page.get_by_role("form", name="Upload files").locator("input[type=file]").set_input_files(str(doc))
    page.get_by_role("button", name="Upload").click()
    page.get_by_role("status").filter(has_text="lighthouse.md").wait_for()
    page.get_by_role("table", name="Documents").get_by_text("lighthouse.md").wait_for()
    page.get_by_label("Query").fill("Who is fed in the morning?")
    page.get_by_role("button", name="Search", exact=True).click()
    results = page.get_by_role("list", name="Search results")
    results.get_by_text("Biscuit").first.wait_for()
    assert page.errors == []


def test_create_edit_and_try_a_prompt_endpoint(server, page):
    name = f"console-ep-{uuid.uuid4().hex[:6]}"
    spec = {"name": name, "model": SLUG, "defaults": {"max_tokens": 8, "temperature": 0},
            "messages": [{"role": "user", "content": "Say {{ word }}."}]}
    sign_in(page, server, "/console/endpoints")
    page.get_by_role("button", name="New endpoint").click()
    page.get_by_role("textbox", name="Definition").fill(json.dumps(spec))
    page.get_by_role("button", name="Create").click()
    page.get_by_role("status").filter(has_text=f"Saved {name}, version 1.").wait_for()
    page.get_by_role("heading", name=f"Edit {name} (version 1)").wait_for()

    spec["messages"][0]["content"] = "Say {{ word }} to {{ whom }}."
    page.get_by_role("textbox", name="Definition").fill(json.dumps(spec))
    page.get_by_role("button", name="Save as a new version").click()
    page.get_by_role("heading", name=f"Edit {name} (version 2)").wait_for()
    row = page.get_by_role("table", name="Endpoints").locator("tr", has_text=name)
    assert row.locator("td").nth(3).inner_text() == "2"
    assert row.locator("td").nth(4).inner_text() == "whom, word"  # the variables, sorted

    page.get_by_label("word", exact=True).fill("hello")
    page.get_by_label("whom", exact=True).fill("the sea")
    page.get_by_label("max_tokens", exact=True).fill("5")
    with page.expect_response("**/api/endpoints/**/completions") as info:
        page.get_by_role("button", name="Call").click()
    assert json.loads(info.value.request.post_data) == {"values": {"word": "hello", "whom": "the sea"},
                                                        "max_tokens": 5}
    answer = info.value.json()
    page.locator("#ep-answer").filter(has_text=answer["choices"][0]["text"].strip()[:10]).wait_for()
    assert page.get_by_text("tokens").first.is_visible()
    assert page.locator(".stats strong").first.inner_text() == str(answer["usage"]["total_tokens"])
    assert page.errors == []


WARNING_MODEL = """
import logging

log = logging.getLogger("careful")


class Model:
    def predict(self, model_input):
        log.info("checked %s", model_input)
        log.warning("watch out for %s", model_input["name"])
        return {"ok": True}
"""


def test_the_log_level_filter_keeps_that_level_and_above(server, page, tmp_path):
    folder = tmp_path / "careful"
    (folder / "model").mkdir(parents=True)
    (folder / "model" / "model.py").write_text(WARNING_MODEL)
    (folder / "config.yaml").write_text(f"model_name: careful-{uuid.uuid4().hex[:6]}\n")
    pushed = server.push(folder)
    dep, model_id = pushed["deployment"]["id"], pushed["model"]["id"]
    with server.client() as c:
        for name in ("rocks", "tides"):
            assert c.post(f"/model/{model_id}/production/predict", json={"name": name}).status_code == 200
    sign_in(page, server, f"/console/logs?deployment={dep}")
    page.get_by_label("follow live").uncheck()  # the log as it is now: the counts stay put
    logs = page.get_by_role("log", name="Log lines")
    logs.get_by_text("watch out for tides").wait_for()
    logs.get_by_text("checked").first.wait_for()
    every = len(logs.locator(".line").all_inner_texts())
    page.get_by_label("Level").select_option("WARNING")
    wait_for(lambda: len(logs.locator(".line").all_inner_texts()) < every, "the INFO lines to be hidden")
    kept = logs.locator(".line").all_inner_texts()
    assert any("watch out for rocks" in line for line in kept)
    assert kept and all(" WARNING " in f" {line} " or " ERROR " in f" {line} " for line in kept), kept
    assert page.get_by_role("status").filter(has_text=f"{len(kept)} of {every} lines").count() == 1
    page.get_by_label("Level").select_option("")
    wait_for(lambda: len(logs.locator(".line").all_inner_texts()) == every, "every line again")
    assert page.errors == []


def test_the_metrics_page_counts_and_charts_the_requests_made(server, page, tmp_path):
    model_id = push_copy(server, tmp_path, f"console-metrics-{uuid.uuid4().hex[:6]}")["model"]["id"]
    sign_in(page, server, "/console/metrics")
    total = page.locator("[data-metric=total]")
    wait_for(lambda: total.inner_text() not in ("", "—"), "a first reading of /metrics")
    before = float(total.inner_text())
    with server.client() as c:
        for _ in range(6):
            assert c.post(f"/model/{model_id}/production/predict", json={"name": "chart"}).status_code == 200
    wait_for(lambda: float(total.inner_text()) >= before + 6, "the page to count the six requests")
    charted = """() => {
        const chart = Chart.getChart(document.querySelector('canvas[aria-label="Request rate and error rate"]'));
        return chart ? chart.data.datasets[0].data.filter((v) => v > 0).length : 0;
    }"""
    wait_for(lambda: page.evaluate(charted) >= 1, "a reading with requests/s above zero on the chart")
    assert page.errors == []


def test_create_a_key_shown_once_then_revoke_it(server, page):
    name = f"console-key-{uuid.uuid4().hex[:6]}"
    sign_in(page, server, "/console/keys")
    page.get_by_label("Name").fill(name)
    page.get_by_role("button", name="Create key").click()
    shown = page.locator("#new-key")
    shown.wait_for()
    key = shown.inner_text().strip()
    assert len(key) > 20
    endpoint = f"console-ep-{uuid.uuid4().hex[:6]}"
    with server.client() as c:
        made = c.post("/api/v1/endpoints", json={
            "name": endpoint, "model": SLUG, "defaults": {"max_tokens": 4},
            "messages": [{"role": "user", "content": "Say {{ word }}."}]})
        assert made.status_code == 201, made.text
        called = c.post(f"/api/endpoints/{made.json()['id']}/completions",
                        json={"values": {"word": "yes"}}, headers={"Authorization": f"Bearer {key}"})
        assert called.status_code == 200, called.text
    page.get_by_role("button", name="Done").click()
    assert key not in page.content()
    row = page.locator(f"tr[data-key='{name}']")
    row.get_by_role("button", name=f"Revoke {name}").click()
    page.get_by_role("dialog").get_by_role("button", name="Confirm").click()
    row.get_by_role("button", name=f"Revoke {name}").wait_for(state="hidden")
    assert row.locator(".revoked").inner_text() != "—"
    with httpx.Client(base_url=server.url, timeout=60) as c:
        assert c.get("/v1/models", headers={"Authorization": f"Bearer {key}"}).status_code == 401
    page.reload()
    page.locator(f"tr[data-key='{name}']").wait_for()
    assert key not in page.content()
    # the call made with the key is in the usage table, under its endpoint and key
    usage = page.get_by_role("table", name="Usage by endpoint and key")
    usage.get_by_role("row").filter(has_text=endpoint).filter(has_text=name).wait_for()
    assert page.errors == []


PAGES = ["/", "/console/models", "/console/playground", "/console/logs", "/console/metrics",
         "/console/datasets", "/console/endpoints", "/console/keys"]


def test_no_page_or_response_the_console_uses_carries_a_key_or_secret(server, page, tmp_path):
    secret = f"s3cret-{uuid.uuid4().hex}"
    with server.client() as c:
        assert c.put("/api/v1/secrets/console_probe", json={"value": secret}).status_code == 200
    # A deployment that is given the secret: its model page, records and logs are shown too.
    folder = tmp_path / "console-secret"
    shutil.copytree(EXAMPLES / "hello", folder)
    (folder / "config.yaml").write_text("model_name: console-secret\nsecrets:\n  console_probe: null\n")
    model_id = server.push(folder)["model"]["id"]
    bodies: list[tuple[str, bytes]] = []

    def keep(response):
        if "/logs" in response.url and "follow" in response.url:
            return  # a stream still open: its lines are read below through the API instead
        bodies.append((response.url, response.body()))

    page.on("response", keep)
    sign_in(page, server, "/console/models")
    for path in [*PAGES, f"/console/models/{model_id}"]:
        page.goto(server.url + path)
        if path != "/console/logs":
            page.wait_for_load_state("networkidle")
        page.locator("main h1").first.wait_for()
    page.goto(server.url + "/console/keys")
    page.get_by_role("table", name="API keys").locator("tbody tr").first.wait_for()
    api_calls = [url for url, _ in bodies if "/api/" in url]
    assert any(url.endswith("/api/v1/keys") for url in api_calls), api_calls
    assert any(f"model_id={model_id}" in url for url in api_calls), api_calls  # its model page
    for url, body in bodies:
        assert server.api_key.encode() not in body, url
        assert secret.encode() not in body, url
    with server.client() as c:  # and the logs the logs page streams
        for dep in c.get("/api/v1/deployments").json()["deployments"]:
            text = c.get(f"/api/v1/deployments/{dep['id']}/logs", params={"format": "json"}).text
            assert server.api_key not in text and secret not in text


def test_console_pages_need_no_key_and_hold_no_data(server):
    with httpx.Client(base_url=server.url, timeout=60) as c:
        for path in PAGES:
            res = c.get(path)
            assert res.status_code == 200, path
            assert "frame-ancestors 'none'" in res.headers["content-security-policy"]
            assert res.headers["cache-control"] == "no-store"
            assert SLUG.split("/")[1] not in res.text  # the data comes from the API, with the key
        assert c.get("/console/vendor/alpine.min.js").status_code == 200
        missing = c.get("/console/nope")
        assert missing.status_code == 404 and "no page" in missing.json()["error"]["message"]
        assert c.get("/api/v1/models").status_code == 401  # the API behind it still needs a key
