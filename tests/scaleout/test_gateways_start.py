"""Two `trestle serve` gateways started at the same moment on one empty PostgreSQL database:
one of them migrates it and makes the first admin key and the built-in Model API, the other
finds them; both end up serving the same record (docs/multiple-gateways.md)."""

from __future__ import annotations

import asyncio
import shutil

import httpx
import pytest

from postgres import throwaway_cluster
from scaleout.gateway_support import start_servers_together
from support import SLUG, wait_for
from trestle.store.migrate import PG_MIGRATION_LOCK

pytestmark = pytest.mark.cluster


class HeldMigrations:
    """Holds the migrations' advisory lock, so that gateways starting on the database line up
    behind it; `release()` once they all wait: they then go on together, whichever started
    (or imported its modules) first."""

    def __init__(self, url: str):
        import asyncpg

        self.runner = asyncio.Runner()
        self.conn = self.runner.run(asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://")))
        self.runner.run(self.conn.execute(f"SELECT pg_advisory_lock({PG_MIGRATION_LOCK})"))

    def waiting(self) -> int:
        return self.runner.run(self.conn.fetchval(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"))

    def release(self) -> None:
        if self.conn is not None:
            self.runner.run(self.conn.close())
            self.conn = None
            self.runner.close()


def test_two_gateways_started_together_on_an_empty_database_agree(tmp_path):
    with throwaway_cluster() as cluster:
        url = cluster.new_database()
        env = {"TRESTLE_DATABASE_URL": url, "TRESTLE_SYNC_POLL_S": "600"}
        held = HeldMigrations(url)

        def line_up(servers) -> None:
            wait_for(lambda: held.waiting() == len(servers), "both gateways to wait to migrate",
                     deadline_s=300)
            held.release()

        try:
            servers = start_servers_together([tmp_path / "a", tmp_path / "b"],
                                             "--no-builtin-embeddings", env=env, launched=line_up)
        finally:
            held.release()
        try:
            # exactly one of them made the first admin key
            made = [s for s in servers if (s.home / "admin_key").exists()]
            assert len(made) == 1, "both gateways made a first admin key"
            key = made[0].api_key
            headers = {"Authorization": f"Api-Key {key}"}

            def record(server) -> tuple:
                keys = httpx.get(f"{server.url}/api/v1/keys", headers=headers, timeout=60)
                models = httpx.get(f"{server.url}/api/v1/models", headers=headers, timeout=60)
                deployments = httpx.get(f"{server.url}/api/v1/deployments", headers=headers,
                                        timeout=60)
                for res in (keys, models, deployments):
                    assert res.status_code == 200, res.text
                return (sorted(k["id"] for k in keys.json()["keys"]),
                        sorted(m["id"] for m in models.json()["models"]),
                        sorted(d["id"] for d in deployments.json()["deployments"]))

            first, second = (record(s) for s in servers)
            assert first == second
            key_ids, model_ids, deployment_ids = first
            assert len(key_ids) == 1
            # the built-in Model API was deployed once, and both gateways serve it
            assert len(model_ids) == 1 and len(deployment_ids) == 1, first
            for server in servers:
                wait_for(lambda: any(m["id"] == SLUG for m in httpx.get(
                    f"{server.url}/v1/models", headers=headers, timeout=60).json()["data"]),
                    "both gateways to serve the built-in model", deadline_s=300)
            # the other gateway needs a copy of the key file only for the CLI
            other = next(s for s in servers if s is not made[0])
            shutil.copy2(made[0].home / "admin_key", other.home / "admin_key")
            assert other.cli_json("keys", "list")["keys"][0]["id"] == key_ids[0]
        finally:
            for server in servers:
                server.stop()
