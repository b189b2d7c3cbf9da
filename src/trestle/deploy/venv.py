"""A virtualenv for a deployment whose config.yaml lists `requirements`.

The venv sees the gateway's own packages (trestle and its dependencies) through a `.pth` file, so
only the deployment's extra requirements are installed into it; they take precedence.
"""

from __future__ import annotations

import asyncio
import site
import sys
import sysconfig
from pathlib import Path

from trestle.errors import TrestleError


class BuildError(TrestleError):
    pass


async def _run(args: list[str], log_file: Path) -> None:
    with open(log_file, "ab") as out:
        proc = await asyncio.create_subprocess_exec(*args, stdout=out, stderr=out)
        code = await proc.wait()
    if code != 0:
        raise BuildError(f"`{' '.join(args[-3:])}` failed with exit code {code}; see the deployment log")


async def build_venv(venv: Path, requirements: list[str], log_file: Path) -> str:
    """Create `venv` with `requirements` installed; return its python."""
    python = venv / "bin" / "python"
    if not python.exists():
        await _run([sys.executable, "-m", "venv", str(venv)], log_file)
        purelib = Path(
            sysconfig.get_path("purelib", vars={"base": str(venv), "platbase": str(venv)})
        )
        parent_paths = [p for p in sys.path if p and Path(p).is_dir()] + site.getsitepackages()
        (purelib / "_trestle_parent.pth").write_text("\n".join(dict.fromkeys(parent_paths)) + "\n")
    await _run([str(python), "-m", "pip", "install", "--disable-pip-version-check", *requirements],
               log_file)
    return str(python)
