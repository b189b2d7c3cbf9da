"""Virtualenvs for deployments with requirements, built once per set of requirements.

A venv is keyed by `venv_key`: the digest of the requirements (`trestle.deploy.build.requirements`:
the list and the text of the requirements file and its includes), the Python version and the
layout of the venv itself. It lives in the cache folder under that key, so a second push with the
same requirements starts at once, and two deployments whose pins conflict each get their own. A
deployment whose requirements name a local path gets a venv of its own in its folder instead.

Building: `python -m venv --without-pip`, then one `pip install` run with the gateway's pip
(`pip --python VENV`), its output appended to the deployment log. A file lock per key lets one
build run while others with the same key wait and then reuse it; a venv counts as built only
once its `READY_MARKER` is written, so a build that failed or was killed half way is redone.
A failed install raises `BuildError` with pip's error lines (server paths replaced).

Isolation: the venv does not see the gateway's site-packages. It holds trestle itself (a link to
the gateway's `trestle` package) and `RUNTIME_REQUIREMENTS`, what a model worker imports, with
loose bounds, installed in the same `pip install` as the deployment's requirements, so pip
resolves them together and the user's pins win: a model that pins `pydantic<2` gets pydantic 1,
and the worker copes with it (`trestle.pydantic_compat`). A deployment without requirements runs
on the gateway's own interpreter and packages.
"""

from __future__ import annotations

import asyncio
import collections
import fcntl
import hashlib
import os
import platform
import shutil
import sys
import sysconfig
import time
from contextlib import asynccontextmanager
from pathlib import Path

from trestle.deploy.build.requirements import Requirements
from trestle.errors import TrestleError

READY_MARKER = ".trestle-ready"
LAYOUT = "2"  # bump when what a venv holds besides the requirements changes
ERROR_LINES = 20
# What `python -m trestle.runtime` imports for a model folder (and fastapi, which Truss models
# import without listing it), with the oldest versions it works with. docs/deployments.md lists
# them for users.
RUNTIME_REQUIREMENTS = (
    "pydantic>=1.10",
    "starlette>=0.27",
    "uvicorn>=0.23",
    "uvloop>=0.17",
    "httptools>=0.5",
    "pyyaml>=6",
    "fastapi>=0.100",
    "msgpack>=1.0",
    "httpx>=0.24",  # a docker_server worker's proxy
)


class BuildError(TrestleError):
    pass


def venv_key(reqs: Requirements) -> str:
    """The cache key of the venv for `reqs` on this interpreter."""
    h = hashlib.sha256()
    for part in (LAYOUT, *RUNTIME_REQUIREMENTS, sys.implementation.name, platform.python_version(),
                 platform.machine(), reqs.digest):
        h.update(part.encode() + b"\0")
    return h.hexdigest()[:32]


def venv_python(venv: Path) -> Path:
    return venv / "bin" / "python"


@asynccontextmanager
async def _locked(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        await asyncio.to_thread(fcntl.flock, fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


async def _run(what: str, args: list[str], log_file: Path, *, cwd: Path | None = None,
               hide: dict[str, str] | None = None) -> None:
    """Run `args`, its output appended to `log_file`; `BuildError` with its last error lines."""
    tail: collections.deque[str] = collections.deque(maxlen=200)
    with open(log_file, "ab") as out:
        proc = await asyncio.create_subprocess_exec(
            *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
            stdin=asyncio.subprocess.DEVNULL, cwd=cwd)
        assert proc.stdout is not None
        while line := await proc.stdout.readline():
            out.write(line)
            out.flush()
            tail.append(line.decode(errors="replace").rstrip())
        code = await proc.wait()
    if code == 0:
        return
    errors = [line for line in tail if line.startswith("ERROR")] or list(tail)
    message = "\n".join(errors[-ERROR_LINES:])
    for path, shown in (hide or {}).items():
        message = message.replace(path, shown)
    raise BuildError(f"{what} failed with exit code {code}:\n{message}")


async def build_venv(cache: Path, reqs: Requirements, folder: Path, log_file: Path, *,
                     own: Path) -> Path:
    """The venv with `reqs` installed (built now, or found in `cache`); `folder` is the model
    folder pip runs in, `own` where the venv goes when it cannot be shared."""
    key = venv_key(reqs)
    venv = cache / key if reqs.shareable else own
    async with _locked(cache / f"{key}.lock" if reqs.shareable else own.parent / ".venv.lock"):
        if (venv / READY_MARKER).exists():
            log_line(log_file, f"reusing the virtualenv built for these requirements ({key[:12]})")
            return venv
        shutil.rmtree(venv, ignore_errors=True)  # a build that did not finish
        log_line(log_file, f"installing requirements into a new virtualenv ({key[:12]})")
        hide = {str(venv): "<venv>", str(folder): "."}
        try:
            await _run("creating the virtualenv", [sys.executable, "-m", "venv", "--without-pip", str(venv)], log_file)
            _link_trestle(venv)
            await _run("pip install", [sys.executable, "-m", "pip", "--python", str(venv_python(venv)), "install",
                        "--disable-pip-version-check", "--no-input", "--progress-bar", "off",
                        *RUNTIME_REQUIREMENTS, *reqs.pip_args(folder)], log_file, cwd=folder, hide=hide)
        except BaseException:
            shutil.rmtree(venv, ignore_errors=True)
            raise
        (venv / READY_MARKER).write_text(key + "\n")
        return venv


def _link_trestle(venv: Path) -> None:
    """Make the gateway's `trestle` package importable in the venv, and nothing else of its."""
    import trestle

    purelib = Path(sysconfig.get_path("purelib", vars={"base": str(venv), "platbase": str(venv)}))
    purelib.mkdir(parents=True, exist_ok=True)
    (purelib / "trestle").symlink_to(Path(trestle.__file__).resolve().parent,
                                     target_is_directory=True)


def log_line(log_file: Path, message: str) -> None:
    """A line of trestle's own in the deployment log."""
    with open(log_file, "a") as f:
        f.write(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} [trestle] {message}\n")
