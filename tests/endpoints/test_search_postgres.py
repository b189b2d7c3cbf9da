"""PostgreSQL specifics of search: the pgvector tables are made on first use, filled with the
vectors of chunks stored before, and left out of the ORM's drift check."""

from __future__ import annotations

import asyncio

import numpy as np

from trestle.endpoints.retrieval.search_postgres import PostgresSearch
from trestle.store import Store
from trestle.store.datasets import NewChunk, NewDocument


def unit(seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal(384).astype(np.float32)
    return v / np.linalg.norm(v)


def test_prepare_indexes_chunks_stored_before_and_keeps_the_schema_clean(postgres_vector):
    from store.test_migrations import drift
    from trestle.store.tables import Base

    url = postgres_vector.new_database()

    async def go():
        async with await Store.open(url) as store:
            ds = await store.datasets.create_dataset("early", embedding_model="m", dimensions=384)
            texts = ["granite quarry on the hill", "salt marsh with herons", "copper mine tunnels"]
            doc = NewDocument("early.txt", {}, [NewChunk(t, {"text": t}, t) for t in texts],
                              np.stack([unit(i) for i in range(3)]))
            await store.datasets.add_documents(ds.id, [doc])  # no search tables yet
            search = PostgresSearch(store.datasets)
            await search.prepare()
            await search.prepare()  # a second run changes nothing
            by_vector = await search.search(ds, unit(1), "", top_k=3, alpha=1.0, filter=None)
            by_word = await search.search(ds, unit(7), "herons", top_k=3, alpha=0.0, filter=None)
            rows = {r.id: r.text for r in await store.datasets.list_rows(ds.id)}
            return by_vector, by_word, rows

    by_vector, by_word, rows = asyncio.run(go())
    assert rows[by_vector[0].chunk_id] == "salt marsh with herons"
    assert by_vector[0].vector_score > 0.99
    assert [rows[h.chunk_id] for h in by_word] == ["salt marsh with herons"]
    assert drift(url, Base.metadata) == []
