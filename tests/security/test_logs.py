"""Logs stay bounded and honest: tails and ranges without reading the whole file, worker logs
rotated by size, and request paths that cannot forge a log line."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from support import EXAMPLES, start_server

MODELS = Path(__file__).resolve().parent / "models"
MAX_BYTES = 100_000
FORGED = "2026-11-22 00:00:00,000 INFO [-] trestle.gateway: FORGED by a client"


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TRESTLE_WORKER_LOG_MAX_BYTES", str(MAX_BYTES))
        mp.setenv("TRESTLE_WORKER_LOG_BACKUPS", "2")
        server = start_server(tmp_path_factory.mktemp("logs-home"), "--no-builtin")
    yield server
    server.stop()


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def _folder(srv, name: str) -> Path:
    (folder,) = (srv.home / "deployments").glob(f"{name}-*")
    return folder


def test_a_request_path_cannot_forge_a_gateway_log_line(srv):
    # No key: answered 401, and logged; the CR LF in the path must not start a line of its own.
    with httpx.Client(base_url=srv.url) as http:
        r = http.get("/api/v1/models%0D%0A" + FORGED.replace(" ", "%20"))
    assert r.status_code == 401
    deadline = time.monotonic() + 30
    while "FORGED" not in srv.log_text() and time.monotonic() < deadline:
        time.sleep(0.1)
    lines = srv.log_text().splitlines()
    hits = [line for line in lines if "FORGED" in line]
    assert hits and all(not line.startswith(FORGED[:19]) for line in hits), hits
    assert any("/api/v1/models\\x0d\\x0a2026-11-22" in line for line in hits), hits


def test_a_150_mb_log_is_served_by_tail_and_range_in_bounded_memory(srv):
    pushed = srv.push(EXAMPLES / "hello")
    dep = pushed["deployment"]["id"]
    log = _folder(srv, "hello") / "worker.log"
    size = 150 * 1024 * 1024
    with open(log, "r+b") as f:  # sparse: 150 MB on paper, a few blocks on disk
        f.truncate(size)
        f.seek(size)
        f.write(b"".join(b"last line %d\n" % i for i in range(2000)))
    total = log.stat().st_size
    before = _rss_kib(srv.proc.pid)
    with srv.client() as c:
        tail = c.get(f"/api/v1/deployments/{dep}/logs", params={"tail": 3})
        default = c.get(f"/api/v1/deployments/{dep}/logs")
        head = c.get(f"/api/v1/deployments/{dep}/logs", params={"offset": 0, "limit": 100})
        end = c.get(f"/api/v1/deployments/{dep}/logs", params={"offset": total - 12, "limit": 100})
        for _ in range(5):
            assert c.get(f"/api/v1/deployments/{dep}/logs", params={"offset": 10, "limit": 8 << 20}).status_code == 200
    after = _rss_kib(srv.proc.pid)
    assert tail.status_code == 200 and tail.text == "last line 1997\nlast line 1998\nlast line 1999\n"
    assert tail.headers["x-log-size"] == str(total)
    assert default.text.splitlines() == [f"last line {i}" for i in range(1000, 2000)]
    assert head.content.startswith(b"20")  # trestle's first line about the push: a timestamp
    assert end.content == b"last line 1999\n"[-12:]
    assert after - before < 64 * 1024, f"RSS grew by {(after - before) // 1024} MB"


def test_bad_log_parameters_are_400_naming_them(srv):
    pushed = srv.push(EXAMPLES / "hello")
    dep = pushed["deployment"]["id"]
    with srv.client() as c:
        for params, param in [({"tail": "-1"}, "tail"), ({"tail": "x"}, "tail"),
                              ({"offset": "0", "limit": str(1 << 40)}, "limit"),
                              ({"tail": "3", "offset": "0"}, "tail"), ({"limit": "5"}, "limit")]:
            r = c.get(f"/api/v1/deployments/{dep}/logs", params=params)
            assert r.status_code == 400, (params, r.text)
            assert r.json()["error"]["param"] == param


def test_worker_logs_rotate_by_size(srv):
    pushed = srv.push(MODELS / "chatty")
    model, dep = pushed["model"]["id"], pushed["deployment"]["id"]
    with srv.client() as c:
        for _ in range(3):
            r = c.post(f"/model/{model}/production/predict", json={"lines": 150})
            assert r.status_code == 200, r.text
        folder = _folder(srv, "chatty")
        deadline = time.monotonic() + 60
        while not (folder / "worker.log.2").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert (folder / "worker.log.1").exists() and (folder / "worker.log.2").exists()
        assert not (folder / "worker.log.3").exists()  # two backups kept, the oldest dropped
        for name in ("worker.log", "worker.log.1", "worker.log.2"):
            assert (folder / name).stat().st_size <= MAX_BYTES + 64 * 1024, name
        # The newest line is in the current file, and the logs route serves it.
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            text = c.get(f"/api/v1/deployments/{dep}/logs", params={"tail": 50}).text
            if "chatty line 149 " in text:
                break
            time.sleep(0.1)
        assert "chatty line 149 " in text
