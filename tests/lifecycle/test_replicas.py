"""Replicas, restarts, autoscaling and promotion on a real `trestle serve` with real workers.

Load comes from threads of plain httpx clients; every condition is polled with a generous
deadline (`wait_for`), never timed.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import openai
import pytest
import yaml

from replicas import Load, deployment, ready, tiny
from support import Server, metric, samples, scrape, start_server, value, wait_for
from trestle.engine.builtin import builtin_config

GATED = Path(__file__).resolve().parent / "models" / "gated"


@pytest.fixture(scope="module")
def srv(tmp_path_factory) -> Server:
    server = start_server(tmp_path_factory.mktemp("home"), "--no-builtin")
    yield server
    server.stop()


def test_promote_under_load_fails_no_request_and_streams_finish(srv, tmp_path):
    first = srv.push(tiny(tmp_path, "promo", "v1"))
    m, old = first["model"]["id"], first["deployment"]["id"]
    url = f"/model/{m}/production/predict"
    bodies = [{}, {"stream": 40}, {}, {"hold": 0.05}]
    with Load(srv, url, bodies, threads=6) as load:
        wait_for(lambda: load.count() >= 300, "load on the old deployment")
        second = srv.push(tiny(tmp_path, "promo", "v2"), "--promote")
        assert second["deployment"]["status"] == "active"
        new = second["deployment"]["id"]
        at_switch = load.count()
        # the load runs until the new deployment has served 300 and 1,000 were answered in all
        # (a count, not a time: how many fit into the push depends on the machine's load)
        wait_for(lambda: load.count(lambda r: '"v2"' in r[1] or "v2:" in r[1]) >= 300
                 and load.count() - at_switch >= 300 and load.count() >= 1000,
                 "load on the new deployment")
    results = load.results
    assert len(results) >= 1000 and not load.errors, load.errors[:3]
    failed = [r for r in results if r[0] != 200]
    assert not failed, failed[:3]
    streams = [text for _, text in results if ":" in text and not text.startswith("{")]
    assert streams and all(text.split() in ([f"v1:{i}" for i in range(40)], [f"v2:{i}" for i in range(40)])
                           for text in streams), "a stream was cut"
    versions = Counter("v2" if "v2" in text else "v1" for _, text in results)
    assert versions["v1"] >= 300 and versions["v2"] >= 300, versions
    # the old deployment drained; it stays reachable by id at its minimum (one replica here)
    assert deployment(srv, new)["environments"] == ["development", "production"]
    old_dep = wait_for(lambda: (d := deployment(srv, old)) and len(d["replicas"]) == 1 and d,
                       "the old deployment to settle at its minimum")
    assert old_dep["status"] == "active" and old_dep["environments"] == []
    with srv.client() as http:
        resp = http.post(f"/model/{m}/deployment/{old}/predict", json={})
    assert resp.status_code == 200 and resp.json()["version"] == "v1"


def test_a_replica_killed_mid_load_is_restarted_while_the_other_serves(srv, tmp_path):
    push = srv.push(tiny(tmp_path, "twins", min_replicas=2, max_replicas=2))
    dep = push["deployment"]["id"]
    url = f"/model/{push['model']['id']}/production/predict"
    replicas = wait_for(lambda: len(r := ready(srv, dep)) == 2 and r, "two ready replicas")
    victim = replicas[0]
    with Load(srv, url, [{}, {"stream": 20}, {"hold": 0.2}], threads=6) as load:
        wait_for(lambda: load.count() >= 50, "load on both replicas")
        os.kill(victim["pid"], signal.SIGKILL)
        killed_at = load.count()
        back = wait_for(
            lambda: next((r for r in ready(srv, dep) if r["index"] == victim["index"] and r["restarts"] == 1), None),
            "the killed replica to be restarted")
        served_meanwhile = load.count(lambda r: r[0] == 200) - killed_at
        wait_for(lambda: load.count() - killed_at >= 200, "load after the restart")
    assert back["pid"] != victim["pid"] and back["last_exit"].startswith("exit code")
    assert served_meanwhile > 0, "the other replica did not serve while the first restarted"
    # Only requests in flight on the killed replica fail, at once and clearly: a 502 before the
    # answer started, a stream cut off (never ended as if complete) after; none hung.
    failed = [r for r in load.results if r[0] != 200]
    assert all(s == 502 and "error" in text for s, text in failed), failed
    assert all("incomplete chunked read" in e for e in load.errors), load.errors
    assert len(failed) + len(load.errors) <= 6, (failed, load.errors)
    assert len(ready(srv, dep)) == 2


def test_a_deployment_scaled_to_zero_cold_starts_on_the_first_request(srv, tmp_path):
    push = srv.push(tiny(tmp_path, "sleepy", min_replicas=0, max_replicas=1, scale_down_delay=0.5))
    dep = push["deployment"]["id"]
    assert push["deployment"]["status"] == "active"  # one replica proved it loads
    wait_for(lambda: deployment(srv, dep)["replicas"] == [], "scale to zero")
    with srv.client() as http:
        resp = http.post(f"/model/{push['model']['id']}/production/predict", json={})
    assert resp.status_code == 200 and resp.json()["version"] == "v1"
    wait_for(lambda: deployment(srv, dep)["replicas"] == [], "scale to zero again once idle")


def test_load_scales_up_to_max_and_back_down_after_the_delay(srv, tmp_path):
    push = srv.push(tiny(tmp_path, "elastic", min_replicas=1, max_replicas=3,
                         target_concurrency=2, scale_down_delay=1))
    dep = push["deployment"]["id"]
    url = f"/model/{push['model']['id']}/production/predict"
    assert len(ready(srv, dep)) == 1
    with Load(srv, url, [{"hold": 1}], threads=8) as load:
        wait_for(lambda: len(ready(srv, dep)) == 3, "three ready replicas under load")
        assert len(deployment(srv, dep)["replicas"]) == 3  # never above max_replicas
    assert not load.errors and all(s == 200 for s, _ in load.results), load.results[:3]
    # lighter load goes on while the extra replicas drain and stop: nothing in flight is lost
    with Load(srv, url, [{"stream": 40}, {"hold": 0.3}], threads=2) as light:
        wait_for(lambda: len(deployment(srv, dep)["replicas"]) == 1, "back down to min_replicas")
    assert light.results and not light.errors, light.errors[:3]
    assert all(s == 200 for s, _ in light.results), [r for r in light.results if r[0] != 200][:3]


def test_a_crash_loop_marks_the_deployment_failed_with_its_last_log_lines(srv, tmp_path):
    push = srv.push(tiny(tmp_path, "crashloop"))
    dep = push["deployment"]["id"]
    url = f"/model/{push['model']['id']}/production/predict"
    statuses = Counter()

    def failed() -> dict | None:
        d = deployment(srv, dep)
        if d["status"] == "failed":
            return d
        with srv.client() as http:
            statuses[http.post(url, json={"crash": True}).status_code] += 1
        return None

    d = wait_for(failed, "the crash loop to fail the deployment", deadline_s=300)
    assert set(statuses) <= {502, 503}, statuses
    assert "crashed 5 times" in d["error"] and "crashing on purpose" in d["error"], d["error"]
    assert d["replicas"] is None
    with srv.client() as http:
        resp = http.post(url, json={})
    assert resp.status_code == 503 and " failed: its replicas crashed" in resp.json()["error"]  # Truss shape


def test_scale_from_the_cli_applies_at_once_and_is_checked(srv, tmp_path):
    push = srv.push(tiny(tmp_path, "scaled"))
    dep = push["deployment"]["id"]
    out = srv.cli_json("deployments", "scale", dep, "--min", "2", "--max", "3", "--scale-down-delay", "5")
    assert out["config"]["scaling"] == {"min_replicas": 2, "max_replicas": 3, "scale_down_delay": 5.0}
    wait_for(lambda: len(ready(srv, dep)) == 2, "a second replica")
    bad = srv.cli("deployments", "scale", dep, "--min", "4", "--max", "3", check=False)
    assert bad.returncode != 0 and "min_replicas (4) is more than max_replicas (3)" in bad.stderr
    with srv.client() as http:
        resp = http.post(f"/api/v1/deployments/{dep}/scale", json={"max_replicas": 1000})
        assert resp.status_code == 400 and resp.json()["error"]["param"] == "max_replicas"
        resp = http.post(f"/api/v1/deployments/{dep}/scale", json={"replicas": 2})
        assert resp.status_code == 400
    assert deployment(srv, dep)["config"]["scaling"]["min_replicas"] == 2  # unchanged by the refusals


def test_requests_go_to_the_replica_with_the_fewest_in_flight(srv, tmp_path):
    push = srv.push(tiny(tmp_path, "balanced", min_replicas=2, max_replicas=2))
    dep = push["deployment"]["id"]
    url = f"/model/{push['model']['id']}/production/predict"
    wait_for(lambda: len(ready(srv, dep)) == 2, "two ready replicas")
    held: list[httpx.Response] = []
    holder = threading.Thread(target=lambda: held.append(
        httpx.post(srv.url + url, json={"hold": 30}, headers=srv.headers, timeout=120)))
    holder.start()
    busy = wait_for(lambda: next((r for r in ready(srv, dep) if r["in_flight"] == 1), None),
                    "the held request in flight")
    with srv.client() as http:
        answers = {http.post(url, json={}).json()["process"] for _ in range(10)}
    assert len(answers) == 1  # all to the idle replica (round robin would send half to the busy one)
    assert next(r for r in ready(srv, dep) if r["index"] == busy["index"])["in_flight"] == 1
    holder.join(120)
    assert held[0].status_code == 200 and held[0].json()["process"] not in answers


def queue_waits(srv: Server, dep_id: str) -> tuple[float, float]:
    """(count, sum) of `trestle_queue_wait_seconds` for the deployment."""
    families = scrape(srv)
    return (value(families, "trestle_queue_wait_seconds_count", deployment=dep_id),
            value(families, "trestle_queue_wait_seconds_sum", deployment=dep_id))


def test_a_cold_start_wait_is_observed_as_queue_wait(srv, tmp_path):
    push = srv.push(tiny(tmp_path, "waiter", min_replicas=0, max_replicas=1, scale_down_delay=0.5))
    dep = push["deployment"]["id"]
    wait_for(lambda: deployment(srv, dep)["replicas"] == [], "scale to zero")
    assert queue_waits(srv, dep) == (0, 0)
    with srv.client() as http:
        resp = http.post(f"/model/{push['model']['id']}/production/predict", json={})
    assert resp.status_code == 200
    count, total = queue_waits(srv, dep)
    assert count == 1 and total > 0  # it waited for the replica to start


def test_a_request_for_a_loading_deployment_is_observed_as_queue_wait(srv, tmp_path):
    folder = tmp_path / "gated"
    shutil.copytree(GATED, folder)
    push = json.loads(srv.cli("push", str(folder), "--no-wait", "--output", "json").stdout)
    dep, model = push["deployment"]["id"], push["model"]["id"]
    answers: list[httpx.Response] = []

    def call() -> None:
        with srv.client() as http:
            answers.append(http.post(f"/model/{model}/deployment/{dep}/predict", json={}))

    caller = threading.Thread(target=call)
    caller.start()
    # the request is in flight on the gateway while the model is still loading
    wait_for(lambda: deployment(srv, dep)["status"] == "deploying", "the deployment loading")
    wait_for(lambda: metric(srv, "trestle_deployment_requests_in_flight", deployment=dep) == 1,
             "the request waiting")
    homes = list((srv.home / "deployments").glob("gated-*/home"))
    assert len(homes) == 1
    (homes[0] / "go").touch()
    caller.join(120)
    assert answers and answers[0].status_code == 200, answers
    count, total = queue_waits(srv, dep)
    assert count == 1 and total > 0


def test_a_draining_replica_is_stopped_after_its_drain_timeout(srv, tmp_path):
    push = srv.push(tiny(tmp_path, "stuck", min_replicas=2, max_replicas=2, target_concurrency=1,
                         drain_timeout=1))
    dep, model = push["deployment"]["id"], push["model"]["id"]
    wait_for(lambda: len(ready(srv, dep)) == 2, "two ready replicas")
    answers: list[int | str] = []

    def held() -> None:  # a request that does not end until the test releases it
        with srv.client() as http:
            try:
                answers.append(http.post(f"/model/{model}/deployment/{dep}/predict",
                                         json={"gate": True}).status_code)
            except httpx.HTTPError as exc:
                answers.append(repr(exc))

    callers = [threading.Thread(target=held) for _ in range(2)]
    for c in callers:
        c.start()
    wait_for(lambda: [r["in_flight"] for r in deployment(srv, dep)["replicas"]] == [1, 1],
             "one held request on each replica")
    with srv.client() as http:
        resp = http.post(f"/api/v1/deployments/{dep}/scale", json={"min_replicas": 1, "max_replicas": 1})
    assert resp.status_code == 200, resp.text
    # one replica drains; its request never ends by itself, so the drain timeout stops it
    wait_for(lambda: len(deployment(srv, dep)["replicas"]) == 1, "the draining replica stopped")
    wait_for(lambda: len(answers) == 1, "the cut request answered")
    assert answers[0] != 200  # cut off, with an error (never a hang)
    homes = list((srv.home / "deployments").glob("stuck-*/home"))
    (homes[0] / "release").touch()
    for c in callers:
        c.join(120)
    assert answers[1] == 200  # the request on the replica that stayed finished normally


def test_an_engine_deployment_scales_to_two_replicas_that_both_answer(srv, tmp_path):
    folder = tmp_path / "smol-pair"
    folder.mkdir()
    config = builtin_config(threads=1, max_batch=2, context_length=512)
    config["model_name"] = "smol-pair"
    config["engine"]["slug"] = "test/smol-pair"
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    push = srv.push(folder)
    dep = push["deployment"]["id"]
    assert push["deployment"]["status"] == "active", push["deployment"]["error"]
    srv.cli("deployments", "scale", dep, "--min", "2", "--max", "2")
    wait_for(lambda: len(ready(srv, dep)) == 2, "two ready engine replicas")
    client = openai.OpenAI(base_url=f"{srv.url}/v1", api_key=srv.api_key, max_retries=0)

    def ask(i: int) -> str:
        chat = client.chat.completions.create(
            model="test/smol-pair", max_tokens=4, messages=[{"role": "user", "content": f"Say {i}"}])
        return chat.choices[0].message.content

    def both_answered() -> bool:
        with ThreadPoolExecutor(4) as pool:  # concurrent: the least busy replica takes each
            assert all(isinstance(text, str) for text in pool.map(ask, range(4)))
        tokens = {s.labels["replica"]: s.value for s in samples(
            scrape(srv), "trestle_engine_generated_tokens_total", deployment=dep)}
        return len(tokens) == 2 and all(v > 0 for v in tokens.values())

    wait_for(both_answered, "both replicas generating tokens")
