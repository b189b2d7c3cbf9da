"""Run folders left by a process that is gone (a gateway's `/tmp/trestle-*`, a Ray replica's
`/tmp/trestle-ray-*` on its node) are removed by the next one; a live owner's, and a folder
without an owner's pid, are left alone."""

from __future__ import annotations

import os
import subprocess
import sys

from trestle.deploy import stale


def test_only_the_folders_of_owners_that_are_gone_are_removed(tmp_path):
    ended = subprocess.Popen([sys.executable, "-c", "pass"])
    ended.wait()
    dead, alive, unowned, other = (tmp_path / f"trestle-x-{n}" for n in ("dead", "alive", "unowned", "other"))
    for folder in (dead, alive, unowned, other):
        (folder / "src").mkdir(parents=True)
    (dead / "owner.pid").write_text(f"{ended.pid}\n")
    (alive / "owner.pid").write_text(f"{os.getpid()}\n")
    (other / "someone-else.pid").write_text(f"{ended.pid}\n")
    removed = stale.remove_dead_run_dirs("trestle-x-", "owner.pid", tmp_path)
    assert removed == [dead] and not dead.exists()
    assert alive.exists() and unowned.exists() and other.exists()
