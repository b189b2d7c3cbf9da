"""Chunking: size, overlap, and words never split (checked on generated text too)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from trestle.endpoints.retrieval.chunking import ChunkingOptions, chunk_text

WORDS = st.lists(
    st.text(alphabet=st.characters(categories=["L", "N", "P"]), min_size=1, max_size=30),
    min_size=0, max_size=300,
)
SEPARATORS = st.sampled_from([" ", "  ", "\n", "\n\n", "\t", " \n \n "])


def test_chunks_respect_size_and_overlap():
    text = " ".join(f"word{i}" for i in range(200))
    chunks = chunk_text(text, ChunkingOptions(size=100, overlap=30))
    assert len(chunks) > 5
    assert all(len(c) <= 100 for c in chunks)
    for previous, current in zip(chunks, chunks[1:], strict=False):
        shared = set(previous.split()) & set(current.split())
        assert shared, (previous, current)
        assert len(" ".join(w for w in current.split() if w in shared)) <= 30
    assert chunks[0].startswith("word0 ") and chunks[-1].endswith(" word199")


def test_no_overlap_partitions_the_words():
    text = " ".join(f"w{i}" for i in range(100))
    chunks = chunk_text(text, ChunkingOptions(size=60, overlap=0))
    assert " ".join(chunks).split() == text.split()


def test_a_word_longer_than_size_is_its_own_chunk_whole():
    long = "x" * 150
    chunks = chunk_text(f"short words {long} and more", ChunkingOptions(size=60, overlap=10))
    assert long in chunks
    assert "short words" in chunks[0]


def test_paragraph_breaks_are_kept_and_whitespace_runs_collapse():
    chunks = chunk_text("first   para\tgraph\n\n\n\nsecond one\n", ChunkingOptions(size=500, overlap=0))
    assert chunks == ["first para graph\nsecond one"]
    assert chunk_text("  \n\n  ") == []


@pytest.mark.parametrize(("size", "overlap"), [(49, 0), (100, 100), (100, 150), (20_001, 0)])
def test_bad_options_are_refused(size, overlap):
    with pytest.raises(ValidationError):
        ChunkingOptions(size=size, overlap=overlap)


@settings(max_examples=150, deadline=None)
@given(words=WORDS, seps=st.lists(SEPARATORS, min_size=1), size=st.integers(50, 400),
       overlap_part=st.floats(0, 0.9))
def test_every_word_is_kept_whole_and_in_order(words, seps, size, overlap_part):
    # Words made unique (suffix #i) so that the overlap between two chunks is unambiguous.
    text = "".join(f"{w}#{i}" + seps[i % len(seps)] for i, w in enumerate(words))
    options = ChunkingOptions(size=size, overlap=int(size * overlap_part))
    chunks = chunk_text(text, options)
    original = text.split()
    for chunk in chunks:
        parts = chunk.split()
        assert len(chunk) <= size or len(parts) == 1
        # each chunk is a run of consecutive whole words of the text
        assert any(original[i:i + len(parts)] == parts for i in range(len(original)))
    # together, with overlaps removed, they are the text's words in order
    rebuilt: list[str] = []
    for chunk in chunks:
        parts = chunk.split()
        shared = next(k for k in range(len(parts), -1, -1) if k == 0 or rebuilt[-k:] == parts[:k])
        assert len(" ".join(parts[:shared])) <= options.overlap
        rebuilt.extend(parts[shared:])
    assert rebuilt == original
