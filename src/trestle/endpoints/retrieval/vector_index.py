"""`VectorIndex`: one dataset's vectors in memory, for the SQLite store's search.

    index = VectorIndex(version, ids, matrix)       # chunk ids (ascending), unit float32 rows
    index.nearest(query, 100)                       # {chunk_id: cosine}, best 100
    index.similarity(chunk_ids, query)              # exact cosines of these chunks

Below `IVF_MIN_ROWS` chunks the search is exact: one matrix product and a partial sort (recall 1;
20,000 chunks take about 2 ms). From `IVF_MIN_ROWS` on, an inverted-file index from faiss narrows
it down: k-means splits the vectors into `nlist` = √n lists, each vector is kept as 8-bit
scalars in the list of its nearest centroid, and a query reads only the `nprobe` lists nearest
to it (`nprobe` = max(32, nlist / 10): about a tenth of the vectors). The candidates it returns
are scored again exactly from the float32 matrix, so the order within them is exact; what the
index can miss is a vector outside the lists it read (recall@10 ≥ 0.99 on bench/retrieval.py).

An inverted file was chosen over HNSW (usearch, faiss) because it trains in seconds (a few
seconds at 100,000 vectors on one core, against a minute or more for HNSW) and because its recall
does not collapse on tight clusters of near-duplicates, where HNSW's graph missed a third of the
true neighbours in our measurements.

The index is trained by `build_ivf` in a worker thread (this module owns faiss: it runs with one
OpenMP thread, because on a busy machine waking more costs more than it gives). Until it is
ready, searches are exact. Changes (`added`, `removed`) are applied to the matrix and to the
index at once, on the event loop's thread, which is also where the index is searched: faiss
indexes are not safe to change and search concurrently. A build works on a snapshot; the changes
made while it runs are kept (`pending`) and replayed on the new index before it is used.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import faiss
import numpy as np
from threadpoolctl import ThreadpoolController

from trestle.store.datasets import Change

IVF_MIN_ROWS = 20_000  # below this, exact search (a few ms) beats the index's build and recall
REBUILD_GROWTH = 2  # retrain when the dataset has grown to this many times its trained size
MAX_RANGES = 16  # runs of consecutive chunk ids that `ranges()` reports (else: None)
# One BLAS thread per product: a matrix-vector product is memory-bound, and on a busy machine
# waking BLAS threads cost 30 ms where the product itself takes 0.2 ms (2,000 rows; 10k: 32 → 6).
_BLAS = ThreadpoolController()
_NOT_YET: Any = object()


def build_ivf(ids: np.ndarray, matrix: np.ndarray) -> faiss.Index:
    """An inverted-file index (8-bit scalars, inner product) over these unit vectors, keyed by
    chunk id. CPU-bound for seconds at 100,000 rows: call it in a worker thread."""
    faiss.omp_set_num_threads(1)  # this thread's OpenMP team (the loop's thread sets its own)
    nlist = min(4096, max(16, round(math.sqrt(len(ids)))))
    index = faiss.index_factory(matrix.shape[1], f"IVF{nlist},SQ8", faiss.METRIC_INNER_PRODUCT)
    index.train(matrix)
    index.add_with_ids(matrix, ids)
    index.nprobe = max(32, nlist // 10)
    return index


def exact_nearest(ids: np.ndarray, matrix: np.ndarray, query: np.ndarray, n: int,
                  allowed: np.ndarray | None = None) -> dict[int, float]:
    """`VectorIndex.nearest` by one matrix product over these rows (or the `allowed` ones):
    safe to run in a thread, on arrays taken from the index on the loop's thread."""
    with _BLAS.limit(limits=1, user_api="blas"):
        if allowed is not None:
            sims, keys = matrix[np.searchsorted(ids, allowed)] @ query, allowed
        else:
            sims, keys = matrix @ query, ids
    n = min(n, len(keys))
    if n == 0:
        return {}
    top = np.argpartition(-sims, n - 1)[:n]
    return dict(zip(keys[top].tolist(), sims[top].tolist(), strict=True))


@dataclass
class VectorIndex:
    version: int
    ids: np.ndarray  # int64, ascending
    matrix: np.ndarray  # (len(ids), dimensions) float32, unit rows
    ivf: faiss.Index | None = field(default=None, repr=False, compare=False)
    trained_rows: int = 0  # rows `ivf` was trained on
    pending: list[Change] | None = field(default=None, repr=False, compare=False)
    _ranges: list[tuple[int, int]] | None = field(default=_NOT_YET, init=False, repr=False,
                                                  compare=False)

    # search

    def wants_ivf(self) -> bool:
        """Whether an index should be (re)built: the dataset is large enough and has none, or
        has grown past `REBUILD_GROWTH` times the rows its index was trained on."""
        if self.pending is not None or len(self.ids) < IVF_MIN_ROWS:
            return False
        return self.ivf is None or len(self.ids) >= REBUILD_GROWTH * self.trained_rows

    def uses_ivf(self, allowed: np.ndarray | None) -> bool:
        """Whether `nearest` goes through the index (else: one exact matrix product). A filter
        that leaves fewer than `IVF_MIN_ROWS` chunks is searched exactly among them."""
        return self.ivf is not None and (allowed is None or len(allowed) >= IVF_MIN_ROWS)

    def scans(self, allowed: np.ndarray | None) -> int:
        """How many rows `nearest` multiplies exactly (0 when it uses the index)."""
        if self.uses_ivf(allowed):
            return 0
        return len(self.ids) if allowed is None else len(allowed)

    def nearest(self, query: np.ndarray, n: int,
                allowed: np.ndarray | None = None) -> dict[int, float]:
        """The (up to) `n` chunks most similar to `query` (unit float32), as {chunk id: cosine},
        among the `allowed` chunk ids if given (ascending, all in the index)."""
        if not self.uses_ivf(allowed):
            return exact_nearest(self.ids, self.matrix, query, n, allowed)
        keys = self._ivf_search(query, n, allowed)
        return dict(zip(keys.tolist(), self.similarity(keys, query).tolist(), strict=True))

    def similarity(self, chunk_ids: np.ndarray, query: np.ndarray) -> np.ndarray:
        """Exact cosines of these chunks (which must be in the index) to `query`."""
        return self.matrix[self.rows_of(chunk_ids)] @ query

    def _ivf_search(self, query: np.ndarray, n: int, allowed: np.ndarray | None) -> np.ndarray:
        faiss.omp_set_num_threads(1)
        params = None
        if allowed is not None:
            params = faiss.SearchParametersIVF(sel=faiss.IDSelectorBatch(allowed),
                                               nprobe=self.ivf.nprobe)
        _, found = self.ivf.search(query.reshape(1, -1), n, params=params)
        return found[0][found[0] >= 0]  # all in `ids`: changes reach the index and them at once

    # the dataset's id ranges, for the keyword query

    def ranges(self) -> list[tuple[int, int]] | None:
        """The ids as (first, last) runs of consecutive ids, or None past `MAX_RANGES` runs.
        Every id of a run belongs to this dataset (ids are unique across datasets)."""
        if self._ranges is _NOT_YET:
            breaks = np.flatnonzero(np.diff(self.ids) != 1)
            if len(breaks) >= MAX_RANGES:
                self._ranges = None
            else:
                starts = [self.ids[0], *self.ids[breaks + 1]] if len(self.ids) else []
                ends = [*self.ids[breaks], self.ids[-1]] if len(self.ids) else []
                self._ranges = [(int(a), int(b)) for a, b in zip(starts, ends, strict=True)]
        return self._ranges

    def rows_of(self, chunk_ids: np.ndarray) -> np.ndarray:
        """Row numbers of these chunk ids (which must be in the index)."""
        return np.searchsorted(self.ids, chunk_ids)

    # changes

    def added(self, change: Change) -> None:
        """New rows, or rows whose vector was replaced (an upsert: their old entry goes)."""
        replaced = change.chunk_ids[np.isin(change.chunk_ids, self.ids)] if (
            len(self.ids) and len(change.chunk_ids) and change.chunk_ids.min() <= self.ids[-1]
        ) else change.chunk_ids[:0]
        if len(replaced):
            keep = ~np.isin(self.ids, replaced)
            self.ids, self.matrix = self.ids[keep], self.matrix[keep]
        self.ids = np.concatenate([self.ids, change.chunk_ids])
        self.matrix = np.concatenate([self.matrix, change.vectors.astype(np.float32)])
        if len(self.ids) > 1 and not np.all(self.ids[1:] > self.ids[:-1]):
            order = np.argsort(self.ids, kind="stable")
            self.ids, self.matrix = self.ids[order], self.matrix[order]
        if self.ivf is not None:
            _add(self.ivf, change, replaced)
        self._changed(change)

    def removed(self, change: Change) -> None:
        keep = ~np.isin(self.ids, change.chunk_ids)
        self.ids, self.matrix = self.ids[keep], self.matrix[keep]
        if self.ivf is not None:
            self.ivf.remove_ids(change.chunk_ids.astype(np.int64))
        self._changed(change)

    def _changed(self, change: Change) -> None:
        self.version = change.version
        self._ranges = _NOT_YET
        if self.pending is not None:
            self.pending.append(change)

    # building

    def snapshot(self) -> tuple[np.ndarray, np.ndarray]:
        """The rows to build an index from; changes from now on are kept for `use`.
        (Arrays are replaced on change, never written in place, so the snapshot stays valid.)"""
        self.pending = []
        return self.ids, self.matrix

    def use(self, ivf: faiss.Index | None, trained_rows: int) -> None:
        """Adopt an index built from `snapshot()`'s rows: replay the changes made since."""
        pending, self.pending = self.pending or [], None
        if ivf is None:
            return
        for change in pending:
            if change.vectors is not None:
                _add(ivf, change, change.chunk_ids)
            else:
                ivf.remove_ids(change.chunk_ids.astype(np.int64))
        self.ivf, self.trained_rows = ivf, trained_rows


def _add(ivf: faiss.Index, change: Change, replaced: np.ndarray) -> None:
    if len(replaced):
        ivf.remove_ids(replaced.astype(np.int64))
    ivf.add_with_ids(change.vectors.astype(np.float32), change.chunk_ids.astype(np.int64))
