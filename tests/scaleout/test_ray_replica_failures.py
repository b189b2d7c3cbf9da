"""A Ray replica that fails, on the two-node cluster (tests/scaleout/conftest.py): a worker that
crashes has its last words in the deployment log and its actor killed at once (the CPU it held
is free for the replacement), and one that stops answering `/health` is killed and replaced by
the liveness check while the other replica serves (as local workers are:
tests/security/test_timeouts.py).
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
import yaml

from replicas import Load, ready, tiny
from support import wait_for

pytestmark = pytest.mark.cluster


def parent_of(pid: int) -> int:
    """The Ray actor process a replica's worker runs under (the worker's parent)."""
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def test_a_crashed_replica_s_actor_is_killed_once_its_last_words_are_in_the_log(
        ray_cluster, ray_srv, tmp_path, deactivated):
    push = deactivated(ray_srv, ray_srv.push(tiny(tmp_path, "ray-crash")))
    dep = push["deployment"]["id"]
    url = f"/model/{push['model']['id']}/production/predict"
    (replica,) = ready(ray_srv, dep)
    actor = parent_of(replica["pid"])
    with ray_srv.client() as http:
        process = http.post(url, json={}).json()["process"]
        resp = http.post(url, json={"crash": True})  # prints a line, then exits at once
    assert resp.status_code == 502, resp.text
    # the actor ends (its CPU goes back to the cluster) without waiting for anything else
    wait_for(lambda: not running(actor), "the crashed replica's Ray actor to be killed", 60)
    # and only once the worker's last line had reached the deployment log
    logs = ray_srv.cli("deployments", "logs", dep).stdout
    assert f"crashing on purpose in process {process}" in logs, logs[-2000:]
    back = wait_for(lambda: next((r for r in ready(ray_srv, dep) if r["restarts"] == 1), None),
                    "the crashed replica to be restarted", 180)
    assert back["pid"] != replica["pid"] and "exit code 3" in back["last_exit"], back


def test_a_replica_that_stops_answering_health_is_replaced_while_the_other_serves(
        ray_cluster, ray_srv, tmp_path, deactivated):
    folder = tiny(tmp_path, "ray-wedged", min_replicas=2, max_replicas=2)
    config = yaml.safe_load((folder / "config.yaml").read_text())
    config["runtime"].update(request_timeout=2, liveness_timeout=6)
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    push = deactivated(ray_srv, ray_srv.push(folder))
    dep = push["deployment"]["id"]
    url = f"/model/{push['model']['id']}/production/predict"
    replicas = wait_for(lambda: len(r := ready(ray_srv, dep)) == 2 and r, "two ready replicas")
    victim = replicas[0]
    actor = parent_of(victim["pid"])
    with Load(ray_srv, url, [{}], threads=4) as load:
        wait_for(lambda: load.count() >= 50, "load on both replicas")
        os.kill(victim["pid"], signal.SIGSTOP)  # alive, but answering nothing
        try:
            stopped_at = load.count()
            back = wait_for(
                lambda: next((r for r in ready(ray_srv, dep)
                              if r["index"] == victim["index"] and r["restarts"] == 1), None),
                "the stopped replica to be replaced", 180)
            served_meanwhile = load.count(lambda r: r[0] == 200) - stopped_at
            wait_for(lambda: load.count() - stopped_at >= 100, "load after the replacement")
        finally:
            if running(victim["pid"]):
                os.kill(victim["pid"], signal.SIGKILL)
                os.kill(victim["pid"], signal.SIGCONT)
    # killed by the gateway as a local worker is (SIGKILL), not by taking its Ray actor down
    assert back["pid"] != victim["pid"] and back["last_exit"] == "exit code -9", back
    assert served_meanwhile > 0, "the other replica did not serve while the first was replaced"
    # the stopped worker was killed, not left behind stopped, and its actor with it
    wait_for(lambda: not running(victim["pid"]) and not running(actor),
             "the stopped worker and its actor to be gone", 60)
    # only requests sent to the stopped replica before it was taken out may fail (504: no answer)
    failed = [r for r in load.results if r[0] != 200]
    assert all(s in (502, 504) for s, _ in failed), failed
    assert "has not answered its health check" in ray_srv.log_text()
