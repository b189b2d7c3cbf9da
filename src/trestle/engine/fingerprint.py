"""`system_fingerprint`: which build of the engine answered, with which weights.

    system_fingerprint(Path("model.gguf"), build="llama-cpp-python 0.3.16") -> "fp_3f9c0a1b2c4d"

OpenAI puts `system_fingerprint` on every chat response and chunk so that a client can tell when
the backend changed (results may then differ for the same seed). Here it is a hash of trestle's
version, the engine build string and the weights file, computed once when the model loads. The
weights part reads the file's size and 64 blocks of 64 KiB spread evenly over it (the whole file
when it is smaller than that), so a multi-gigabyte GGUF costs milliseconds, not a full read;
re-quantised or retrained weights change every block it reads.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import trestle

BLOCK = 64 * 1024
BLOCKS = 64


def weights_digest(path: Path) -> str:
    """A hash of the file's size and of BLOCKS evenly spread blocks of BLOCK bytes."""
    h = hashlib.sha256()
    size = path.stat().st_size
    h.update(str(size).encode())
    with open(path, "rb") as f:
        if size <= BLOCK * BLOCKS:
            h.update(f.read())
        else:
            for i in range(BLOCKS):  # the first block starts the file, the last ends it
                f.seek(i * (size - BLOCK) // (BLOCKS - 1))
                h.update(f.read(BLOCK))
    return h.hexdigest()


def system_fingerprint(weights: Path, *, build: str) -> str:
    """`fp_` and 12 hex digits from trestle's version, `build` and the weights file."""
    h = hashlib.sha256(f"trestle {trestle.__version__}\n{build}\n".encode())
    h.update(weights_digest(Path(weights)).encode())
    return "fp_" + h.hexdigest()[:12]
