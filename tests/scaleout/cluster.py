"""A Ray cluster of two nodes on this machine, for tests/scaleout and bench/scaleout.py.

`ray start --head` and a second `ray start --address` (with a `worker` resource of its own), each
with its own temp folder, no dashboard and a small object store. Nodes are stopped by the PIDs of
their processes (those whose command line names the node's temp folder), never with `ray stop`,
which stops every Ray on the machine. The nodes join on the machine's own address (what `ray
start` picks; Ray turns a loopback address into it).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from support import free_port, wait_for

RAY = Path(sys.executable).parent / "ray"
OBJECT_STORE_BYTES = 80 * 1024 * 1024
START_TIMEOUT_S = 180


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _parent(pid: int) -> int | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return int(fields[1])


class RayCluster:
    def __init__(self, head_cpus: int = 8, worker_cpus: int = 4):
        self.head_cpus, self.worker_cpus = head_cpus, worker_cpus
        # short folders: Ray's Unix socket paths live under them (at most ~107 bytes)
        self.head_dir = Path(tempfile.mkdtemp(prefix="trh-"))
        self.worker_dir = Path(tempfile.mkdtemp(prefix="trw-"))
        self.port = free_port()
        self.address: str | None = None
        self.env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}

    def _start(self, args: list[str], log: Path) -> None:
        with open(log, "ab") as out:
            proc = subprocess.run([str(RAY), "start", *args], stdout=out, stderr=subprocess.STDOUT,
                                  env=self.env, timeout=START_TIMEOUT_S)
        if proc.returncode != 0:
            raise RuntimeError(f"ray start failed:\n{log.read_text(errors='replace')[-4000:]}")

    def start_head(self) -> None:
        self._start(["--head", f"--port={self.port}", f"--num-cpus={self.head_cpus}",
                     "--include-dashboard=false",
                     f"--object-store-memory={OBJECT_STORE_BYTES}", f"--temp-dir={self.head_dir}",
                     "--disable-usage-stats"], self.head_dir / "start.log")
        text = (self.head_dir / "start.log").read_text(errors="replace")
        # the address it tells other nodes to join (the machine's address, not loopback)
        marker = "ray start --address='"
        self.address = text.split(marker, 1)[1].split("'", 1)[0]

    def start_worker(self) -> None:
        self._start([f"--address={self.address}", f"--num-cpus={self.worker_cpus}",
                     '--resources={"worker": 1}',
                     f"--object-store-memory={OBJECT_STORE_BYTES}", f"--temp-dir={self.worker_dir}",
                     f"--dashboard-agent-listen-port={free_port()}",
                     "--min-worker-port=20002", "--max-worker-port=29999",
                     "--disable-usage-stats"], self.worker_dir / "start.log")

    def pids(self, folder: Path) -> list[int]:
        """The node's processes: those whose command line names its temp folder."""
        mine = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit() and str(folder) in _cmdline(int(entry.name)):
                mine.append(int(entry.name))
        return mine

    def raylet(self, folder: Path) -> int | None:
        return next((p for p in self.pids(folder) if "raylet/raylet" in _cmdline(p)), None)

    def node_of(self, pid: int) -> str | None:
        """"head" or "worker": the node whose raylet `pid` descends from."""
        raylets = {self.raylet(self.head_dir): "head", self.raylet(self.worker_dir): "worker"}
        while pid and pid > 1:
            if pid in raylets:
                return raylets[pid]
            pid = _parent(pid)
        return None

    def stop_worker(self) -> None:
        """The worker node leaves the cluster at once: its raylet first, then the rest of it."""
        raylet = self.raylet(self.worker_dir)
        if raylet is not None:
            _kill(raylet, signal.SIGKILL)
        for pid in self.pids(self.worker_dir):
            _kill(pid, signal.SIGKILL)
        wait_for(lambda: not self.pids(self.worker_dir), "the worker node's processes to end", 60)

    def worker_running(self) -> bool:
        return self.raylet(self.worker_dir) is not None

    def close(self) -> None:
        for folder in (self.worker_dir, self.head_dir):
            for pid in self.pids(folder):
                _kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 5  # a Ray node ignores SIGTERM for a while: then SIGKILL
        while time.monotonic() < deadline and (self.pids(self.worker_dir) or self.pids(self.head_dir)):
            time.sleep(0.2)
        for folder in (self.worker_dir, self.head_dir):
            for pid in self.pids(folder):
                _kill(pid, signal.SIGKILL)
            shutil.rmtree(folder, ignore_errors=True)


def _kill(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass
