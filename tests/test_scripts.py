"""scripts/install (run by scripts/serve and scripts/test) installs once and skips pip while
pyproject.toml and the extras are unchanged. pip itself is stood in for by a recorder: the real
install takes minutes and needs the network."""

from __future__ import annotations

import shutil
import subprocess

from support import ROOT


def test_install_runs_pip_only_when_pyproject_or_extras_change(tmp_path):
    (tmp_path / "scripts").mkdir()
    shutil.copy(ROOT / "scripts" / "install", tmp_path / "scripts" / "install")
    (tmp_path / "tests").mkdir()
    for name in ("requirements-instructor.txt", "requirements-litellm.txt"):
        shutil.copy(ROOT / "tests" / name, tmp_path / "tests")
    (tmp_path / "pyproject.toml").write_text("[project]\nname = 'x'\n")
    bindir = tmp_path / ".venv" / "bin"
    bindir.mkdir(parents=True)
    calls = tmp_path / "calls"
    (bindir / "python").write_text(f'#!/bin/sh\necho "$@" >> {calls}\n')
    (bindir / "python").chmod(0o755)

    def install(*extras: str) -> list[str]:
        calls.write_text("")
        subprocess.run([str(tmp_path / "scripts" / "install"), *extras], check=True, timeout=60)
        return calls.read_text().splitlines()

    first = install("test")
    # pip, trestle with the test extras, then instructor's and LiteLLM's requirements and both
    # without deps
    assert len(first) == 4 and first[1].endswith("-e .[test]") and "-q" in first[1]
    assert first[2].endswith("-r tests/requirements-instructor.txt -r tests/requirements-litellm.txt")
    assert "--no-deps" in first[3] and first[3].endswith("instructor==1.17.0 litellm==1.108.0")
    assert install("test") == []  # nothing changed: no pip at all
    assert install()[-1].endswith("-e .")  # other extras
    (tmp_path / "pyproject.toml").write_text("[project]\nname = 'x'\nversion = '2'\n")
    assert len(install()) == 2
