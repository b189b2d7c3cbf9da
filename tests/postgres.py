"""A throwaway PostgreSQL cluster on a Unix socket, for the store's and the datastores' tests.

    with throwaway_cluster(pgvector=False) as cluster:   # pytest.skip, saying why, where
        url = cluster.new_database()                      # PostgreSQL, asyncpg or pgvector is missing
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from trestle.store.ids import random_token


def postgres_bin() -> Path | None:
    found = shutil.which("pg_ctl") or next(
        iter(sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), reverse=True)), None
    )
    return Path(os.path.realpath(found)).parent if found else None


def pgvector_installed(bin_dir: Path) -> bool:
    pg_config = bin_dir / "pg_config"
    if not pg_config.exists():
        return False
    share = subprocess.run([str(pg_config), "--sharedir"], capture_output=True, text=True).stdout
    return (Path(share.strip()) / "extension" / "vector.control").is_file()


class PostgresCluster:
    def __init__(self, bin_dir: Path, root: Path):
        self.bin_dir, self.root = bin_dir, root
        self.data, self.socket_dir = root / "data", root
        # initdb and postgres refuse to run as root.
        self.as_owner = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []

    def _run(self, program: str, *args: str, as_owner: bool = False) -> None:
        cmd = [*(self.as_owner if as_owner else []), str(self.bin_dir / program), *args]
        subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=120)

    def start(self) -> None:
        if self.as_owner:
            shutil.chown(self.root, user="postgres")
        self._run("initdb", "-D", str(self.data), "--auth=trust", "-U", "postgres", "-E", "UTF8",
                  as_owner=True)
        options = (
            f"-c listen_addresses='' -c unix_socket_directories={self.socket_dir} -c fsync=off"
        )
        self._run("pg_ctl", "-D", str(self.data), "-o", options, "-l", str(self.root / "log"),
                  "-w", "start", as_owner=True)

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "stop", as_owner=True)

    def start_standby(self) -> PostgresCluster:
        """A hot standby of this cluster (read-only, as a replica or a failed-over pooler target
        would be: it refuses writes and LISTEN), on a socket of its own; stop it with `stop()`
        and remove its `root`. The databases of this cluster are there under the same names."""
        root = Path(tempfile.mkdtemp(prefix="trestle-pg-standby-"))
        standby = PostgresCluster(self.bin_dir, root)
        if self.as_owner:
            shutil.chown(root, user="postgres")
        standby._run("pg_basebackup", "-h", str(self.socket_dir), "-U", "postgres", "-D",
                     str(standby.data), "-R", "-X", "stream", "--checkpoint=fast", as_owner=True)
        options = f"-c listen_addresses='' -c unix_socket_directories={root} -c fsync=off"
        standby._run("pg_ctl", "-D", str(standby.data), "-o", options, "-l", str(root / "log"),
                     "-w", "start", as_owner=True)
        return standby

    def url(self, database: str) -> str:
        return f"postgresql+asyncpg://postgres@/{database}?host={self.socket_dir}"

    def new_database(self) -> str:
        name = "t" + random_token(12)
        self._run("createdb", "-h", str(self.socket_dir), "-U", "postgres", name)
        return f"postgresql+asyncpg://postgres@/{name}?host={self.socket_dir}"


@contextlib.contextmanager
def throwaway_cluster(*, pgvector: bool = False) -> Iterator[PostgresCluster]:
    """A started cluster, removed afterwards; skips the test where a part is missing."""
    bin_dir = postgres_bin()
    if bin_dir is None:
        pytest.skip("PostgreSQL is not installed (no pg_ctl); the SQLite runs still ran")
    pytest.importorskip("asyncpg", reason="asyncpg is not installed (pip install -e '.[test]')")
    if pgvector and not pgvector_installed(bin_dir):
        pytest.skip("pgvector is not installed (scripts/install-pgvector); the SQLite runs still ran")
    root = Path(tempfile.mkdtemp(prefix="trestle-pg-"))
    cluster = PostgresCluster(bin_dir, root)
    try:
        cluster.start()
        yield cluster
        cluster.stop()
    finally:
        shutil.rmtree(root, ignore_errors=True)
