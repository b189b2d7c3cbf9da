"""Cold starts: from `trestle push` to the first answer, and from zero replicas to the first answer.

Run:  .venv/bin/python bench/coldstart.py [--runs 3]

Measured against a floor taken in the same run: starting a bare `python -c "import
trestle.runtime.server, trestle.runtime.truss.app"` (an interpreter and the worker's imports: no
worker can answer sooner).
  - push to first response: `trestle push` (the real CLI, --no-wait) of a model with no
    requirements, then requests until one answers 200           (target: <= 2 s)
  - scale from zero: a deployment with `min_replicas: 0` that has scaled to zero; the time of the
    request that cold-starts it                                   (target: <= 1.5 s)
A second anchor: a worker started by hand, without gateway or sandbox, until its `/health` is
ready. Medians of `--runs` runs; the ratios say how much is trestle's own.

Then where the time goes (medians), each stage measured on its own:
  - interpreter: `python -c pass`; sandbox: bubblewrap around it, minus it; worker imports:
    importing the worker's modules, minus the interpreter; CLI start: `trestle --help`
  - in a push: the CLI's wall time (start, pack, upload, the gateway unpacking and recording it),
    the replica's launch to its first ready `/health` (the gateway's
    `trestle_cold_start_duration_seconds`; it starts while the CLI exits), and the time from the
    CLI's return to the first 200
  - in a scale from zero: the launch to ready, and the rest (waking the autoscaler, forwarding)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from support import EXAMPLES, metric, start_server  # noqa: E402


def timed(args: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(args, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def floor() -> float:
    return timed([sys.executable, "-c", WORKER_IMPORTS])


WORKER_IMPORTS = "import trestle.runtime.server, trestle.runtime.truss.app"


def sandboxed(args: list[str]) -> list[str]:
    """`args` in the sandbox a worker gets (as `trestle serve` would wrap it)."""
    from trestle.deploy import sandbox

    box = sandbox.detect()
    top = Path(tempfile.mkdtemp(prefix="tb-box-"))
    for name in ("dep/src", "home", "sock"):
        (top / name).mkdir(parents=True)
    return sandbox.command(box, args, deployment_id="bench", folder=top / "dep", home=top / "home",
                           writable=top / "sock")


def cold_start_sum(server) -> float:
    """The gateway's total of replica launch-to-ready times so far (its /metrics)."""
    return metric(server, "trestle_cold_start_duration_seconds_sum")


def bare_worker() -> float:
    """A worker started by hand (no gateway, no sandbox) until its `/health` says ready: what a
    cold start costs before trestle's own part (second anchor)."""
    sock = Path(tempfile.mkdtemp(prefix="tb-")) / "w.sock"
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "trestle.runtime", "--model-dir", str(EXAMPLES / "hello"),
                             "--socket", str(sock)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        with httpx.Client(transport=httpx.HTTPTransport(uds=str(sock))) as http:
            while True:
                try:
                    if http.get("http://w/health").status_code == 200:
                        return time.perf_counter() - t0
                except httpx.TransportError:
                    pass
                if proc.poll() is not None:
                    raise RuntimeError("the bare worker exited")
                time.sleep(0.005)
    finally:
        proc.terminate()
        proc.wait()
        shutil.rmtree(sock.parent, ignore_errors=True)


def model_folder(into: Path, name: str, scaling: dict | None = None) -> Path:
    dest = into / name
    shutil.copytree(EXAMPLES / "hello", dest)
    config = yaml.safe_load((dest / "config.yaml").read_text())
    config["model_name"] = name
    if scaling:
        config["scaling"] = scaling
    (dest / "config.yaml").write_text(yaml.safe_dump(config))
    return dest


def first_200(http: httpx.Client, url: str, deadline_s: float = 120) -> None:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if http.post(url, json={"name": "bench"}).status_code == 200:
            return
        time.sleep(0.005)
    raise RuntimeError(f"{url} never answered 200")


def push_to_first_response(server, folder: Path) -> dict[str, float]:
    """The push's total and its stages: the CLI, the replica's launch to ready, the rest."""
    launched_before = cold_start_sum(server)
    with httpx.Client(base_url=server.url, timeout=120) as http:
        t0 = time.perf_counter()
        res = server.cli("push", str(folder), "--no-wait", "--output", "json")
        cli = time.perf_counter() - t0
        pushed = json.loads(res.stdout)
        url = f"/model/{pushed['model']['id']}/deployment/{pushed['deployment']['id']}/predict"
        first_200(http, url)
        total = time.perf_counter() - t0
    launch = cold_start_sum(server) - launched_before
    # the launch overlaps the CLI's exit: what is left after the CLI returned is the rest
    return {"total": total, "cli": cli, "launch": launch, "rest": total - cli}


def scale_from_zero(server, folder: Path, runs: int) -> list[dict[str, float]]:
    pushed = server.push(folder)
    dep = pushed["deployment"]["id"]
    url = f"/model/{pushed['model']['id']}/production/predict"
    times = []
    with httpx.Client(base_url=server.url, timeout=120) as http:
        for _ in range(runs):
            deadline = time.monotonic() + 120
            while http.get(f"/api/v1/deployments/{dep}").json()["replicas"] != []:
                if time.monotonic() > deadline:
                    raise RuntimeError("the deployment never scaled to zero")
                time.sleep(0.05)
            launched_before = cold_start_sum(server)
            t0 = time.perf_counter()
            resp = http.post(url, json={"name": "bench"})
            total = time.perf_counter() - t0
            assert resp.status_code == 200, resp.text
            launch = cold_start_sum(server) - launched_before
            times.append({"total": total, "launch": launch, "rest": total - launch})
    return times


def runs_of(runs: list[dict[str, float]]) -> str:
    return ", ".join(f"{r['total']:.3f}" for r in runs)


def median(runs: list[dict[str, float]], key: str) -> float:
    return statistics.median(r[key] for r in runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())} on {os.cpu_count()} cores")
    floor()  # warm the file cache for everyone
    floors = [floor() for _ in range(args.runs)]
    py = sys.executable
    stages = {
        "interpreter (python -c pass)": [timed([py, "-c", "pass"]) for _ in range(args.runs)],
        "sandbox (bubblewrap around it)": [timed(sandboxed([py, "-c", "pass"])) for _ in range(args.runs)],
        "worker imports": [timed([py, "-c", WORKER_IMPORTS]) for _ in range(args.runs)],
        "CLI start (trestle --help)": [timed([py, "-m", "trestle", "--help"]) for _ in range(args.runs)],
    }
    bares = [bare_worker() for _ in range(args.runs)]
    home = Path(tempfile.mkdtemp(prefix="trestle-bench-"))
    folders = Path(tempfile.mkdtemp(prefix="trestle-bench-models-"))
    server = start_server(home, "--no-auth", "--no-builtin")
    try:
        pushes = [push_to_first_response(server, model_folder(folders, f"cold-{i}"))
                  for i in range(args.runs)]
        zeros = scale_from_zero(server, model_folder(
            folders, "zero", {"min_replicas": 0, "max_replicas": 1, "scale_down_delay": 0.5}), args.runs)
    finally:
        server.stop()
        shutil.rmtree(folders, ignore_errors=True)
    f, p, z = statistics.median(floors), median(pushes, "total"), median(zeros, "total")
    print(f"floor: python -c '{WORKER_IMPORTS}': {f:.3f} s   (median of {args.runs})")
    b = statistics.median(bares)
    print(f"anchor: a bare worker (no gateway, no sandbox) to ready: {b:.3f} s = {b / f:.1f}x floor")
    print(f"push to first response:  {p:.3f} s = {p / f:.1f}x floor   (target <= 2.000 s) "
          f"{'MET' if p <= 2.0 else 'MISSED'}   runs: {runs_of(pushes)}")
    print(f"scale from zero to first response: {z:.3f} s = {z / f:.1f}x floor   (target <= 1.500 s) "
          f"{'MET' if z <= 1.5 else 'MISSED'}   runs: {runs_of(zeros)}")
    interp = statistics.median(stages["interpreter (python -c pass)"])
    print("where the time goes (medians):")
    print(f"  interpreter (python -c pass)        {interp:.3f} s")
    print(f"  sandbox start (bubblewrap)          {statistics.median(stages['sandbox (bubblewrap around it)']) - interp:.3f} s")
    print(f"  worker imports                      {statistics.median(stages['worker imports']) - interp:.3f} s")
    print(f"  bare worker: ready after imports    {b - statistics.median(stages['worker imports']):.3f} s")
    print(f"  CLI start (trestle --help)          {statistics.median(stages['CLI start (trestle --help)']):.3f} s")
    print(f"  push: the CLI (start, pack, upload, record)   {median(pushes, 'cli'):.3f} s")
    print(f"  push: replica launch to ready       {median(pushes, 'launch'):.3f} s")
    print(f"  push: after the CLI returned, to the first 200   {median(pushes, 'rest'):.3f} s")
    print(f"  scale from zero: launch to ready    {median(zeros, 'launch'):.3f} s")
    print(f"  scale from zero: the rest           {median(zeros, 'rest'):.3f} s")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
