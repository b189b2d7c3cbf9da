"""`KeywordIndex`: BM25 over one large dataset's chunks in memory, for the SQLite store's search.

    index = read_keyword_index(db_path, dataset_id)    # in a worker thread: seconds at 100,000
    terms = Tokenizer().terms(["refund", "policies"])  # [["refund"], ["polici"]], as FTS5 stems
    index.best([t for found in terms for t in found], 100)   # {chunk_id: bm25}, best 100

Below `KEYWORD_MIN_ROWS` chunks, FTS5's `bm25()` ranks a query's matches in a few milliseconds.
It computes every matching chunk's score from its position lists, about 2 µs a match; a
four-word query matches a tenth of a large dataset, so that costs 15-20 ms at 100,000 chunks.
This index holds, for every term of the dataset, the chunks it occurs in and each one's
BM25 term weight, computed once; a query adds up a few arrays (1-2 ms at 100,000 chunks).

It is read from FTS5's own inverted index (`fts5vocab`), in one read transaction together with
the dataset's chunk ids and version, so the terms are FTS5's (porter stemmer, unicode61) and the
index is exactly the dataset at that version. It does not follow changes: after an upload or a
delete, the caller searches with FTS5 again until a new index has been read (`version` says
which dataset version this is).

Scores follow FTS5's bm25() formula (k1 = 1.2, b = 0.75), summed over the query's terms:

    idf(t)     = max(1e-6, ln((N - n(t) + 0.5) / (n(t) + 0.5)))
    score(c)   = sum over t of  idf(t) * f(t,c) * (k1 + 1) / (f(t,c) + k1 * (1 - b + b * |c| / avg))

with the dataset's own statistics: N its chunks, n(t) those holding t, |c| a chunk's length in
tokens and avg their mean. (FTS5's bm25() counts over every dataset in the store; with a single
dataset the two are the same.) Memory: 8 bytes per distinct term of each chunk, about 55 MB for
100,000 chunks of 100 words.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from urllib.parse import quote

import numpy as np

KEYWORD_MIN_ROWS = 20_000  # below this, FTS5's bm25() is fast enough and always current
TOKENIZE = "porter unicode61 remove_diacritics 2"  # as `chunks_fts` is created (migration 0002)
K1, B = 1.2, 0.75  # FTS5's bm25() parameters


@dataclass
class KeywordIndex:
    version: int  # the dataset's version it was read at
    ids: np.ndarray  # the dataset's chunk ids, ascending (int64)
    postings: dict[str, tuple[np.ndarray, np.ndarray]]  # term -> (positions in ids, weights)

    def best(self, terms: list[str], k: int, allowed: np.ndarray | None = None) -> dict[int, float]:
        """{chunk_id: BM25} of the `k` best chunks holding any of `terms` (a term given twice
        counts twice, as a phrase given twice does in FTS5), among `allowed` chunk ids (sorted,
        all in the dataset) if given. Ties at the cut: lower chunk id first."""
        n = len(self.ids)
        scores = np.zeros(n, dtype=np.float64)
        for term in terms:
            found = self.postings.get(term)
            if found is None:
                continue
            positions, weights = found
            df = len(positions)
            idf = max(1e-6, float(np.log((n - df + 0.5) / (df + 0.5))))
            scores[positions] += idf * weights
        if allowed is not None:
            where = np.searchsorted(self.ids, allowed)
            candidates = where[scores[where] > 0]
        else:
            candidates = np.flatnonzero(scores > 0)
        if len(candidates) > k:
            values = scores[candidates]
            kth = np.partition(values, len(values) - k)[len(values) - k]  # the k-th best score
            above = candidates[values > kth]
            tied = candidates[values == kth][: k - len(above)]
            candidates = np.concatenate((above, tied))
        return dict(zip(self.ids[candidates].tolist(), scores[candidates].tolist(), strict=True))


def read_keyword_index(db_path: str, dataset_id: str) -> KeywordIndex | None:
    """The dataset's keyword index, read from the store's FTS5 index (None if the dataset is
    gone). Blocking and CPU-bound (about 4 s for 100,000 chunks of 100 words): call it in a
    worker thread. It opens its own read-only connection."""
    db = sqlite3.connect(f"file:{quote(db_path)}?mode=ro", uri=True, isolation_level=None)
    try:
        db.execute("CREATE VIRTUAL TABLE temp.fts_terms USING fts5vocab(main, chunks_fts, row)")
        db.execute(
            "CREATE VIRTUAL TABLE temp.fts_instances USING fts5vocab(main, chunks_fts, instance)"
        )
        db.execute("BEGIN")  # one snapshot: version, ids and postings agree
        row = db.execute("SELECT version FROM datasets WHERE id = ?", (dataset_id,)).fetchone()
        if row is None:
            return None
        ids = np.array(
            [i for (i,) in db.execute(
                "SELECT id FROM chunks WHERE dataset_id = ? ORDER BY id", (dataset_id,))],
            dtype=np.int64,
        )
        terms: list[tuple[str, np.ndarray, np.ndarray]] = []
        lengths = np.zeros(len(ids), dtype=np.float64)
        for (term,) in db.execute("SELECT term FROM temp.fts_terms").fetchall():
            (docs,) = db.execute(
                "SELECT group_concat(doc) FROM temp.fts_instances WHERE term = ?", (term,)
            ).fetchone()
            if docs is None:
                continue
            positions, counts = _occurrences(docs, ids)
            if len(positions):
                terms.append((term, positions, counts))
                lengths[positions] += counts
        db.execute("COMMIT")
    finally:
        db.close()
    if not terms:  # no chunk holds a word
        return KeywordIndex(row[0], ids, {})
    norm = K1 * (1 - B + B * lengths / lengths.mean())
    postings = {
        term: (positions, (counts * (K1 + 1) / (counts + norm[positions])).astype(np.float32))
        for term, positions, counts in terms
    }
    return KeywordIndex(row[0], ids, postings)


def _occurrences(docs: str, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """From one term's instances (`doc` of each, comma-separated, ascending): the positions in
    `ids` of the chunks holding it and how often each does (chunks of other datasets dropped)."""
    instances = np.fromstring(docs, dtype=np.int64, sep=",")  # text mode: not deprecated
    if np.any(instances[1:] < instances[:-1]):  # FTS5 lists them by rowid; not relied upon
        instances.sort()
    starts = np.flatnonzero(np.diff(instances, prepend=-1))
    chunks = instances[starts]
    counts = np.diff(starts, append=len(instances)).astype(np.float64)
    positions = np.searchsorted(ids, chunks)
    mine = positions < len(ids)
    mine[mine] = ids[positions[mine]] == chunks[mine]
    return positions[mine].astype(np.int32), counts[mine]


class Tokenizer:
    """Query words as FTS5 tokenises them for `chunks_fts` (lowercased, diacritics removed,
    Porter-stemmed), through a private in-memory FTS5 table. One thread at a time."""

    def __init__(self) -> None:
        self._db = sqlite3.connect(":memory:", check_same_thread=False)
        self._db.execute(f"CREATE VIRTUAL TABLE words USING fts5(word, tokenize='{TOKENIZE}')")
        self._db.execute("CREATE VIRTUAL TABLE tokens USING fts5vocab(words, instance)")

    def terms(self, words: list[str]) -> list[list[str]]:
        """Each word's tokens, in order (one for a plain word, none for punctuation)."""
        tokens: list[list[tuple[int, str]]] = [[] for _ in words]
        try:
            self._db.executemany("INSERT INTO words(rowid, word) VALUES (?, ?)", enumerate(words))
            for doc, offset, term in self._db.execute("SELECT doc, offset, term FROM tokens"):
                tokens[doc].append((offset, term))
        finally:
            self._db.rollback()  # the table stays empty
        return [[term for _, term in sorted(found)] for found in tokens]

    def close(self) -> None:
        self._db.close()
