"""The datasets API (`/api/datasets/...`) of a real `trestle serve`, with its built-in embeddings
deployment, the documents of tests/data, and real API keys."""

from __future__ import annotations

import http.client
import json
import uuid
from urllib.parse import urlsplit

import httpx
import pytest

from endpoints.conftest import DATA, MINILM_SLUG
from endpoints.test_datastore import FACTS
from support import wait_for


def embeddings_ready(server) -> None:
    """Wait until the built-in embeddings deployment serves its slug (it loads in the background)."""
    def served():
        models = httpx.get(f"{server.url}/v1/models", headers=server.headers, timeout=30).json()
        return any(m["id"] == MINILM_SLUG for m in models["data"])

    wait_for(served, "the built-in embeddings model to be active", deadline_s=600)


def upload(client: httpx.Client, dataset: str, names: list[str], **form) -> httpx.Response:
    files = [("files", (n, (DATA / n).read_bytes())) for n in names]
    return client.post(f"/api/datasets/{dataset}/upload", files=files, data=form, timeout=600)


def new_name() -> str:
    return f"ds-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def api(server):
    embeddings_ready(server)
    with httpx.Client(base_url=server.url, headers=server.headers, timeout=600) as client:
        yield client


@pytest.fixture(scope="module")
def handbook(api):
    """Every document of tests/data in one dataset (chunks of 300 characters)."""
    name = new_name()
    assert api.post("/api/datasets", json={"name": name}).status_code == 201
    res = upload(api, name, sorted(p.name for p in DATA.iterdir()), chunk_size="300",
                 chunk_overlap="60", metadata=json.dumps({"team": "docs"}))
    assert res.status_code == 201, res.text
    return name, {d["name"]: d for d in res.json()["documents"]}


def test_create_list_get_and_delete_a_dataset(api):
    name = new_name()
    created = api.post("/api/datasets", json={"name": name})
    assert created.status_code == 201, created.text
    ds = created.json()
    assert (ds["name"], ds["embedding_model"], ds["dimensions"]) == (name, MINILM_SLUG, 384)
    assert name in [d["name"] for d in api.get("/api/datasets").json()["data"]]
    for ref in (ds["id"], name):
        got = api.get(f"/api/datasets/{ref}").json()
        assert (got["id"], got["documents"], got["rows"]) == (ds["id"], 0, 0)
    again = api.post("/api/datasets", json={"name": name})
    assert again.status_code == 409 and name in again.json()["message"]
    assert api.delete(f"/api/datasets/{name}").json()["id"] == ds["id"]
    missing = api.get(f"/api/datasets/{name}")
    assert missing.status_code == 404
    body = missing.json()
    assert body["message"] == body["error"]["message"] and name in body["message"]


def test_upload_keeps_metadata_and_counts_rows(api, handbook):
    name, docs = handbook
    assert sorted(docs) == sorted(p.name for p in DATA.iterdir())
    assert docs["planets.csv"]["rows"] == 3
    museum = docs["museum.pdf"]
    assert museum["metadata"] == {"team": "docs", "url": f"/{museum['id']}/museum.pdf"}
    listed = api.get(f"/api/datasets/{name}/documents").json()["data"]
    assert {d["id"]: d["rows"] for d in listed} == {d["id"]: d["rows"] for d in docs.values()}
    got = api.get(f"/api/datasets/{name}").json()
    assert got["documents"] == len(docs) and got["rows"] == sum(d["rows"] for d in docs.values())


@pytest.mark.parametrize(("question", "document", "row"), FACTS[::3])
def test_search_finds_the_document_that_holds_the_fact(api, handbook, question, document, row):
    name, docs = handbook
    res = api.post(f"/api/datasets/{name}/search", json={"query": question, "top_k": 3})
    assert res.status_code == 200, res.text
    results = res.json()["results"]
    top = results[0]
    assert top["metadata"]["documentId"] == docs[document]["id"], results
    assert top["metadata"]["url"] == docs[document]["metadata"]["url"]
    if row is not None:
        assert row in top["data"].values()
    assert set(top) == {"data", "embedding", "image_paths", "confidence", "metadata", "variable",
                        "last_accessed", "query"}
    assert top["query"] == question and 0 < top["confidence"] <= 1
    assert isinstance(top["metadata"]["rowId"], int)


def test_search_filter_and_alpha(api, handbook):
    name, docs = handbook
    keyword = api.post(f"/api/datasets/{name}/search",
                       json={"query": "Bellerophon", "top_k": 3, "alpha": 0}).json()["results"]
    assert keyword[0]["metadata"]["documentId"] == docs["railway.pdf"]["id"]
    nothing = api.post(f"/api/datasets/{name}/search",
                       json={"query": "Bellerophon", "filter": {"team": "elsewhere"}})
    assert nothing.status_code == 200 and nothing.json()["results"] == []
    for bad, param in [({"top_k": 0}, "top_k"), ({"alpha": 2}, "alpha"), ({"filter": [1]}, "filter"),
                       ({"query": ""}, "query"), ({"nope": 1}, "nope")]:
        res = api.post(f"/api/datasets/{name}/search", json={"query": "x", **bad})
        assert res.status_code == 400, (bad, res.text)
        assert res.json()["error"]["param"] == param and res.json()["message"]


def test_rows_are_paged(api, handbook):
    name, docs = handbook
    total = sum(d["rows"] for d in docs.values())
    seen, after = [], 0
    while True:
        page = api.get(f"/api/datasets/{name}/rows", params={"limit": 7, "after": after}).json()
        seen += page["data"]
        if page["next_after"] is None:
            break
        after = page["next_after"]
    assert len(seen) == total == len({r["id"] for r in seen})
    assert all(r["data"]["text"] for r in seen)
    one = api.get(f"/api/datasets/{name}/rows",
                  params={"document_id": docs["planets.csv"]["id"]}).json()["data"]
    assert sorted(r["data"]["planet"] for r in one) == sorted(
        r["data"]["planet"] for r in seen if "planet" in r["data"])
    assert api.get(f"/api/datasets/{name}/rows", params={"limit": 0}).status_code == 400


def test_delete_document_removes_its_rows_and_vectors(api):
    name = new_name()
    api.post("/api/datasets", json={"name": name})
    docs = {d["name"]: d for d in upload(api, name, ["railway.pdf", "lighthouse.txt"]).json()["documents"]}
    railway = docs["railway.pdf"]["id"]
    question = "What was the railway's first steam locomotive called?"
    hits = api.post(f"/api/datasets/{name}/search", json={"query": question}).json()["results"]
    assert hits[0]["metadata"]["documentId"] == railway
    deleted = api.delete(f"/api/datasets/{name}/documents/{railway}")
    assert deleted.status_code == 200 and deleted.json()["id"] == railway
    rows = api.get(f"/api/datasets/{name}/rows").json()["data"]
    assert rows and all(r["document_id"] != railway for r in rows)
    for alpha in (0, 0.5, 1):
        hits = api.post(f"/api/datasets/{name}/search",
                        json={"query": "Bellerophon " + question, "top_k": 50, "alpha": alpha}).json()
        assert all(h["metadata"]["documentId"] != railway for h in hits["results"])
    assert api.delete(f"/api/datasets/{name}/documents/{railway}").status_code == 404


def test_upsert_adds_and_replaces_rows(api):
    name = new_name()
    api.post("/api/datasets", json={"name": name})
    res = api.post(f"/api/datasets/{name}/rows/upsert", json={"rows": [
        {"data": {"text": "The ferry to Orla island leaves at 7:15 every morning.", "pier": "3"},
         "metadata": {"url": "https://example.com/ferry"}},
        {"data": {"text": "The bakery sells rye bread on Tuesdays."}},
    ]})
    assert res.status_code == 200, res.text
    ferry, bread = res.json()["data"]
    assert ferry["data"]["pier"] == "3" and ferry["document_id"] != bread["document_id"]
    hit = api.post(f"/api/datasets/{name}/search",
                   json={"query": "when does the ferry leave?", "top_k": 1}).json()["results"][0]
    assert hit["metadata"] == {"documentId": ferry["document_id"], "rowId": ferry["id"],
                               "url": "https://example.com/ferry"}
    replaced = api.post(f"/api/datasets/{name}/rows/upsert", json={"rows": [
        {"id": ferry["id"], "data": {"text": "The Orla ferry is cancelled for the winter."}},
    ]})
    assert replaced.status_code == 200, replaced.text
    assert replaced.json()["data"][0]["id"] == ferry["id"]
    for alpha in (0, 1):
        hits = api.post(f"/api/datasets/{name}/search",
                        json={"query": "Orla ferry cancelled winter", "top_k": 1,
                              "alpha": alpha}).json()["results"]
        assert hits[0]["metadata"]["rowId"] == ferry["id"]
        assert hits[0]["data"]["text"] == "The Orla ferry is cancelled for the winter."
    assert len(api.get(f"/api/datasets/{name}/rows").json()["data"]) == 2
    missing = api.post(f"/api/datasets/{name}/rows/upsert",
                       json={"rows": [{"id": 10**9, "data": {"text": "x"}}]})
    assert missing.status_code == 404
    no_text = api.post(f"/api/datasets/{name}/rows/upsert", json={"rows": [{"data": {"a": "b"}}]})
    assert no_text.status_code == 400 and no_text.json()["error"]["param"] == "rows.0.data.text"


def test_a_bad_file_fails_the_whole_upload(api):
    name = new_name()
    api.post("/api/datasets", json={"name": name})
    files = [("files", ("lighthouse.txt", (DATA / "lighthouse.txt").read_bytes())),
             ("files", ("broken.pdf", b"%PDF-1.4 not really"))]
    res = api.post(f"/api/datasets/{name}/upload", files=files)
    assert res.status_code == 400 and "broken.pdf" in res.json()["message"], res.text
    assert api.get(f"/api/datasets/{name}/documents").json()["data"] == []
    assert api.get(f"/api/datasets/{name}/rows").json()["data"] == []


def test_upload_errors(api):
    name = new_name()
    api.post("/api/datasets", json={"name": name})
    url = f"/api/datasets/{name}/upload"
    one = [("files", ("a.txt", b"some words"))]
    cases = [
        (api.post(url, json={"files": []}), 400, "files"),
        (api.post(url, files=[("other", ("a.txt", b"x"))]), 400, "other"),
        (api.post(url, files=one, data={"chunk_size": "10"}), 400, "chunk_size"),
        (api.post(url, files=one, data={"chunk_size": "big"}), 400, "chunk_size"),
        (api.post(url, files=one, data={"metadata": "[1]"}), 400, "metadata"),
        (api.post(url, files=[("files", ("a.docx", b"x"))]), 400, "files"),
        (api.post(url, files=one, data={"metadata": json.dumps({"k": "v" * 20_000})}), 413, "metadata"),
        (api.post(url, files=[("files", ("big.txt", b"word " * (21 * 1024 * 1024 // 5)))]), 413, "files"),
        (api.post(url, files=[("files", (f"{i}.txt", b"x")) for i in range(101)]), 413, "files"),
        (api.post("/api/datasets/no-such-dataset/upload", files=one), 404, "dataset"),
    ]
    for res, status, param in cases:
        assert res.status_code == status, (param, res.text)
        assert res.json()["error"]["param"] == param and res.json()["message"], res.text
    assert api.get(f"/api/datasets/{name}/documents").json()["data"] == []


def test_an_upload_over_the_total_limit_is_refused_before_it_is_read(server, api):
    name = new_name()
    api.post("/api/datasets", json={"name": name})
    where = urlsplit(server.url)
    conn = http.client.HTTPConnection(where.hostname, where.port, timeout=60)
    conn.putrequest("POST", f"/api/datasets/{name}/upload")
    conn.putheader("Authorization", server.headers["Authorization"])
    conn.putheader("Content-Type", "multipart/form-data; boundary=x")
    conn.putheader("Content-Length", str(200 * 1024 * 1024))
    conn.endheaders()
    res = conn.getresponse()
    body = json.loads(res.read())
    conn.close()
    assert res.status == 413 and "100 MiB" in body["message"]


def test_keys_admin_writes_invoke_searches(server, api, handbook):
    name, _ = handbook
    invoke = server.cli_json("keys", "create", "searcher", "--scope", "invoke")["key"]
    with httpx.Client(base_url=server.url, timeout=120,
                      headers={"Authorization": f"Bearer {invoke}"}) as client:
        res = client.post(f"/api/datasets/{name}/search", json={"query": "sourdough starter"})
        assert res.status_code == 200 and res.json()["results"], res.text
        for method, path in [("POST", "/api/datasets"), ("GET", "/api/datasets"),
                             ("GET", f"/api/datasets/{name}/rows"),
                             ("DELETE", f"/api/datasets/{name}")]:
            denied = client.request(method, path, json={"name": "x"})
            assert denied.status_code == 403, (method, path, denied.text)
            assert denied.json()["message"] == denied.json()["error"]["message"]  # one shape
    unauthorized = httpx.get(f"{server.url}/api/datasets", timeout=30)
    assert unauthorized.status_code == 401 and unauthorized.json()["message"]
    assert httpx.post(f"{server.url}/api/datasets/{name}/search", json={"query": "x"},
                      timeout=30).status_code == 401


def test_the_gateway_upload_limit_holds_the_ingest_limit_and_the_form():
    from trestle.endpoints.retrieval.ingest import MAX_UPLOAD_BYTES
    from trestle.settings import DATASET_UPLOAD_BYTES

    assert MAX_UPLOAD_BYTES < DATASET_UPLOAD_BYTES <= MAX_UPLOAD_BYTES + 2 * 1024 * 1024
