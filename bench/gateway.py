"""Gateway overhead: the same model called through `trestle serve` and straight on a worker socket.

Run:  .venv/bin/python bench/gateway.py [--requests 4000] [--rounds 8]

Both paths hit the same example model (`examples/hello`) in a worker process of the same kind,
in the same run, so the figures are ratios against an anchor measured alongside:
  - added p50 / p99 latency at concurrency 1   (target: added p50 <= 0.3 ms); the two paths are
    measured in alternating rounds and the added p50 is the median of the rounds' differences
  - throughput at concurrency 16, gateway / direct (target: >= 0.5x)
  - CPU time per request at concurrency 1 of the gateway process and of the worker (no target):
    unlike latency it hardly moves when other work shares the machine, so it compares versions
    of the gateway on a loaded machine
  - two floors, measured in the same rounds (no target): the direct worker called through
    - a byte relay, a process that copies bytes between the client's TCP connection and the
      worker's socket and does nothing else (no HTTP): what any proxy process adds on this
      machine, its wake-ups and system calls;
    - a bare proxy: uvicorn (uvloop, httptools) and trestle's worker client
      (`trestle.deploy.http1`), the gateway's own stack, relaying the request and nothing else
      (no routing, request ids, metrics, logs, limits): what that stack adds before any of the
      gateway's features. The gateway's added latency above it is what its features cost.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import httpx
import uvloop

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from support import EXAMPLES, free_port, start_server  # noqa: E402

BODY = b'{"name": "bench"}'


async def run_load(session: aiohttp.ClientSession, url: str, total: int, concurrency: int):
    latencies: list[float] = []
    remaining = total

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            t0 = time.perf_counter()
            async with session.post(url, data=BODY,
                                    headers={"Content-Type": "application/json"}) as resp:
                await resp.read()
                assert resp.status == 200, resp.status
            latencies.append(time.perf_counter() - t0)

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - t0
    return latencies, total / elapsed


async def serve_relay(port: int, socket_path: str) -> None:
    """The byte relay: each TCP connection on `port` is spliced to one on the worker's socket."""
    loop = asyncio.get_running_loop()

    class Side(asyncio.Protocol):
        peer: "Side | None" = None

        def connection_made(self, transport) -> None:
            self.transport = transport
            self.early: list[bytes] = []  # what came before the other side was open

        def data_received(self, data: bytes) -> None:
            if self.peer is None:
                self.early.append(data)
            else:
                self.peer.transport.write(data)

        def connection_lost(self, exc) -> None:
            if self.peer is not None:
                self.peer.transport.close()

    class Client(Side):
        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            loop.create_task(self.splice())

        async def splice(self) -> None:
            _, upstream = await loop.create_unix_connection(Side, socket_path)
            upstream.peer, self.peer = self, upstream
            upstream.transport.write(b"".join(self.early))

    server = await loop.create_server(Client, "127.0.0.1", port)
    await server.serve_forever()


def serve_bare_proxy(port: int, socket_path: str) -> None:
    """The bare proxy: uvicorn and `trestle.deploy.http1`, relaying each request to the worker."""
    import uvicorn

    from trestle.deploy.http1 import HTTP1Transport

    worker = HTTP1Transport.unix(socket_path, "the direct worker", read_timeout=60)
    drop_request = {b"host", b"content-length", b"connection"}
    drop_response = {b"date", b"server", b"connection"}

    async def app(scope, receive, send) -> None:
        if scope["type"] != "http":
            return
        message = await receive()
        headers = [(k, v) for k, v in scope["headers"] if k not in drop_request]
        upstream = await worker.send(scope["method"], "/predict", headers, message["body"])
        async with upstream:
            await send({"type": "http.response.start", "status": upstream.status,
                        "headers": [(k.lower(), v) for k, v in upstream.headers
                                    if k.lower() not in drop_response]})
            async for chunk in upstream.chunks:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b""})

    uvicorn.run(app, host="127.0.0.1", port=port, loop="uvloop", http="httptools",
                access_log=False, log_level="warning", server_header=False)


def wait_for_port(port: int) -> None:
    for _ in range(600):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listens on port {port}")


def tcp() -> aiohttp.TCPConnector:
    """A pool that lets an idle connection go after 4 s, before a server closes it (the bare
    proxy's: uvicorn's default keep-alive, 5 s): a path left idle while another runs must not
    reuse a closing connection."""
    return aiohttp.TCPConnector(limit=0, keepalive_timeout=4)


def added_per_round(path: dict, base: dict) -> list[float]:
    """What `path` added to `base`'s p50 in each alternating round, in ms, smallest first."""
    return sorted((p - b) * 1e3 for p, b in zip(path["round_p50s"], base["round_p50s"]))


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def worker_process(gateway_pid: int) -> int:
    """The worker's Python process: a descendant of the gateway, under the sandbox's launchers."""
    pids = subprocess.run(["pgrep", "-f", "-x", "[^ ]*python[0-9.]* -m trestle.runtime .*"],
                          capture_output=True, text=True).stdout.split()
    for pid in map(int, pids):
        parent = pid
        while parent > 1:
            parent = int(Path(f"/proc/{parent}/stat").read_text().rsplit(")", 1)[1].split()[1])
            if parent == gateway_pid:
                return pid
    raise RuntimeError("the gateway's worker process was not found")


async def latency_rounds(paths: dict[str, tuple[aiohttp.ClientSession, str, dict[str, int]]],
                         n: int, rounds: int) -> dict[str, dict]:
    """Concurrency-1 latency of each path in alternating rounds (direct, gateway, direct, ...), so
    that a slow spell of a shared machine falls on both; CPU time of each path's processes."""
    lat: dict[str, list[float]] = {name: [] for name in paths}
    p50s: dict[str, list[float]] = {name: [] for name in paths}
    cpu = {name: dict.fromkeys(pids, 0.0) for name, (_, _, pids) in paths.items()}
    for _ in range(rounds):
        for name, (session, url, pids) in paths.items():
            before = {k: cpu_seconds(p) for k, p in pids.items()}
            got, _ = await run_load(session, url, n // rounds, 1)
            for k, p in pids.items():
                cpu[name][k] += cpu_seconds(p) - before[k]
            lat[name] += got
            p50s[name].append(pct(got, 0.5))
    return {name: {"name": name, "p50": pct(lat[name], 0.5), "p99": pct(lat[name], 0.99),
                   "round_p50s": p50s[name],
                   "cpu": {k: v / (n // rounds * rounds) for k, v in cpu[name].items()}}
            for name in paths}


async def main_async(args) -> None:
    home = Path(tempfile.mkdtemp(prefix="trestle-bench-"))
    server = start_server(home, "--no-auth", "--no-builtin")
    sock = Path(tempfile.mkdtemp(prefix="tb-")) / "direct.sock"
    direct = subprocess.Popen(
        [sys.executable, "-m", "trestle.runtime", "--model-dir", str(EXAMPLES / "hello"),
         "--socket", str(sock)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    relay_port, bare_port = free_port(), free_port()
    relay = subprocess.Popen([sys.executable, __file__, "--serve-relay", str(relay_port),
                              str(sock)])
    bare = subprocess.Popen([sys.executable, __file__, "--serve-bare-proxy", str(bare_port),
                             str(sock)])
    try:
        push = server.push(EXAMPLES / "hello")
        worker_pid = worker_process(server.proc.pid)
        url = f"{server.url}/model/{push['model']['id']}/production/predict"
        transport = httpx.HTTPTransport(uds=str(sock))
        for _ in range(300):
            try:
                if httpx.Client(transport=transport).get("http://w/health").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        wait_for_port(relay_port)
        wait_for_port(bare_port)
        async with aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=str(sock), limit=0)) as ds, \
                aiohttp.ClientSession(connector=tcp()) as gs, \
                aiohttp.ClientSession(connector=tcp()) as rs, \
                aiohttp.ClientSession(connector=tcp()) as bs:
            paths = {"direct": (ds, "http://worker/predict", {"worker": direct.pid}),
                     "relay": (rs, f"http://127.0.0.1:{relay_port}/predict",
                               {"relay": relay.pid, "worker": direct.pid}),
                     "bare": (bs, f"http://127.0.0.1:{bare_port}/predict",
                              {"bare": bare.pid, "worker": direct.pid}),
                     "gateway": (gs, url, {"gateway": server.proc.pid, "worker": worker_pid})}
            for session, target, _ in paths.values():
                await run_load(session, target, 200, 4)  # warm-up: connections, caches
            results = await latency_rounds(paths, args.requests, args.rounds)
            for name in ("direct", "gateway"):
                session, target, _ = paths[name]
                _, results[name]["rps16"] = await run_load(session, target, args.requests, 16)
    finally:
        relay.terminate()
        bare.terminate()
        direct.terminate()
        server.stop()

    d, r, b, g = results["direct"], results["relay"], results["bare"], results["gateway"]
    print(f"{'path':<10}{'p50 ms':>10}{'p99 ms':>10}{'req/s @16':>12}")
    for row in (d, r, b, g):
        rps = f"{row['rps16']:>12.0f}" if "rps16" in row else f"{'-':>12}"
        print(f"{row['name']:<10}{row['p50']*1e3:>10.3f}{row['p99']*1e3:>10.3f}{rps}")
    per_round = added_per_round(g, d)
    added50 = statistics.median(per_round)
    floor = statistics.median(added_per_round(r, d))
    stack = statistics.median(added_per_round(b, d))
    added99 = (g["p99"] - d["p99"]) * 1e3
    ratio = g["rps16"] / d["rps16"]
    print(f"added p50 at concurrency 1: {added50:.3f} ms   (target <= 0.300 ms) "
          f"{'MET' if added50 <= 0.3 else 'MISSED'}   (median of {len(per_round)} alternating rounds; "
          f"rounds ranged {per_round[0]:.3f} to {per_round[-1]:.3f} ms)")
    print(f"added p99 at concurrency 1: {added99:.3f} ms   (no target; reported)")
    print(f"floors, added p50 of: a byte relay {floor:.3f} ms; a bare uvicorn + http1 proxy "
          f"{stack:.3f} ms; the gateway's features above the bare proxy: {added50 - stack:.3f} ms"
          "   (no target; reported)")
    print(f"throughput at concurrency 16, gateway/direct: {ratio:.2f}x   (target >= 0.50x) "
          f"{'MET' if ratio >= 0.5 else 'MISSED'}")
    cpu = {name: {k: v * 1e3 for k, v in row["cpu"].items()} for name, row in results.items()}
    print(f"CPU per request at concurrency 1: gateway {cpu['gateway']['gateway']:.3f} ms, "
          f"its worker {cpu['gateway']['worker']:.3f} ms, "
          f"direct worker {cpu['direct']['worker']:.3f} ms (behind the relay "
          f"{cpu['relay']['worker']:.3f} ms, behind the bare proxy {cpu['bare']['worker']:.3f} ms; "
          f"the relay {cpu['relay']['relay']:.3f} ms, the bare proxy {cpu['bare']['bare']:.3f} ms)"
          "   (no target; compares gateway versions on a loaded machine)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=4000)
    parser.add_argument("--rounds", type=int, default=8, help="alternating latency rounds (default 8)")
    parser.add_argument("--serve-relay", nargs=2, metavar=("PORT", "SOCKET"),
                        help=argparse.SUPPRESS)
    parser.add_argument("--serve-bare-proxy", nargs=2, metavar=("PORT", "SOCKET"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_relay:  # the byte relay's own process, started by the bench
        uvloop.run(serve_relay(int(args.serve_relay[0]), args.serve_relay[1]))
    elif args.serve_bare_proxy:  # the bare proxy's own process, started by the bench
        serve_bare_proxy(int(args.serve_bare_proxy[0]), args.serve_bare_proxy[1])
    else:
        asyncio.run(main_async(args))


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
