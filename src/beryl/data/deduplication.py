"""Deduplication of new rows against each other and against the stored dataset, by row hash.

Files are collected until about ``_GROUP_BYTES`` of data, then deduplicated together: one sort
of the group's row hashes finds the repeated ones, and set intersections with the dataset's
sorted hash runs (and the earlier groups of the pass) find the known ones.

The pass's kept hashes are sorted runs that merge like a binary counter: a new group's run
merges with the last one while that is at most twice its size. A hash is merged about
``log2(groups)`` times and a group is checked against as many runs, so a pass costs
``n log n`` however many groups it has (one growing sorted array would cost ``n * groups``).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from beryl.data._batchfiles import BatchWriter
from beryl.data.manifest import FileRecord
from beryl.data.rowhash import as_bools, row_hashes

# Data read (Arrow bytes) before it is deduplicated and written: two groups at most are held,
# one being written while the next is read, so this bounds memory whatever the files' width.
_GROUP_BYTES = 128 * 2**20


class Deduplicator:
    """Keeps the first occurrence of every row not yet in the dataset, a group of files at a time.

    Files are collected until about ``_GROUP_BYTES`` of data, then deduplicated together: one
    sort of the group's row hashes finds the repeated ones, and set intersections with the
    dataset's sorted hash runs (and the earlier groups of this pass) find the known ones. Only
    rows whose hash is repeated or known are looked at one by one, so the common case costs a
    sort.
    """

    def __init__(self, stored: list[np.ndarray], writer: BatchWriter) -> None:
        self.runs = [run for run in stored if len(run)]
        self.kept: list[np.ndarray] = []  # the pass's kept hashes so far: sorted runs
        self.writer = writer
        self.records: list[FileRecord] = []
        self.group: list[tuple[FileRecord, pa.Table, np.ndarray]] = []
        self.size = 0

    def add(self, record: FileRecord, table: pa.Table) -> None:
        self.group.append((record, table, row_hashes(table)))
        self.size += table.nbytes
        if self.size >= _GROUP_BYTES:
            self.flush()

    def flush(self) -> None:
        if not self.group:
            return
        hashes = np.concatenate([h for _, _, h in self.group])
        ordered = np.sort(hashes)
        repeated = ordered[1:] == ordered[:-1]
        unique = ordered[np.concatenate([[True], ~repeated])]
        known = [_intersect(run, unique) for run in (*self.runs, *self.kept) if len(run)]
        drop = np.concatenate([*known, _distinct(ordered[1:][repeated])])
        keep = np.ones(len(hashes), dtype=bool)
        if drop.size:
            rows = np.flatnonzero(as_bools(pc.is_in(_arrow(hashes), value_set=_arrow(drop))))
            keep[rows] = False
            # a repeated value not in the dataset stays once: at its first row
            first_rows = rows[_first_occurrences(hashes[rows])]
            in_dataset = np.sort(np.concatenate(known)) if known else np.empty(0, np.uint64)
            keep[first_rows] = ~_contains(in_dataset, hashes[first_rows])
        self.writer.drain()  # the previous group is written: at most two groups in memory
        start = 0
        for record, table, _ in self.group:
            stop = start + table.num_rows
            mask = keep[start:stop]
            kept = int(mask.sum())
            record.rows_kept += kept  # a file read in blocks comes in several tables
            fresh = table if kept == table.num_rows else table.filter(_arrow_mask(mask))
            self.writer.append(fresh, hashes[start:stop][mask])
            if not self.records or self.records[-1] is not record:
                self.records.append(record)
            start = stop
        self._keep(np.sort(hashes[keep]))
        self.group, self.size = [], 0

    def _keep(self, run: np.ndarray) -> None:
        """Add a sorted run of kept hashes; merge runs until each is over twice the next."""
        runs = self.kept
        runs.append(run)
        while len(runs) > 1 and len(runs[-2]) <= 2 * len(runs[-1]):
            last = runs.pop()
            runs[-1] = _merge(runs[-1], last)


def _arrow_mask(mask: np.ndarray) -> pa.Array:
    """A NumPy boolean mask as an Arrow one (bit-packed, as Arrow stores booleans)."""
    bits = np.packbits(mask, bitorder="little")
    return pa.Array.from_buffers(pa.bool_(), len(mask), [None, pa.py_buffer(bits)])


def _distinct(ordered: np.ndarray) -> np.ndarray:
    """The distinct values of a sorted array."""
    if len(ordered) < 2:
        return ordered
    distinct: np.ndarray = ordered[np.concatenate([[True], ordered[1:] != ordered[:-1]])]
    return distinct


def _first_occurrences(values: np.ndarray) -> np.ndarray:
    """The position of the first occurrence of each distinct value (a stable sort keeps the
    earliest of equal values first)."""
    order = np.argsort(values, kind="stable")
    ordered = values[order]
    starts = np.ones(len(values), dtype=bool)
    starts[1:] = ordered[1:] != ordered[:-1]
    return np.sort(order[starts])


def _arrow(hashes: np.ndarray) -> pa.Array:
    """Hashes as an Arrow array, sharing memory (``pa.array`` would import pandas to check)."""
    values = np.ascontiguousarray(hashes, dtype=np.uint64)
    return pa.Array.from_buffers(pa.uint64(), len(values), [None, pa.py_buffer(values)])


def _intersect(run: np.ndarray, unique: np.ndarray) -> np.ndarray:
    """The values of sorted ``unique`` that are in the sorted ``run`` (both without repeats)."""
    if len(unique) * 16 < len(run):  # a few binary searches beat merging the big run
        found: np.ndarray = unique[_contains(run, unique)]
        return found
    merged = _merge(run, unique)
    both: np.ndarray = merged[1:][merged[1:] == merged[:-1]]
    return both


def _merge(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """Two sorted arrays as one: a stable sort (timsort) of their concatenation merges the two
    runs in linear time, where ``intersect1d``'s quicksort sorts them again from scratch."""
    merged = np.concatenate((first, second))
    merged.sort(kind="stable")
    return merged


def _contains(sorted_hashes: np.ndarray, hashes: np.ndarray) -> np.ndarray:
    """Which ``hashes`` occur in the sorted array: a binary search each, no re-sort of the
    (large) existing side."""
    if sorted_hashes.size == 0:
        return np.zeros(len(hashes), dtype=bool)
    position = np.searchsorted(sorted_hashes, hashes)
    position[position == sorted_hashes.size] = 0
    return np.asarray(sorted_hashes[position] == hashes)
