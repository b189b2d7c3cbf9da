"""Work per request in the gateway process: Python function calls per `/model/.../predict` call.

Run:  .venv/bin/python bench/gateway_calls.py [--requests 300]

The gateway app runs in this process (a real worker process behind it) and is called through
httpx's ASGI transport under cProfile; the same client against a trivial ASGI app is the anchor,
and its calls are subtracted. Unlike latency, the figure does not move when other work shares the
machine, so it compares two versions of the gateway on a loaded machine (no target: it must not
grow). A coroutine resumed after it waited counts as a call, so an extra frame on the path shows.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
import sys
import tempfile
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from support import EXAMPLES  # noqa: E402

from trestle.deploy.build.package import pack  # noqa: E402
from trestle.gateway.app import GatewayApp  # noqa: E402
from trestle.settings import Settings  # noqa: E402


async def trivial(scope, receive, send) -> None:
    await receive()
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"{}"})


async def calls(app, url: str, n: int) -> float:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://gw") as c:
        for _ in range(200):  # warm-up
            await c.post(url, json={"name": "x"})
        prof = cProfile.Profile()
        prof.enable()
        for _ in range(n):
            await c.post(url, json={"name": "x"})
        prof.disable()
    return pstats.Stats(prof).total_calls / n


async def main_async(n: int) -> None:
    settings = Settings(home=Path(tempfile.mkdtemp(prefix="trestle-bench-")), auth=False,
                        builtin_models=False)
    app = GatewayApp(settings)
    inbox: asyncio.Queue = asyncio.Queue()
    outbox: asyncio.Queue = asyncio.Queue()
    lifespan = asyncio.create_task(app({"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}},
                                       inbox.get, outbox.put))
    await inbox.put({"type": "lifespan.startup"})
    assert (await outbox.get())["type"] == "lifespan.startup.complete"
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://gw") as c:
            push = (await c.post("/api/v1/push", content=pack(EXAMPLES / "hello"))).json()
            dep = push["deployment"]["id"]
            while (await c.get(f"/api/v1/deployments/{dep}")).json()["status"] != "active":
                await asyncio.sleep(0.2)
        url = f"/model/{push['model']['id']}/production/predict"
        total = await calls(app, url, n)
        anchor = await calls(trivial, url, n)
    finally:
        await inbox.put({"type": "lifespan.shutdown"})
        await outbox.get()
        await lifespan
    print(f"Python calls per request: gateway {total - anchor:.1f}   "
          f"(client and gateway {total:.1f}, client alone {anchor:.1f}; no target: must not grow)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=300)
    asyncio.run(main_async(parser.parse_args().requests))


if __name__ == "__main__":
    main()
