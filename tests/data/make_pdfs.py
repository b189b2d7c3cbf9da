"""Writes the PDFs of tests/data/documents: `python tests/data/make_pdfs.py`.

A PDF written by hand (Helvetica text, one page per list of lines), so the test data needs no PDF
library beyond the pypdf that reads it. tests/endpoints/test_parsing.py checks that the committed
files are what this script writes.
"""

from __future__ import annotations

from pathlib import Path

DOCUMENTS = Path(__file__).parent / "documents"

PDFS: dict[str, list[list[str]]] = {
    "comet.pdf": [
        ["Comet Varga-7", "",
         "Comet Varga-7 returns to the inner solar system every 83 years.",
         "Its tail is made of ice and dust and stretches for millions of kilometres."],
        ["Observations",
         "It was last seen from Earth in 1947 by the astronomer Lucia Ferrante",
         "at the Monte Alto observatory."],
    ],
    "railway.pdf": [
        ["The Kestrel Valley railway", "",
         "The Kestrel Valley railway opened in 1868 with eleven stations.",
         "Its first steam locomotive was named Bellerophon.",
         "The line climbs to Thornback summit through a tunnel 640 metres long."],
    ],
    "museum.pdf": [
        ["The Marlowe museum", "",
         "The Marlowe museum holds a collection of 1200 antique clocks.",
         "The oldest clock in the collection was made in Nuremberg in 1540.",
         "Every clock is wound by hand on Monday mornings by the curator, Ezra Quint."],
    ],
}


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")


def pdf_bytes(pages: list[list[str]]) -> bytes:
    objects: list[bytes] = []
    n_pages = len(pages)
    kids = " ".join(f"{4 + 2 * i} 0 R" for i in range(n_pages))
    objects.append(b"<< /Type /Catalog /Pages 2 0 R >>")
    objects.append(f"<< /Type /Pages /Kids [{kids}] /Count {n_pages} >>".encode())
    objects.append(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>")
    for i, lines in enumerate(pages):
        ops = ["BT", "/F1 12 Tf", "14 TL", "72 720 Td"]
        for line in lines:
            ops.append(f"({_escape(line)}) Tj T*")
        ops.append("ET")
        stream = "\n".join(ops).encode("latin-1")
        objects.append(
            f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] "
            f"/Resources << /Font << /F1 3 0 R >> >> /Contents {5 + 2 * i} 0 R >>".encode()
        )
        objects.append(b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream")
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    for offset in offsets:
        out += b"%010d 00000 n \n" % offset
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1, xref,
    )
    return bytes(out)


def main() -> None:
    for name, pages in PDFS.items():
        (DOCUMENTS / name).write_bytes(pdf_bytes(pages))


if __name__ == "__main__":
    main()
