"""What a local worker process can see: a scrubbed environment and a bubblewrap sandbox.

A worker runs the pushed code of whoever holds an admin key, so it gets only what it needs:

- **Environment**: `PATH`, `LANG`, `PYTHONUNBUFFERED`, `TRESTLE_PARENT_PID` and `HOME` (the
  deployment's own `home/` folder). Nothing of the gateway's (`TRESTLE_HOME`, database URL, keys,
  ...). The config's `environment_variables` are set by the worker itself
  (`trestle.runtime.truss.loader`).
- **Files** (when bubblewrap, `/usr/bin/bwrap`, works): a fresh mount namespace holding `/usr` and
  the `/lib*` links, a few files of `/etc`, `/sys` read-only, a new `/proc` (own PID namespace: the
  gateway's processes are invisible), a minimal `/dev`, a private `/tmp`, the Python install and
  the gateway's import path read-only, the deployment's folder read-only, its `home/` and its
  replica's socket folder writable. The store, `admin_key`, `secrets.key`, the other deployments'
  folders and the other sockets are not in it. The network is shared (models may call out).
- **User**: when trestle runs as root, each worker drops to a uid/gid of its own, derived from the
  deployment id (`worker_uid`, 200000-299999, mapped to no user), with no capabilities and
  `no_new_privs`, so even a file bound into the sandbox by mistake is read under that uid.

`TRESTLE_SANDBOX=off` turns the sandbox off (the environment is still scrubbed); so does a machine
without a working bubblewrap. `trestle serve` says which at start (`describe`).
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from functools import cache
from pathlib import Path

log = logging.getLogger("trestle.deploy")

ENV = "TRESTLE_SANDBOX"
BWRAP = "bwrap"
UID_BASE = 200_000
UID_SPAN = 100_000
# /etc files a Python program commonly needs (name resolution, TLS roots, time zone, libc).
ETC_FILES = (
    "passwd", "group", "hosts", "host.conf", "nsswitch.conf", "resolv.conf", "gai.conf",
    "localtime", "ld.so.cache", "ld.so.conf", "ld.so.conf.d", "ssl", "ca-certificates",
    "mime.types", "os-release", "protocols", "services",
)


@dataclass(frozen=True)
class Sandbox:
    bwrap: str | None  # the bubblewrap binary, or None when workers run unsandboxed
    reason: str  # why it is off (empty when on)

    @property
    def enabled(self) -> bool:
        return self.bwrap is not None

    def describe(self) -> str:
        if self.enabled:
            who = "each as a user of its own" if os.geteuid() == 0 else "as this user"
            return f"workers run sandboxed with bubblewrap ({self.bwrap}), {who}"
        return (f"workers run WITHOUT a sandbox ({self.reason}): a model can read every file this "
                f"user can, including the store and the admin key (see docs/security.md)")


@cache
def detect() -> Sandbox:
    """The sandbox this machine offers: bubblewrap if it is installed, allowed and works."""
    if os.environ.get(ENV, "").strip().lower() in ("off", "0", "false", "no"):
        return Sandbox(None, f"{ENV}=off")
    bwrap = shutil.which(BWRAP) or ("/usr/bin/bwrap" if os.access("/usr/bin/bwrap", os.X_OK) else None)
    if bwrap is None:
        return Sandbox(None, "bubblewrap (bwrap) is not installed")
    if drops_privileges() and shutil.which("setpriv") is None:
        return Sandbox(None, "setpriv (util-linux), needed to run workers as their own user, is not installed")
    probe = [bwrap, "--unshare-pid", "--die-with-parent", "--ro-bind", "/", "/", "--proc", "/proc",
             "--dev", "/dev", "true"]
    try:
        done = subprocess.run(probe, capture_output=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return Sandbox(None, f"bubblewrap does not run here: {type(exc).__name__}")
    if done.returncode != 0:
        err = done.stderr.decode(errors="replace").strip().splitlines()[-1:] or ["no reason given"]
        return Sandbox(None, f"bubblewrap does not work here: {err[0]}")
    return Sandbox(bwrap, "")


def worker_uid(deployment_id: str) -> int:
    """The uid (and gid) a deployment's workers run as when trestle runs as root."""
    digest = hashlib.sha256(deployment_id.encode()).digest()
    return UID_BASE + int.from_bytes(digest[:4], "big") % UID_SPAN


def drops_privileges() -> bool:
    return os.geteuid() == 0


def worker_env(home: Path, parent_pid: str) -> dict[str, str]:
    """The whole environment of a worker: nothing of the gateway's beyond these."""
    env = {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": str(home),
        "LANG": os.environ.get("LANG") or "C.UTF-8",
        "PYTHONUNBUFFERED": "1",
        "TRESTLE_PARENT_PID": parent_pid,
    }
    return env


def python_paths() -> list[Path]:
    """What the worker's interpreter imports from: the Python install, the gateway's virtualenv
    and every folder on its import path (trestle itself, its dependencies)."""
    paths = [sys.base_prefix, sys.prefix, sys.exec_prefix, os.path.realpath(sys.executable)]
    paths += [p for p in sys.path if p and os.path.isabs(p)]
    out: list[Path] = []
    for p in dict.fromkeys(paths):
        path = Path(p)
        if path.is_file():
            path = path.parent
        if path.is_dir():
            out.append(path)
    return out


def _contains(outer: Path, inner: Path) -> bool:
    try:
        inner.resolve().relative_to(outer.resolve())
    except ValueError:
        return False
    return True


def command(sandbox: Sandbox, args: list[str], *, deployment_id: str, folder: Path,
            home: Path, writable: Path | list[Path], readable: list[Path] = (),
            cwd: Path | None = None) -> list[str]:
    """`args` (the worker's command line) wrapped in bubblewrap, or as is when it is off.

    `folder` (the deployment's folder) and `readable` (its virtualenv) are mounted read-only,
    `home` and `writable` (the replica's socket folder; the folder and virtualenv while build
    commands run) read-write, all at their own paths. It starts in `cwd` (default: `home`).
    """
    if not sandbox.enabled:
        return args
    store_home = folder.parent.parent  # TRESTLE_HOME/deployments/{id}
    cmd = [sandbox.bwrap, "--die-with-parent", "--unshare-pid", "--unshare-ipc", "--unshare-uts",
           "--unshare-cgroup-try", "--ro-bind", "/usr", "/usr"]
    for name in ("bin", "sbin", "lib", "lib32", "lib64", "libx32"):
        top = Path("/") / name
        if top.is_symlink():
            cmd += ["--symlink", os.readlink(top), str(top)]
        elif top.is_dir():
            cmd += ["--ro-bind", str(top), str(top)]
    for name in ETC_FILES:
        cmd += ["--ro-bind-try", f"/etc/{name}", f"/etc/{name}"]
    cmd += ["--ro-bind-try", "/sys", "/sys", "--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp"]
    mounts: list[tuple[str, Path]] = []
    for path in python_paths():
        # Never a folder that holds the store or another deployment (a virtualenv inside
        # TRESTLE_HOME's parent, say): the deployment's own folder is mounted below.
        if _contains(path, store_home) or _contains(path, folder):
            log.warning("not mounting %s into the sandbox: it contains trestle's data", path)
            continue
        mounts.append(("--ro-bind", path))
    mounts += [("--ro-bind", folder)]
    mounts += [("--ro-bind", path) for path in readable if not _contains(folder, path)]
    writable = [writable] if isinstance(writable, Path) else writable
    mounts += [("--bind", home)] + [("--bind", path) for path in writable]
    # The folders leading to the mounts exist in the sandbox, traversable by the worker's user
    # (bubblewrap would copy their modes: /root is 0700).
    made: set[Path] = set()
    for _, path in mounts:
        for parent in reversed(path.parents):
            if parent in made or parent == Path("/") or parent.parts[1] in ("usr", "sys", "proc", "dev"):
                continue
            made.add(parent)
            cmd += ["--perms", "0755", "--dir", str(parent)]
    for how, path in mounts:
        cmd += [how, str(path), str(path)]
    cmd += ["--chdir", str(cwd or home)]
    if drops_privileges():
        uid = str(worker_uid(deployment_id))
        cmd += ["--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID", "--",
                "setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--no-new-privs",
                "--inh-caps=-all", "--bounding-set=-all"]
    return [*cmd, "--", *args]


def give(path: Path, deployment_id: str) -> None:
    """Make `path` the worker's own (when it runs as a user of its own)."""
    if detect().enabled and drops_privileges():
        uid = worker_uid(deployment_id)
        os.chown(path, uid, uid)


def give_tree(path: Path, deployment_id: str) -> None:
    """`give` for `path` and everything under it (a folder the build commands may write)."""
    if not (detect().enabled and drops_privileges()):
        return
    uid = worker_uid(deployment_id)
    os.lchown(path, uid, uid)
    for root, dirs, files in os.walk(path):
        for name in dirs + files:
            os.lchown(os.path.join(root, name), uid, uid)


def share(path: Path) -> None:
    """Let the worker's user read `path` (a folder the gateway made private: the upload)."""
    if detect().enabled and drops_privileges():
        path.chmod(0o755)


def signal_target(pid: int) -> int:
    """The process to signal to stop a worker gracefully: the worker itself inside bubblewrap
    (bubblewrap does not pass signals on; stopping it kills the worker at once), else `pid`."""
    if not detect().enabled:
        return pid
    target = pid
    for _ in range(2):  # bwrap -> bwrap (pid 1 of the sandbox) -> python (setpriv exec's into it)
        try:
            children = Path(f"/proc/{target}/task/{target}/children").read_text().split()
        except OSError:
            break
        if not children:
            break
        target = int(children[0])
    return target
