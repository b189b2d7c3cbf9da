"""The user docs: linked from the README, about trestle only, and their config examples load."""

from __future__ import annotations

import re

import yaml

from support import ROOT
from trestle.deploy.config import ModelConfig

USER_DOCS = ["getting-started.md", "own-llm.md"]


def test_user_docs_are_linked_from_the_readme():
    readme = (ROOT / "README.md").read_text()
    for name in USER_DOCS:
        assert f"docs/{name}" in readme


def test_no_doc_mentions_internal_material():
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    for page in pages:
        text = page.read_text()
        # `seed` the sampling field is fine; the design's seed specs, notes and issues are not
        found = re.search(r"seeds/|seed specs?|seed's|seed ?\d{3}|-NOTES|/work/shared|\bissues?\b", text, re.I)
        assert not found, (page.name, found and found.group())


def test_config_examples_in_user_docs_are_valid_configs():
    seen = 0
    for name in USER_DOCS:
        for block in re.findall(r"```yaml\n(.*?)```", (ROOT / "docs" / name).read_text(), re.S):
            config = ModelConfig.from_dict(yaml.safe_load(block))
            assert config.engine is not None and config.model_name
            seen += 1
    assert seen == 2
