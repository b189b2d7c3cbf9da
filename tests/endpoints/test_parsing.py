"""Parsing uploads: text, Markdown, PDF and CSV from tests/data, and bad files refused by name."""

from __future__ import annotations

import importlib.util

import pytest

from endpoints.conftest import DATA
from trestle.endpoints.retrieval.chunking import ChunkingOptions
from trestle.endpoints.retrieval.ingest import chunks_of
from trestle.endpoints.retrieval.parsing import parse_file
from trestle.errors import BadRequest


def read(name: str) -> bytes:
    return (DATA / name).read_bytes()


def test_the_committed_pdfs_are_what_the_generator_writes():
    spec = importlib.util.spec_from_file_location("make_pdfs", DATA.parent / "make_pdfs.py")
    make_pdfs = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make_pdfs)
    for name, pages in make_pdfs.PDFS.items():
        assert read(name) == make_pdfs.pdf_bytes(pages), name


def test_text_and_markdown_are_one_piece_each():
    [text] = parse_file("lighthouse.txt", read("lighthouse.txt"))
    assert "Mirela Voss" in text.text and text.data == {}
    [markdown] = parse_file("garden.md", read("garden.md"))
    assert markdown.text.startswith("# Community garden") and "5000 litres" in markdown.text


def test_pdf_gives_one_piece_per_page_with_its_number():
    pages = parse_file("comet.pdf", read("comet.pdf"))
    assert [p.data["page"] for p in pages] == [1, 2]
    assert "every 83 years" in pages[0].text
    assert "Lucia Ferrante" in pages[1].text


def test_csv_rows_keep_their_columns_and_are_never_split():
    rows = parse_file("staff.csv", read("staff.csv"))
    assert [r.data for r in rows] == [
        {"name": "Priya Raman", "department": "Finance", "extension": "4417"},
        {"name": "Tomas Okafor", "department": "Security", "extension": "2290"},
        {"name": "Wen Hollis", "department": "Payroll", "extension": "3305"},
    ]
    assert rows[1].text == "name: Tomas Okafor\ndepartment: Security\nextension: 2290"
    long_row = "a,b\n" + "x " * 200 + ",y\n"
    [piece] = parse_file("long.csv", long_row.encode())
    [chunk] = chunks_of([piece], ChunkingOptions(size=50, overlap=0))
    assert chunk.data["a"].startswith("x x") and chunk.data["b"] == "y"


def test_csv_with_semicolons_and_a_bom():
    rows = parse_file("eu.csv", "\ufeffcity;country\nLyon;France\n".encode())
    assert [r.data for r in rows] == [{"city": "Lyon", "country": "France"}]


@pytest.mark.parametrize(
    ("name", "content", "words"),
    [
        ("notes.docx", b"x", "unsupported file type '.docx'"),
        ("noext", b"x", "unsupported file type '(none)'"),
        ("latin1.txt", "caf\u00e9".encode("latin-1"), "not UTF-8"),
        ("broken.pdf", b"%PDF-1.4\nnot really", "not a readable PDF"),
        ("empty.csv", b"", "no header row"),
        ("wide.csv", (",".join(f"c{i}" for i in range(300)) + "\n").encode(), "columns"),
    ],
)
def test_bad_files_are_refused_by_name(name, content, words):
    with pytest.raises(BadRequest) as caught:
        parse_file(name, content)
    assert name in caught.value.message and words in caught.value.message
    assert caught.value.param == "files"


def test_empty_documents_give_no_pieces():
    assert parse_file("blank.txt", b"  \n\n ") == []
    assert parse_file("header-only.csv", b"a,b\n") == []
