"""docs/store.md: its Python example runs as written."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

DOC = Path(__file__).resolve().parents[2] / "docs" / "store.md"


def test_python_example_runs():
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)
    assert len(blocks) == 1
    done = subprocess.run(
        [sys.executable, "-c", blocks[0]], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert re.fullmatch(r"m[a-z0-9]{8} d[a-z0-9]{8} [a-z0-9]{8} \['HF_TOKEN'\]\n", done.stdout)


def test_documented_methods_exist():
    from trestle.store import Store

    documented = set(re.findall(r"^\| `(\w+)\(", DOC.read_text(), flags=re.M))
    documented |= set(re.findall(r"^\| `(\w+)` \(property\)", DOC.read_text(), flags=re.M))
    documented |= {"get_model_by_name"}  # shares a row with get_model
    public = {n for n in vars(Store) if not n.startswith("_") and n not in {"open", "close"}}
    assert documented == public
