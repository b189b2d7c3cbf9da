"""The in-memory keyword index of the SQLite store's search for large datasets: read from FTS5's
own index, it ranks as FTS5's `bm25()` does, with the dataset's own statistics."""

from __future__ import annotations

import asyncio
import random
import sqlite3

import numpy as np
import pytest

from trestle.endpoints.retrieval.keyword_index import TOKENIZE, Tokenizer, read_keyword_index
from trestle.endpoints.retrieval.search_sqlite import match_expression
from trestle.store import Store, sqlite_url
from trestle.store.datasets import NewChunk, NewDocument

# Words with shared stems (policy/policies, run/running/runs), so that stemming matters.
VOCABULARY = """policy policies refund running runs run harbour lighthouse keeper sourdough
starter volcano eruption garden raised beds tern arctic migrate migrates bakery oven flour
ledger invoice ticket escalation warranty battery charger cable router firmware update
""".split()


def texts(n: int, seed: int) -> list[str]:
    """Chunks of 3 to 40 words (lengths vary, so BM25's length normalisation shows), the
    vocabulary drawn unevenly (some words common, some rare)."""
    rng = random.Random(seed)
    weights = [1 / (i + 1) for i in range(len(VOCABULARY))]
    return [" ".join(rng.choices(VOCABULARY, weights, k=rng.randint(3, 40))) for _ in range(n)]


def queries(seed: int) -> list[list[str]]:
    rng = random.Random(seed)
    found = [rng.sample(VOCABULARY, rng.randint(1, 4)) for _ in range(30)]
    return found + [["policy", "policies"], ["Running", "harbour"], ["tern", "tern"]]


@pytest.fixture
def store(run, tmp_path):
    store = run(Store.open(sqlite_url(tmp_path / "keywords.db")))
    yield store
    run(store.close())


def add(run, store, name: str, chunks: list[str]):
    datasets = store.datasets
    ds = run(datasets.create_dataset(name, embedding_model="test", dimensions=4))
    run(datasets.add_documents(ds.id, [NewDocument(
        f"{name}.txt", {}, [NewChunk(t, {"text": t}, t) for t in chunks],
        np.ones((len(chunks), 4), dtype=np.float32),
    )]))
    return run(datasets.get_dataset(ds.id))


def fts5_scores(store, dataset_id: str, words: list[str]) -> dict[int, float]:
    """Every matching chunk of the dataset with FTS5's own bm25() (made positive)."""
    db = sqlite3.connect(store.datasets.engine.url.database)
    try:
        return dict(db.execute(
            "SELECT c.id, -bm25(chunks_fts) FROM chunks_fts"
            " JOIN chunks c ON c.id = chunks_fts.rowid"
            " WHERE chunks_fts MATCH ? AND c.dataset_id = ?",
            (match_expression(words), dataset_id)).fetchall())
    finally:
        db.close()


def terms(words: list[str]) -> list[str]:
    tokenizer = Tokenizer()
    try:
        return [t for found in tokenizer.terms(words) for t in found]
    finally:
        tokenizer.close()


def test_it_ranks_as_fts5_bm25_on_a_single_dataset(run, store):
    ds = add(run, store, "only", texts(400, seed=1))
    index = read_keyword_index(store.datasets.engine.url.database, ds.id)
    assert index.version == ds.version and len(index.ids) == 400
    for words in queries(seed=2):
        expected = fts5_scores(store, ds.id, words)
        got = index.best(terms(words), 50)
        assert len(got) == min(50, len(expected)) > 0, words
        for chunk_id, score in got.items():
            assert score == pytest.approx(expected[chunk_id], rel=1e-5), (words, chunk_id)
        # the 50 best scores, whatever the order of ties
        assert sorted(got.values(), reverse=True) == pytest.approx(
            sorted(expected.values(), reverse=True)[:50], rel=1e-5)


def test_it_holds_only_its_dataset_with_its_own_statistics(run, store, tmp_path):
    """The same chunks scored alone in a store and beside another dataset: the same scores (FTS5's
    bm25() would count the other dataset's chunks in its statistics)."""
    mine, other = texts(300, seed=3), texts(500, seed=4)
    ds = add(run, store, "mine", mine)
    add(run, store, "other", other)
    index = read_keyword_index(store.datasets.engine.url.database, ds.id)
    alone = run(Store.open(sqlite_url(tmp_path / "alone.db")))
    try:
        ds_alone = add(run, alone, "mine", mine)
        index_alone = read_keyword_index(alone.datasets.engine.url.database, ds_alone.id)
    finally:
        run(alone.close())
    assert index.ids.tolist() == index_alone.ids.tolist()  # the same ids: added first in both
    for words in queries(seed=5):
        got = index.best(terms(words), 400)
        assert set(got) <= set(index.ids.tolist())
        assert got == pytest.approx(index_alone.best(terms(words), 400), rel=1e-6)
        assert got == pytest.approx(fts5_scores(alone, ds_alone.id, words), rel=1e-5)


def test_allowed_chunks_and_ties(run, store):
    ds = add(run, store, "ties", ["refund policy"] * 5 + texts(100, seed=6))
    index = read_keyword_index(store.datasets.engine.url.database, ds.id)
    first = index.ids[:5].tolist()
    tied = index.best(terms(["refund", "policy"]), 3, np.array(first, dtype=np.int64))
    assert list(tied) == first[:3]  # equal scores: lower chunk ids first
    allowed = index.ids[::3]
    everything = index.best(terms(["harbour", "tern"]), len(index.ids))
    within = {i: s for i, s in everything.items() if i in set(allowed.tolist())}
    best = dict(sorted(within.items(), key=lambda kv: (-kv[1], kv[0]))[:10])
    assert index.best(terms(["harbour", "tern"]), 10, allowed) == pytest.approx(best)


def test_an_unknown_dataset_reads_as_none(run, store):
    add(run, store, "some", texts(10, seed=7))
    assert read_keyword_index(store.datasets.engine.url.database, "no-such-dataset") is None


def test_the_tokenizer_splits_and_stems_as_the_store_does(run, store):
    db = sqlite3.connect(store.datasets.engine.url.database)
    try:
        (sql,) = db.execute("SELECT sql FROM sqlite_master WHERE name = 'chunks_fts'").fetchone()
    finally:
        db.close()
    assert f"tokenize='{TOKENIZE}'" in sql
    tokenizer = Tokenizer()
    try:
        assert tokenizer.terms(["Policies", "running", "Café", "foo_bar", "--"]) == [
            ["polici"], ["run"], ["cafe"], ["foo", "bar"], []]
        assert tokenizer.terms(["again"]) == [["again"]]  # nothing left from the last call
    finally:
        tokenizer.close()


def test_a_deleted_datasets_keyword_read_is_dropped(run, store, monkeypatch):
    """A read started by a search, then the dataset deleted before it ends: nothing is kept."""
    from trestle.endpoints.retrieval import search_sqlite

    monkeypatch.setattr(search_sqlite, "KEYWORD_MIN_ROWS", 20)
    ds = add(run, store, "brief", texts(50, seed=8))
    search = search_sqlite.SqliteSearch(store.datasets)

    async def read_then_delete():
        assert search.keyword_index(ds.id, await search.vector_index(ds.id)) is None  # starts it
        task = search._builds[("keywords", ds.id)]
        search.forget(ds.id)
        await asyncio.gather(task, return_exceptions=True)
        return task

    try:
        task = run(read_then_delete())
        assert task.cancelled()
        assert ds.id not in search._keywords and search._builds == {}
    finally:
        run(search.close())


def test_an_older_keyword_index_is_dropped_as_soon_as_it_is_seen(run, store, monkeypatch):
    """After an upload the index no longer matches the dataset: it is let go at once (a dataset
    that shrank below the threshold would otherwise keep it for good), and a new one is read."""
    from trestle.endpoints.retrieval import search_sqlite

    monkeypatch.setattr(search_sqlite, "KEYWORD_MIN_ROWS", 20)
    ds = add(run, store, "growing", texts(50, seed=9))
    search = search_sqlite.SqliteSearch(store.datasets)

    async def upload_then_look():
        await search.indexed(ds.id)
        before = search._keywords[ds.id]
        _, change = await store.datasets.add_documents(ds.id, [NewDocument(
            "more.txt", {}, [NewChunk("tern harbour", {"text": "tern harbour"}, "tern harbour")],
            np.ones((1, 4), dtype=np.float32))])
        search.apply(ds.id, change)
        index = await search.vector_index(ds.id)
        assert index.version == before.version + 1
        assert search.keyword_index(ds.id, index) is None
        assert ds.id not in search._keywords  # dropped before the new one is read
        await search.indexed(ds.id)
        return search._keywords[ds.id]

    try:
        after = run(upload_then_look())
        assert after.version == ds.version + 1 and len(after.ids) == 51
    finally:
        run(search.close())
