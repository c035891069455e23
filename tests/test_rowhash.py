"""Tests for beryl.data.rowhash: the per-row key the dataset is deduplicated by."""

from __future__ import annotations

import itertools
import time
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from beryl.data import rowhash
from beryl.data.rowhash import as_bools, as_numpy, row_hashes

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
    """Stored datasets hold these hashes: changing the function needs a new VERSION.

    Version 3 hashes text longer than 8 KiB by segments; everything else hashes as in 2.
    """
    rows = [("corp-0001", 115.0, 1), (None, None, 0), ("ünïcödé and a long identifier", 2.5, 0)]
    assert rowhash.VERSION == 3
    assert row_hashes(table(rows)).tolist() == [
        5522233926095054929,
        9301260503000292573,
        10889431566749232572,
    ]
    texts = pa.table({"t": pa.array(["x" * n for n in (8192, 8193, 3 * 2**20)], pa.large_string())})
    assert row_hashes(texts).tolist() == [
        5420583379759508740,  # as version 2 (one segment)
        11499990186691068490,
        14502441913886664937,
    ]


_long_text = st.one_of(
    st.none(),
    st.builds(
        lambda c, n, tail: c * n + tail,
        st.sampled_from("ab\u00e9"),
        st.integers(0, 40_000),
        st.text(max_size=20),
    ),
)


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.tuples(_long_text, st.integers(0, 3)), min_size=1, max_size=6), st.integers(1, 4)
)
def test_long_text_hashes_the_same_wherever_it_appears(
    rows: list[tuple[str | None, int]], size: int
) -> None:
    """Values around and across the segment length (8 KiB), alone, sliced or chunked."""
    whole = pa.table(
        {
            "t": pa.array([t for t, _ in rows], pa.large_string()),
            "y": pa.array([y for _, y in rows], pa.int64()),
        }
    )
    hashes = row_hashes(whole)
    alone = np.concatenate([row_hashes(whole.slice(i, 1)) for i in range(len(rows))])
    chunked = pa.Table.from_batches(whole.to_batches(max_chunksize=size))
    assert hashes.tolist() == alone.tolist() == row_hashes(chunked).tolist()
    for i, a in enumerate(rows):
        for j, b in enumerate(rows):
            assert (hashes[i] == hashes[j]) == (a == b), (i, j)


def test_segments_are_not_interchangeable() -> None:
    """A long value is more than its segments: order, length and boundaries all count."""
    a, b = "a" * 8192, "b" * 8192
    values = [a + b, b + a, a + b + "\x00", a + b[:-1], (a + b) * 600, (b + a) * 600]
    hashes = row_hashes(pa.table({"t": pa.array(values, pa.large_string())})).tolist()
    assert len(set(hashes)) == len(values)


@pytest.mark.timeout(60)
def test_hashing_cost_is_linear_in_the_bytes_of_a_value() -> None:
    """Two values of 10 and 20 MB in one row took 145 s (a NumPy step per 8 bytes of the
    longest value); now doubling the values at most about doubles the time."""

    def seconds(megabytes: int) -> float:
        size = megabytes * 2**20
        big = pa.table(
            {
                "a": pa.array(["a" * size], pa.large_string()),
                "b": pa.array(["b" * (2 * size)], pa.large_string()),
            }
        )
        best = float("inf")
        for _ in range(2):
            start = time.perf_counter()
            row_hashes(big)
            best = min(best, time.perf_counter() - start)
        return best

    assert seconds(10) < 10  # the row of the report: 10 and 20 MB
    times = [seconds(megabytes) for megabytes in (4, 8, 16)]
    for before, after in itertools.pairwise(times):
        assert after < 3 * max(before, 0.02), times  # twice the bytes, at most ~3x the time


def test_numpy_views_of_arrow_buffers_respect_offsets() -> None:
    values = pa.array([1.5, 2.5, 3.5, 4.5]).slice(1, 2)
    assert as_numpy(values, np.float64).tolist() == [2.5, 3.5]
    mask = pa.array([True, False, True, True, False]).slice(2)
    assert as_bools(mask).tolist() == [True, True, False]
