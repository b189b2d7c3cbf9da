"""The in-memory vector index of the SQLite store's search: exact below `IVF_MIN_ROWS`, an
inverted file (faiss) above, kept in step with uploads and deletes, also while it is built."""

from __future__ import annotations

import numpy as np
import pytest

from trestle.endpoints.retrieval import vector_index
from trestle.endpoints.retrieval.vector_index import VectorIndex, build_ivf, exact_nearest
from trestle.store.datasets import Change

DIM = 32


def unit(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


def clustered(n: int, seed: int = 0) -> np.ndarray:
    """Unit vectors around 40 centres (embeddings of a corpus cluster by topic)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((40, DIM))
    return unit(centres[rng.integers(0, 40, n)] + 0.4 * rng.standard_normal((n, DIM)))


def brute_force(ids: np.ndarray, matrix: np.ndarray, query: np.ndarray, k: int) -> list[int]:
    sims = matrix @ query
    return ids[np.argsort(-sims, kind="stable")[:k]].tolist()


@pytest.fixture
def rows():
    ids = np.arange(1, 3001, dtype=np.int64) * 3  # chunk ids: ascending, not consecutive
    return ids, clustered(len(ids))


@pytest.fixture
def queries():
    return clustered(20, seed=1)


def best(found: dict[int, float], k: int) -> list[int]:
    return sorted(found, key=lambda i: (-found[i], i))[:k]


def test_exact_search_is_brute_force(rows, queries):
    ids, matrix = rows
    index = VectorIndex(1, ids, matrix)
    assert not index.uses_ivf(None)
    for q in queries:
        found = index.nearest(q, 10)
        assert best(found, 10) == brute_force(ids, matrix, q, 10)
        assert np.allclose([found[i] for i in found], index.similarity(np.array(list(found)), q))


def test_the_inverted_file_finds_the_nearest_with_exact_scores(rows, queries):
    ids, matrix = rows
    index = VectorIndex(1, ids, matrix)
    index.use(build_ivf(ids, matrix), len(ids))
    assert index.uses_ivf(None) and index.scans(None) == 0
    recalls = []
    for q in queries:
        found = index.nearest(q, 100)
        assert set(found) <= set(ids.tolist()) and len(found) == 100
        exact = dict(zip(ids.tolist(), (matrix @ q).tolist(), strict=True))
        assert all(found[i] == pytest.approx(exact[i], abs=1e-5) for i in found)  # rescored
        recalls.append(len(set(best(found, 10)) & set(brute_force(ids, matrix, q, 10))) / 10)
    assert np.mean(recalls) >= 0.95


def test_uploads_and_deletes_reach_the_inverted_file(rows):
    ids, matrix = rows
    index = VectorIndex(1, ids, matrix)
    index.use(build_ivf(ids, matrix), len(ids))
    new = clustered(5, seed=2)
    index.added(Change(2, np.array([9001, 9002, 9003, 9004, 9005]), new))
    for chunk_id, vector in zip([9001, 9002, 9003, 9004, 9005], new, strict=True):
        assert best(index.nearest(vector, 5), 1) == [chunk_id]

    index.removed(Change(3, np.array([9001])))
    assert 9001 not in index.nearest(new[0], 100)
    assert 9001 not in index.ids

    # An upsert replaces a chunk's vector: it is found by its new vector, not its old one.
    old, replacement = matrix[0], new[1]
    index.added(Change(4, np.array([ids[0]]), replacement[None, :]))
    assert ids[0] in best(index.nearest(replacement, 5), 2)
    assert int(ids[0]) not in index.nearest(old, 5)  # its old vector (cosine 1 to `old`) is gone
    assert index.similarity(ids[:1], old)[0] == pytest.approx(float(replacement @ old))
    assert index.version == 4 and index.ivf.ntotal == len(index.ids)


def test_changes_made_while_the_index_builds_are_replayed_on_it(rows):
    ids, matrix = rows
    index = VectorIndex(1, ids, matrix)
    snapshot_ids, snapshot_matrix = index.snapshot()
    assert not index.wants_ivf()  # one build at a time
    new = clustered(2, seed=3)
    index.added(Change(2, np.array([9001, 9002]), new))
    index.removed(Change(3, ids[:10]))
    assert not index.uses_ivf(None)  # searches stay exact until the index is ready
    assert best(index.nearest(new[0], 5), 1) == [9001]

    index.use(build_ivf(snapshot_ids, snapshot_matrix), len(snapshot_ids))
    assert index.uses_ivf(None) and index.pending is None
    assert best(index.nearest(new[1], 5), 1) == [9002]
    assert not set(index.nearest(matrix[0], 100)) & set(ids[:10].tolist())
    assert index.ivf.ntotal == len(index.ids) == len(ids) - 10 + 2


def test_a_failed_build_leaves_searches_exact(rows, queries):
    ids, matrix = rows
    index = VectorIndex(1, ids, matrix)
    index.snapshot()
    index.added(Change(2, np.array([9001]), clustered(1, seed=4)))
    index.use(None, len(ids))
    assert index.ivf is None and index.pending is None
    assert best(index.nearest(queries[0], 10), 10) == brute_force(index.ids, index.matrix,
                                                                   queries[0], 10)


def test_when_an_index_is_wanted(rows, monkeypatch):
    ids, matrix = rows
    monkeypatch.setattr(vector_index, "IVF_MIN_ROWS", 1000)
    small = VectorIndex(1, ids[:999], matrix[:999])
    assert not small.wants_ivf()
    index = VectorIndex(1, ids[:1000], matrix[:1000])
    assert index.wants_ivf()
    index.use(build_ivf(index.ids, index.matrix), len(index.ids))
    assert not index.wants_ivf()
    index.added(Change(2, ids[1000:1999], matrix[1000:1999]))
    assert not index.wants_ivf()
    index.added(Change(3, ids[1999:2000], matrix[1999:2000]))
    assert index.wants_ivf()  # twice the rows it was trained on: train again


def test_a_filter_keeps_to_the_allowed_chunks(rows, queries, monkeypatch):
    ids, matrix = rows
    monkeypatch.setattr(vector_index, "IVF_MIN_ROWS", 1000)
    index = VectorIndex(1, ids, matrix)
    index.use(build_ivf(ids, matrix), len(ids))
    many, few = ids[::2], ids[:50]
    assert index.uses_ivf(many) and not index.uses_ivf(few)
    assert index.scans(few) == 50
    for allowed in (many, few):
        found = index.nearest(queries[0], 10, allowed)
        assert len(found) == 10 and set(found) <= set(allowed.tolist())
    assert best(index.nearest(queries[0], 10, few), 10) == brute_force(
        few, matrix[:50], queries[0], 10)
    assert exact_nearest(ids, matrix, queries[0], 3, few) == {
        i: pytest.approx(s) for i, s in index.nearest(queries[0], 3, few).items()}
