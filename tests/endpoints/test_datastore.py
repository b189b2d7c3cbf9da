"""Datastores end to end on SQLite and on PostgreSQL + pgvector: the documents of tests/data are
uploaded through the real embeddings worker, then searched, listed and deleted."""

from __future__ import annotations

import numpy as np
import pytest

from endpoints.conftest import MINILM_SLUG, data_files
from trestle.endpoints.retrieval.chunking import ChunkingOptions
from trestle.endpoints.retrieval.ingest import UploadedFile
from trestle.errors import BadRequest, NotFound, PayloadTooLarge

# A question, and the document (and for CSV rows, a column value) that holds its answer.
FACTS = [
    ("How many ships did the lighthouse keeper record in October 1911?", "lighthouse.txt", None),
    ("When did Mount Tessaly erupt and where did the ash fall?", "volcano.txt", None),
    ("What is the name of the sourdough starter?", "bakery.txt", None),
    ("Which day does the robotics club meet and in which room?", "robotics-club.md", None),
    ("How much water does the rainwater tank of the community garden hold?", "garden.md", None),
    ("Who conducts the youth orchestra?", "orchestra.md", None),
    ("How often does comet Varga-7 return?", "comet.pdf", None),
    ("What was the railway's first steam locomotive called?", "railway.pdf", None),
    ("How old is the oldest antique clock in the museum?", "museum.pdf", None),
    ("Which planet has rings made of water ice?", "planets.csv", "Saturn"),
    ("What is the phone extension of the security department?", "staff.csv", "Tomas Okafor"),
    ("How long does the saffron risotto take to cook?", "recipes.csv", "Saffron risotto"),
]


@pytest.fixture
def handbook(run, datastore):
    run(datastore.create_dataset("handbook"))
    docs = run(datastore.upload("handbook", data_files(), ChunkingOptions(size=300, overlap=60)))
    return {d.name: d for d in docs}


def test_upload_stores_every_document_with_its_chunks(run, datastore, handbook):
    assert sorted(handbook) == sorted(f.name for f in data_files())
    assert handbook["planets.csv"].chunks == 3  # one per CSV row
    assert handbook["comet.pdf"].chunks == 2  # one per (short) page
    assert handbook["bakery.txt"].chunks >= 2  # longer than one 300-character chunk
    listed = run(datastore.documents("handbook"))
    assert {d.id: d.chunks for d in listed} == {d.id: d.chunks for d in handbook.values()}
    rows = run(datastore.rows("handbook", limit=1000))
    assert len(rows) == sum(d.chunks for d in handbook.values())
    assert all(len(r.text) <= 300 for r in rows if not r.document_id == handbook["planets.csv"].id)
    saturn = next(r for r in rows if r.data.get("planet") == "Saturn")
    assert saturn.data == {
        "text": saturn.text, "planet": "Saturn", "moons": "146",
        "notable": "its rings are made mostly of water ice",
    }
    assert saturn.embedding == saturn.text and saturn.last_accessed is None
    doc = handbook["museum.pdf"]
    assert doc.metadata["url"] == f"/{doc.id}/museum.pdf"
    dataset = run(datastore.get_dataset("handbook"))
    assert (dataset.embedding_model, dataset.dimensions) == (MINILM_SLUG, 384)


@pytest.mark.parametrize(("question", "document", "row"), FACTS)
def test_search_finds_the_document_that_holds_the_fact(run, datastore, handbook, question,
                                                       document, row):
    results = run(datastore.search("handbook", question, top_k=3, alpha=0.5))
    top = results[0]
    assert top.document.name == document, [(r.document.name, r.confidence) for r in results]
    if row is not None:
        assert row in top.chunk.data.values()
    assert all(0 <= r.confidence <= 1 for r in results)
    assert [r.confidence for r in results] == sorted((r.confidence for r in results), reverse=True)


def test_vector_only_and_keyword_only_search(run, datastore, handbook):
    # No word in common with the document: only vector search finds it.
    semantic = run(datastore.search("handbook", "an icy wanderer that orbits the sun and comes back every few decades",
                                    top_k=1, alpha=1.0))
    assert semantic[0].document.name == "comet.pdf"
    assert semantic[0].keyword_score == 0 and semantic[0].confidence == semantic[0].vector_score
    # A rare word: keyword search puts its one chunk first with score 1.
    keyword = run(datastore.search("handbook", "Bellerophon", top_k=3, alpha=0.0))
    assert keyword[0].document.name == "railway.pdf"
    assert keyword[0].keyword_score == 1.0 == keyword[0].confidence
    assert all(r.confidence == r.keyword_score for r in keyword)
    # alpha weighs the two: confidence = alpha * vector + (1 - alpha) * keyword.
    for r in run(datastore.search("handbook", "Bellerophon steam", top_k=5, alpha=0.3)):
        assert r.confidence == pytest.approx(0.3 * r.vector_score + 0.7 * r.keyword_score)


def test_sqlite_search_through_the_inverted_file(run, runner, tmp_path, embeddings_worker,
                                                 monkeypatch):
    """With the index threshold lowered to the handbook's size, the first search starts the
    index's build (searching exactly meanwhile), later searches go through it and find the same
    documents, and an upload and a delete reach it."""
    from endpoints.conftest import open_datastore
    from trestle.endpoints.retrieval import vector_index
    from trestle.store import sqlite_url

    monkeypatch.setattr(vector_index, "IVF_MIN_ROWS", 20)
    store, client, datastore = open_datastore(runner, sqlite_url(tmp_path / "ivf.db"),
                                              embeddings_worker)
    try:
        run(datastore.create_dataset("handbook"))
        run(datastore.upload("handbook", data_files(), ChunkingOptions(size=300, overlap=60)))
        dataset = run(datastore.get_dataset("handbook"))
        exact = run(datastore.search("handbook", FACTS[0][0], top_k=3))
        run(datastore.index.indexed(dataset.id))
        index = run(datastore.index.vector_index(dataset.id))
        assert index.uses_ivf(None) and index.ivf.ntotal == len(index.ids) >= 20
        for question, document, _ in FACTS:
            assert run(datastore.search("handbook", question, top_k=3))[0].document.name == document
        assert [(r.chunk.id, r.confidence) for r in
                run(datastore.search("handbook", FACTS[0][0], top_k=3))] == [
            (r.chunk.id, pytest.approx(r.confidence)) for r in exact]

        run(datastore.upload("handbook", [UploadedFile("tern.txt", b"The Arctic tern Miska "
                                                       b"migrates from pole to pole each year.")]))
        assert index.ivf.ntotal == len(index.ids)
        found = run(datastore.search("handbook", "Which bird flies from pole to pole?", top_k=1,
                                     alpha=1.0))
        assert found[0].document.name == "tern.txt"
        run(datastore.delete_document("handbook", found[0].document.id))
        assert index.ivf.ntotal == len(index.ids)
        again = run(datastore.search("handbook", "Which bird flies from pole to pole?", top_k=3,
                                     alpha=1.0))
        assert "tern.txt" not in {r.document.name for r in again}
    finally:
        run(datastore.close())
        run(client.aclose())
        run(store.close())


def test_sqlite_keyword_search_from_memory(run, runner, tmp_path, embeddings_worker, monkeypatch):
    """Ranked by FTS5, then with the threshold lowered to the handbook's size and the index
    read: ranked in memory, the same chunks with the same scores. After an upload (or a delete),
    FTS5 ranks again, so the new chunk is found at once, until the index has been read anew,
    which finds it too."""
    from endpoints.conftest import open_datastore
    from trestle.endpoints.retrieval import keyword_index, search_sqlite
    from trestle.store import sqlite_url

    in_memory = []
    best = keyword_index.KeywordIndex.best

    def counted(self, *args):
        in_memory.append(self.version)
        return best(self, *args)

    monkeypatch.setattr(keyword_index.KeywordIndex, "best", counted)
    store, client, datastore = open_datastore(runner, sqlite_url(tmp_path / "bm25.db"),
                                              embeddings_worker)

    def keyword_hits(query):
        return [(r.chunk.id, r.document.name, r.confidence)
                for r in run(datastore.search("handbook", query, top_k=5, alpha=0.0))]

    try:
        run(datastore.create_dataset("handbook"))
        run(datastore.upload("handbook", data_files(), ChunkingOptions(size=300, overlap=60)))
        dataset = run(datastore.get_dataset("handbook"))
        ranked_by_fts5 = {q: keyword_hits(q) for q, _, _ in FACTS}
        assert in_memory == []
        monkeypatch.setattr(search_sqlite, "KEYWORD_MIN_ROWS", 20)
        run(datastore.index.indexed(dataset.id))
        for question, _, _ in FACTS:
            assert keyword_hits(question) == [(i, name, pytest.approx(c))
                                              for i, name, c in ranked_by_fts5[question]]
        assert in_memory == [dataset.version] * len(FACTS)

        run(datastore.upload("handbook", [UploadedFile("tern.txt", b"The Arctic tern Miska "
                                                       b"migrates from pole to pole each year.")]))
        in_memory.clear()
        assert keyword_hits("Miska tern")[0][1] == "tern.txt"
        assert in_memory == []  # the index is older than the dataset: FTS5 ranked
        run(datastore.index.indexed(dataset.id))
        hits = keyword_hits("Miska tern")
        assert hits[0][1] == "tern.txt" and in_memory == [dataset.version + 1]
        run(datastore.delete_document("handbook", next(
            d.id for d in run(datastore.documents("handbook")) if d.name == "tern.txt")))
        run(datastore.index.indexed(dataset.id))
        assert "tern.txt" not in {name for _, name, _ in keyword_hits("Miska tern")}
        assert in_memory[-1] == dataset.version + 2
    finally:
        run(datastore.close())
        run(client.aclose())
        run(store.close())


def test_search_results_carry_the_seed_fields_and_touch_rows(run, datastore, handbook):
    results = run(datastore.search("handbook", "sourdough starter Gerald", top_k=2))
    wire = results[0].wire(variable="context", query="sourdough starter Gerald")
    assert set(wire) == {"data", "embedding", "image_paths", "confidence", "metadata",
                         "variable", "last_accessed", "query"}
    doc = handbook["bakery.txt"]
    assert wire["metadata"]["documentId"] == doc.id
    assert wire["metadata"]["url"] == f"/{doc.id}/bakery.txt"
    assert isinstance(wire["metadata"]["rowId"], int)
    assert "Gerald" in wire["data"]["text"] and wire["embedding"] == wire["data"]["text"]
    rows = {r.id: r for r in run(datastore.rows("handbook", limit=1000))}
    touched = rows[wire["metadata"]["rowId"]].last_accessed
    assert touched is not None and touched.isoformat() == wire["last_accessed"]


def test_last_accessed_is_written_in_batches_and_on_close(run, datastore, handbook):
    """A search does not write `last_accessed` itself: the times wait in memory (one write for
    many searches), are written on the next flush, before rows are read, and on close."""
    datastore.access.delay_s = 3600  # no timed flush during this test
    stored = datastore.datasets  # reads the database, not the datastore's pending times

    def last_accessed(row_id):
        return {r.id: r.last_accessed for r in run(stored.list_rows(
            run(datastore.get_dataset("handbook")).id, limit=1000))}[row_id]

    first = run(datastore.search("handbook", "sourdough starter Gerald", top_k=1))[0]
    second = run(datastore.search("handbook", "comet Varga-7", top_k=1))[0]
    assert last_accessed(first.chunk.id) is None and last_accessed(second.chunk.id) is None
    run(datastore.access.flush())
    assert last_accessed(first.chunk.id) == first.last_accessed
    assert last_accessed(second.chunk.id) == second.last_accessed

    again = run(datastore.search("handbook", "sourdough starter Gerald", top_k=1))[0]
    assert again.last_accessed > first.last_accessed
    run(datastore.close())
    assert last_accessed(again.chunk.id) == again.last_accessed


def test_a_repeated_query_is_embedded_once(run, datastore, handbook, monkeypatch):
    calls = []
    embed = datastore.embedder.embed

    async def counted(texts, progress=None):
        calls.append(list(texts))
        return await embed(texts, progress)

    monkeypatch.setattr(datastore.embedder, "embed", counted)
    first = run(datastore.search("handbook", "sourdough starter", top_k=2))
    again = run(datastore.search("handbook", "sourdough starter", top_k=2))
    assert calls == [["sourdough starter"]]
    assert [(r.chunk.id, r.confidence) for r in first] == [(r.chunk.id, r.confidence) for r in again]


def test_metadata_filters(run, datastore):
    run(datastore.create_dataset("filtered"))
    run(datastore.upload("filtered", data_files("lighthouse.txt", "volcano.txt", team="coast")))
    run(datastore.upload("filtered", data_files("staff.csv", "bakery.txt", team="town", year=2024)))
    question = "When did the volcano erupt?"
    assert run(datastore.search("filtered", question, top_k=1))[0].document.name == "volcano.txt"
    town = run(datastore.search("filtered", question, top_k=10, filter={"team": "town"}))
    assert town and {r.document.name for r in town} <= {"staff.csv", "bakery.txt"}
    both = run(datastore.search("filtered", question, top_k=10,
                                filter={"team": ["coast", "town"]}))
    assert both[0].document.name == "volcano.txt"
    # A CSV column is a filter too, and values compare by JSON type.
    security = run(datastore.search("filtered", question, top_k=10,
                                    filter={"department": "Security"}))
    assert [r.chunk.data["name"] for r in security] == ["Tomas Okafor"]
    assert run(datastore.search("filtered", question, filter={"year": "2024"})) == []
    assert len(run(datastore.search("filtered", question, top_k=10, filter={"year": 2024}))) > 0
    assert run(datastore.search("filtered", question, filter={"team": "nowhere"})) == []


def test_delete_document_removes_its_rows_and_vectors(run, datastore, handbook):
    question = "What was the railway's first steam locomotive called?"
    assert run(datastore.search("handbook", question, top_k=1))[0].document.name == "railway.pdf"
    railway = handbook["railway.pdf"]
    before = run(datastore.rows("handbook", limit=1000))
    deleted = run(datastore.delete_document("handbook", railway.id))
    assert deleted.id == railway.id and deleted.chunks == railway.chunks
    after = run(datastore.rows("handbook", limit=1000))
    assert len(after) == len(before) - railway.chunks
    assert all(r.document_id != railway.id for r in after)
    for alpha in (0.0, 0.5, 1.0):
        results = run(datastore.search("handbook", "Bellerophon " + question, top_k=50,
                                       alpha=alpha))
        assert all(r.document.id != railway.id for r in results)
    assert railway.id not in {d.id for d in run(datastore.documents("handbook"))}
    with pytest.raises(NotFound):
        run(datastore.delete_document("handbook", railway.id))


def test_a_bad_file_fails_the_whole_upload(run, datastore):
    run(datastore.create_dataset("atomic"))
    files = data_files("lighthouse.txt", "planets.csv") + [
        UploadedFile("broken.pdf", b"%PDF-1.4 this is not a pdf")
    ]
    with pytest.raises(BadRequest) as caught:
        run(datastore.upload("atomic", files))
    assert "broken.pdf" in caught.value.message
    assert run(datastore.documents("atomic")) == []
    assert run(datastore.rows("atomic")) == []
    assert run(datastore.search("atomic", "lighthouse keeper", alpha=0.0)) == []


def test_a_database_failure_mid_upload_stores_nothing(run, datastore):
    from trestle.store.datasets import NewChunk, NewDocument

    dataset = run(datastore.create_dataset("midway"))
    good = NewDocument("good.txt", {}, [NewChunk("kept?", {"text": "kept?"}, "kept?")],
                       np.ones((1, 384), np.float32) / np.sqrt(384))
    bad = NewDocument("bad.txt", {}, [NewChunk("x", {"text": "x"}, "x")],
                      np.ones((1, 12), np.float32))  # the wrong dimension, found after `good`
    with pytest.raises(ValueError):
        run(datastore.datasets.add_documents(dataset.id, [good, bad],
                                             index=datastore.index.writer))
    assert run(datastore.documents("midway")) == []
    assert run(datastore.datasets.count_rows(dataset.id)) == 0
    assert run(datastore.datasets.version(dataset.id)) == 0


def test_an_unreachable_embeddings_worker_stores_nothing(run, datastore):
    import httpx

    from endpoints.conftest import free_port
    from trestle.endpoints.retrieval.datastore import Datastore
    from trestle.endpoints.retrieval.embedder import WorkerEmbedder
    from trestle.errors import Unavailable

    run(datastore.create_dataset("offline"))
    client = httpx.AsyncClient(base_url=f"http://127.0.0.1:{free_port()}")
    offline = Datastore(datastore.datasets, WorkerEmbedder(client), datastore.index)
    with pytest.raises(Unavailable) as caught:
        run(offline.upload("offline", data_files("garden.md")))
    assert "not reachable" in caught.value.message
    run(client.aclose())
    assert run(datastore.documents("offline")) == []


def test_limits_and_bad_options(run, datastore, monkeypatch):
    run(datastore.create_dataset("limits"))
    with pytest.raises(BadRequest) as caught:
        run(datastore.upload("limits", [UploadedFile("notes.docx", b"x")]))
    assert caught.value.param == "files" and ".docx" in caught.value.message
    monkeypatch.setattr("trestle.endpoints.retrieval.ingest.MAX_FILE_BYTES", 100)
    with pytest.raises(PayloadTooLarge):
        run(datastore.upload("limits", data_files("bakery.txt")))
    with pytest.raises(BadRequest):
        run(datastore.upload("limits", [UploadedFile("a.txt", b"a", {"url": 5})]))
    with pytest.raises(NotFound):
        run(datastore.search("no-such-dataset", "x"))
    for options, param in [
        ({"top_k": 0}, "top_k"), ({"top_k": 51}, "top_k"), ({"alpha": 1.5}, "alpha"),
        ({"alpha": True}, "alpha"), ({"filter": {"a b": 1}}, "filter"),
        ({"filter": {"k": {"nested": 1}}}, "filter.k"), ({"filter": []}, "filter"),
    ]:
        with pytest.raises(BadRequest) as caught:
            run(datastore.search("limits", "query", **options))
        assert caught.value.param == param
    with pytest.raises(BadRequest) as caught:
        run(datastore.search("limits", "   "))
    assert caught.value.param == "query"
    assert run(datastore.search("limits", "empty dataset")) == []


def test_sqlite_vector_index_follows_changes_from_another_process(run, runner, tmp_path,
                                                                  embeddings_worker):
    from endpoints.conftest import open_datastore
    from trestle.store import sqlite_url

    url = sqlite_url(tmp_path / "shared.db")
    store_a, client_a, a = open_datastore(runner, url, embeddings_worker)
    store_b, client_b, b = open_datastore(runner, url, embeddings_worker)
    try:
        run(a.create_dataset("shared"))
        run(a.upload("shared", data_files("lighthouse.txt")))
        question = "What was the name of the first steam locomotive?"
        assert run(a.search("shared", question, alpha=1.0))[0].document.name == "lighthouse.txt"
        # b adds a document: a's in-memory index (already loaded) must see it.
        [railway] = run(b.upload("shared", data_files("railway.pdf")))
        assert run(a.search("shared", question, alpha=1.0))[0].document.name == "railway.pdf"
        # a adds one itself (its index follows without a reload), b deletes one.
        run(a.upload("shared", data_files("comet.pdf")))
        comet = "How often does the comet come back?"
        assert run(a.search("shared", comet, alpha=1.0))[0].document.name == "comet.pdf"
        run(b.delete_document("shared", railway.id))
        names = {r.document.name for r in run(a.search("shared", question, top_k=10, alpha=1.0))}
        assert names == {"lighthouse.txt", "comet.pdf"}
    finally:
        for datastore, client, store in ((a, client_a, store_a), (b, client_b, store_b)):
            run(datastore.close())
            run(client.aclose())
            run(store.close())


@pytest.mark.parametrize("runs", [16, 1], ids=["id-ranges", "join"])
def test_keyword_search_keeps_to_its_dataset_when_uploads_interleave(run, datastore, monkeypatch,
                                                                     runs):
    """Two datasets whose chunk ids interleave: keyword search (alpha 0) in one never returns
    the other's chunks, whether the dataset is named by runs of ids or by a join (SQLite)."""
    from trestle.endpoints.retrieval import vector_index

    monkeypatch.setattr(vector_index, "MAX_RANGES", runs)
    run(datastore.create_dataset("coast"))
    run(datastore.create_dataset("inland"))
    run(datastore.upload("coast", data_files("lighthouse.txt")))
    run(datastore.upload("inland", data_files("volcano.txt")))
    run(datastore.upload("coast", data_files("garden.md")))
    run(datastore.upload("inland", data_files("bakery.txt")))

    def names(dataset, query):
        """Documents of the index's hits (before rows are read back, which checks the dataset
        again), and those of the search's results: the same."""
        ds = run(datastore.get_dataset(dataset))
        hits = run(datastore.index.search(ds, run(datastore.query_vector(query)), query,
                                          top_k=10, alpha=0.0, filter=None))
        documents = {d.id: d.name for name in ("coast", "inland")
                     for d in run(datastore.documents(name))}
        rows = {r.id: documents[r.document_id] for name in ("coast", "inland")
                for r in run(datastore.rows(name, limit=1000))}
        found = {r.document.name for r in run(datastore.search(dataset, query, top_k=10, alpha=0))}
        assert {rows[h.chunk_id] for h in hits} == found
        return found

    assert names("coast", "Tessaly eruption Orvane") == set()
    assert names("inland", "Tessaly eruption Orvane") == {"volcano.txt"}
    assert names("coast", "lighthouse keeper, raised beds") == {"lighthouse.txt", "garden.md"}
    assert names("inland", "lighthouse keeper, raised beds") == set()
    run(datastore.delete_document("coast", next(
        d.id for d in run(datastore.documents("coast")) if d.name == "lighthouse.txt")))
    assert names("coast", "lighthouse keeper, raised beds") == {"garden.md"}


def test_delete_dataset_removes_everything(run, datastore):
    run(datastore.create_dataset("gone"))
    run(datastore.upload("gone", data_files("garden.md", "staff.csv")))
    assert run(datastore.search("gone", "raised beds", top_k=1))
    deleted = run(datastore.delete_dataset("gone"))
    assert deleted.name == "gone"
    with pytest.raises(NotFound):
        run(datastore.search("gone", "raised beds"))
    assert run(datastore.datasets.count_rows(deleted.id)) == 0
    # the name is free again, and the new dataset starts empty
    run(datastore.create_dataset("gone"))
    assert run(datastore.search("gone", "raised beds")) == []
