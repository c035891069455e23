"""Tests for beryl.rowhash: the per-row key the dataset is deduplicated by."""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from beryl import rowhash
from beryl.rowhash import as_bools, as_numpy, row_hashes

_text = st.one_of(st.none(), st.text(max_size=40))
_number = st.one_of(
    st.none(), st.floats(allow_nan=False, allow_infinity=False), st.integers(-(2**40), 2**40)
)
_rows = st.lists(st.tuples(_text, _number, st.integers(-(2**62), 2**62)), min_size=1, max_size=40)


def table(rows: list[tuple[Any, ...]], text_type: pa.DataType | None = None) -> pa.Table:
    texts, numbers, labels = zip(*rows, strict=True)
    return pa.table(
        {
            "id": pa.array(texts, text_type or pa.large_string()),
            "x": pa.array([None if n is None else float(n) for n in numbers], pa.float64()),
            "y": pa.array(labels, pa.int64()),
        }
    )


@settings(max_examples=150, deadline=None)
@given(_rows, st.integers(1, 7))
def test_a_row_hashes_the_same_whatever_surrounds_it(
    rows: list[tuple[Any, ...]], size: int
) -> None:
    whole = table(rows)
    hashes = row_hashes(whole)
    # alone, in another table's slice, in other chunks, or with the other string type
    alone = np.concatenate([row_hashes(whole.slice(i, 1)) for i in range(len(rows))])
    chunked = pa.Table.from_batches(whole.to_batches(max_chunksize=size))
    assert hashes.tolist() == alone.tolist()
    assert hashes.tolist() == row_hashes(chunked).tolist()
    assert hashes.tolist() == row_hashes(table(rows, pa.string())).tolist()
    # equal rows hash alike; with 64 bits, different rows never collide at this size
    normal = [(t, None if n is None else float(n) + 0.0, y) for t, n, y in rows]
    for i, a in enumerate(normal):
        for j, b in enumerate(normal):
            assert (hashes[i] == hashes[j]) == (a == b), (a, b)


def test_values_that_mean_the_same_hash_alike_and_others_do_not() -> None:
    rows = [("", 0.0, 1), (None, -0.0, 1), ("", -0.0, 1), ("a", None, 1), ("a", float("nan"), 1)]
    hashes = row_hashes(table(rows))
    assert hashes[0] == hashes[2]  # -0.0 is 0.0
    assert hashes[0] != hashes[1]  # missing text is not empty text
    assert hashes[3] == hashes[4]  # a missing number is NaN
    padded = row_hashes(table([("abcdefgh", 1.0, 0), ("abcdefgh\x00", 1.0, 0)]))
    assert padded[0] != padded[1]  # the length counts, not just the zero-padded words


def test_the_hash_is_stable_across_releases() -> None:
    """Stored datasets hold these hashes: changing the function needs a new VERSION."""
    rows = [("corp-0001", 115.0, 1), (None, None, 0), ("ünïcödé and a long identifier", 2.5, 0)]
    assert rowhash.VERSION == 2
    assert row_hashes(table(rows)).tolist() == [
        5522233926095054929,
        9301260503000292573,
        10889431566749232572,
    ]


def test_numpy_views_of_arrow_buffers_respect_offsets() -> None:
    values = pa.array([1.5, 2.5, 3.5, 4.5]).slice(1, 2)
    assert as_numpy(values, np.float64).tolist() == [2.5, 3.5]
    mask = pa.array([True, False, True, True, False]).slice(2)
    assert as_bools(mask).tolist() == [True, True, False]
