"""Several Store objects, and several processes, on one database (e.g. two gateways)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
import time

import sqlalchemy as sa

from trestle.errors import Conflict
from trestle.store import Store
from trestle.store.engine import make_engine, parse_url
from trestle.store.migrate import head_revision


def test_two_stores_interleave_writes_and_see_each_other(runner, store_url):
    async def go():
        a = await Store.open(store_url)
        b = await Store.open(store_url)
        try:
            models = await asyncio.gather(
                *(s.create_model(f"{t}-{i}") for i in range(15) for t, s in (("a", a), ("b", b)))
            )
            model = models[0]
            deps = await asyncio.gather(
                *(s.create_deployment(model.id, {"i": i}, f"/d{i}")
                  for i, s in enumerate([a, b] * 5))
            )
            # Both promote different deployments to the same environment at once: one wins,
            # and both stores then read the same pointer.
            await asyncio.gather(
                *(s.set_environment(model.id, "production", d.id) for d, s in zip(deps, [a, b] * 5))
            )
            await asyncio.gather(
                *(s.set_secret("TOKEN", f"v{i}") for i, s in enumerate([a, b] * 5))
            )
            keys = await asyncio.gather(a.create_api_key("from a"), b.create_api_key("from b"))
            return (
                models, deps, keys,
                await a.list_models(), await b.list_models(),
                await a.get_environment(model.id, "production"),
                await b.get_environment(model.id, "production"),
                await a.get_secrets(), await b.get_secrets(),
                await a.verify_api_key(keys[1][1]), await b.verify_api_key(keys[0][1]),
                await a.list_deployments(model_id=model.id),
            )
        finally:
            await a.close()
            await b.close()

    (models, deps, keys, seen_a, seen_b, env_a, env_b, secrets_a, secrets_b,
     key_b_via_a, key_a_via_b, listed) = runner.run(go())
    assert len(seen_a) == 30 and sorted(m.name for m in seen_a) == sorted(m.name for m in models)
    assert seen_a == seen_b
    assert env_a == env_b and env_a.deployment_id in {d.id for d in deps}
    assert secrets_a == secrets_b and secrets_a["TOKEN"] in {f"v{i}" for i in range(10)}
    assert key_b_via_a == keys[1][0] and key_a_via_b == keys[0][0]
    assert sorted(d.id for d in listed) == sorted(d.id for d in deps)


def test_same_name_from_two_stores_one_wins(runner, store_url):
    async def go():
        a = await Store.open(store_url)
        b = await Store.open(store_url)
        try:
            results = await asyncio.gather(
                a.create_model("race"), b.create_model("race"), return_exceptions=True
            )
            return results, await a.list_models()
        finally:
            await a.close()
            await b.close()

    results, listed = runner.run(go())
    winners = [r for r in results if not isinstance(r, Exception)]
    losers = [r for r in results if isinstance(r, Exception)]
    assert len(winners) == 1 and len(losers) == 1
    assert isinstance(losers[0], Conflict)
    assert listed == winners


WRITER = textwrap.dedent(
    """
    import asyncio, pathlib, sys, time
    from trestle.store import Store

    async def main(url, tag, gate):
        # Start together: say ready, then wait for the test to open the gate.
        pathlib.Path(f"{gate}.{tag}").touch()
        while not pathlib.Path(gate).exists():
            time.sleep(0.005)
        store = await Store.open(url)
        try:
            for i in range(10):
                model = await store.create_model(f"{tag}-{i}")
                await store.create_deployment(model.id, {"tag": tag}, f"/{tag}/{i}")
            await store.set_secret(f"S_{tag}", tag)
            _, plaintext = await store.create_api_key(tag)
            print(plaintext)
        finally:
            await store.close()

    asyncio.run(main(*sys.argv[1:4]))
    """
)


def alembic_versions(url: str) -> list[str]:
    async def go():
        engine = make_engine(parse_url(url))
        try:
            async with engine.connect() as conn:
                return list(await conn.scalars(sa.text("SELECT version_num FROM alembic_version")))
        finally:
            await engine.dispose()

    return asyncio.run(go())


def test_processes_open_a_fresh_database_at_once(runner, tmp_path, store_url):
    """Three processes migrate a database that has no tables yet (SQLite: no file yet), at the
    same moment, then write."""
    gate = tmp_path / "gate"
    tags = ("p1", "p2", "p3")
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, store_url, tag, str(gate)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for tag in tags
    ]
    while not all((tmp_path / f"gate.{tag}").exists() for tag in tags):
        assert all(p.poll() is None for p in procs), [p.communicate() for p in procs]
        time.sleep(0.01)
    gate.touch()
    outputs = [p.communicate(timeout=120) for p in procs]
    for p, (out, err) in zip(procs, outputs):
        assert p.returncode == 0, err
    plaintexts = [out.strip() for out, _ in outputs]

    assert alembic_versions(store_url) == [head_revision()]

    async def check():
        async with await Store.open(store_url) as store:
            return (
                await store.list_models(),
                await store.list_deployments(),
                await store.get_secrets(),
                [await store.verify_api_key(p) for p in plaintexts],
            )

    models, deployments, secrets, verified = runner.run(check())
    assert sorted(m.name for m in models) == sorted(
        f"{tag}-{i}" for tag in ("p1", "p2", "p3") for i in range(10)
    )
    assert len(deployments) == 30
    assert secrets == {"S_p1": "p1", "S_p2": "p2", "S_p3": "p3"}
    assert [k.name for k in verified] == ["p1", "p2", "p3"]
