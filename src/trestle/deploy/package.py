"""A model folder on the wire: a gzip tar made by `trestle push`, unpacked safely by the gateway."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

from trestle.errors import BadRequest

EXCLUDED = {"__pycache__", ".git", ".venv", ".mypy_cache", ".pytest_cache"}
MAX_UPLOAD_BYTES = 2 * 1024**3


def pack(folder: Path) -> bytes:
    """The folder as a gzip tar, without caches and VCS folders."""
    folder = Path(folder)
    buf = io.BytesIO()

    def keep(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
        return None if EXCLUDED & set(Path(info.name).parts) else info

    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for child in sorted(folder.iterdir()):
            tar.add(child, arcname=child.name, filter=keep)
    return buf.getvalue()


def unpack(data: bytes, dest: Path) -> None:
    """Unpack a pushed folder into `dest`, refusing paths that escape it (tarfile 'data' filter)."""
    dest.mkdir(parents=True, exist_ok=True)
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
            tar.extractall(dest, filter="data")
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise BadRequest(f"the upload is not a valid gzip tar of a model folder: {exc}") from None
