"""`trestle datasets ...` against a real `trestle serve` (built-in embeddings model), with the
documents of tests/data."""

from __future__ import annotations

import uuid

from endpoints.conftest import DATA
from endpoints.test_datasets_api import embeddings_ready


def test_the_dataset_commands_end_to_end(server):
    embeddings_ready(server)
    name = f"cli-{uuid.uuid4().hex[:8]}"
    created = server.cli_json("datasets", "create", name)
    assert created["name"] == name
    assert name in [d["name"] for d in server.cli_json("datasets", "list")["data"]]

    files = [str(DATA / n) for n in ("railway.pdf", "planets.csv", "bakery.txt")]
    uploaded = server.cli_json("datasets", "upload", name, *files, "--metadata", '{"team": "town"}',
                               "--chunk-size", "300", "--chunk-overlap", "50")
    docs = {d["name"]: d for d in uploaded["documents"]}
    assert sorted(docs) == ["bakery.txt", "planets.csv", "railway.pdf"]
    assert docs["planets.csv"]["rows"] == 3 and docs["bakery.txt"]["metadata"]["team"] == "town"

    found = server.cli_json("datasets", "search", created["id"], "Which planet has rings of water ice?",
                            "--top-k", "2", "--alpha", "0.5", "--filter", '{"team": "town"}')
    top = found["results"][0]
    assert top["metadata"]["documentId"] == docs["planets.csv"]["id"]
    assert top["data"]["planet"] == "Saturn"
    assert server.cli_json("datasets", "search", name, "Saturn",
                           "--filter", '{"team": "nobody"}')["results"] == []

    rows = server.cli_json("datasets", "rows", name, "--limit", "1000")["data"]
    assert len(rows) == sum(d["rows"] for d in docs.values())
    text = server.cli("datasets", "rows", name, "--document", docs["planets.csv"]["id"]).stdout
    assert "Saturn" in text and "Bellerophon" not in text
    assert "planets.csv" in server.cli("datasets", "documents", name).stdout

    railway = docs["railway.pdf"]["id"]
    deleted = server.cli_json("datasets", "delete-document", name, railway)
    assert deleted["id"] == railway
    left = server.cli_json("datasets", "rows", name, "--limit", "1000")["data"]
    assert len(left) == len(rows) - docs["railway.pdf"]["rows"]
    hits = server.cli_json("datasets", "search", name, "Bellerophon steam locomotive",
                           "--top-k", "50", "--alpha", "0")["results"]
    assert all(h["metadata"]["documentId"] != railway for h in hits)

    refused = server.cli("datasets", "delete", name, check=False)
    assert refused.returncode != 0 and "--yes" in refused.stderr
    assert server.cli_json("datasets", "delete", name, "--yes")["id"] == created["id"]
    gone = server.cli("datasets", "search", name, "anything", check=False)
    assert gone.returncode != 0 and "404" in gone.stderr and name in gone.stderr


def test_a_bad_file_fails_the_upload_and_says_which(server, tmp_path):
    embeddings_ready(server)
    name = f"cli-{uuid.uuid4().hex[:8]}"
    server.cli("datasets", "create", name)
    broken = tmp_path / "broken.pdf"
    broken.write_bytes(b"%PDF-1.4 not a real pdf")
    res = server.cli("datasets", "upload", name, str(DATA / "garden.md"), str(broken), check=False)
    assert res.returncode != 0 and "broken.pdf" in res.stderr
    assert server.cli_json("datasets", "documents", name)["data"] == []
    bad = server.cli("datasets", "search", name, "x", "--filter", "[1]", check=False)
    assert bad.returncode != 0 and "JSON object" in bad.stderr
