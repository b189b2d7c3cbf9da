"""docs/model-contract.md shows the examples/ files verbatim, so its snippets are the tested code."""

from __future__ import annotations

import re

from support import EXAMPLES, ROOT

DOC = ROOT / "docs" / "model-contract.md"
SNIPPET = re.compile(r"<!-- example: (\S+) -->\n```(\w+)\n(.*?)```", re.S)


def test_snippets_are_the_example_files():
    snippets = SNIPPET.findall(DOC.read_text())
    assert len(snippets) == DOC.read_text().count("<!-- example:")
    for path, _lang, body in snippets:
        assert body == (ROOT / path).read_text(), f"{path} differs from its copy in {DOC.name}"


def test_every_example_model_is_documented():
    shown = {path for path, _, _ in SNIPPET.findall(DOC.read_text())}
    for folder in sorted(p for p in EXAMPLES.iterdir() if (p / "model" / "model.py").exists()):
        assert f"examples/{folder.name}/model/model.py" in shown, f"{folder.name} is not in {DOC.name}"


def test_python_blocks_are_examples_or_client_calls():
    # A Model class on the page must be one of the tested examples, not free-standing code.
    for block in re.findall(r"(?<!-->\n)```python\n(.*?)```", DOC.read_text(), re.S):
        assert "class Model" not in block, block
