"""One 64-bit hash per row of an Arrow table: the key that deduplicates the dataset.

Two rows hash alike when every value is alike: numbers by value (``-0.0`` is ``0.0``, a missing
number is missing), text by its UTF-8 bytes, missing text apart from empty text. The hash depends
only on the row, never on the rest of the table, so the same row hashes the same in any file and
any pass; the dataset stores these hashes and compares every later row against them.

Arrow has no row-hash kernel and pandas' ``hash_pandas_object`` goes through Python objects for
text; this works on the Arrow buffers with NumPy, a few vectorised passes per column. Each value
goes into the row's hash through the SplitMix64 finaliser: numbers by their bits, text by its
length and then eight bytes at a time (a long text by segments of 8 KiB, so that the cost stays
linear in its bytes).

Arrow is imported by the functions that hash: every command reads ``VERSION`` (the manifest
records it), few of them hash a row.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import pyarrow as pa

# Stored in the dataset manifest; a dataset hashed otherwise is hashed again. 3: text longer
# than _SEGMENT_BYTES is hashed by segments (version 2 chained it whole, at a cost that grew
# with the longest value); shorter text, numbers and missing values hash as in version 2.
VERSION = 3

_U = np.uint64
_MISSING = _U(0x9E3779B97F4A7C15)
_TEXT = _U(0xC2B2AE3D27D4EB4F)
_ROW = _U(0x27D4EB2F165667C5)
_STEP = _U(0x100000001B3)
_LONG = _U(0x165667B19E3779F9)
_SEGMENT = _U(0x85EBCA77C2B2AE63)
_SEGMENT_WORDS = 1024
_SEGMENT_BYTES = 8 * _SEGMENT_WORDS


def _mix(x: np.ndarray) -> np.ndarray:
    """SplitMix64's finaliser, in place on a uint64 array (wrapping arithmetic)."""
    x ^= x >> _U(30)
    x *= _U(0xBF58476D1CE4E5B9)
    x ^= x >> _U(27)
    x *= _U(0x94D049BB133111EB)
    x ^= x >> _U(31)
    return x


def as_numpy(array: pa.Array, dtype: type[np.generic]) -> np.ndarray:
    """A fixed-width Arrow array without nulls as a NumPy view of its buffer.

    (pyarrow's ``to_numpy`` imports pandas, a third of a second this path never needs.)
    """
    data = array.buffers()[1]
    values = np.frombuffer(data, dtype=dtype) if data is not None else np.empty(0, dtype)
    return values[array.offset : array.offset + len(array)]


def as_bools(mask: pa.Array) -> np.ndarray:
    """A boolean Arrow array without nulls as a NumPy one."""
    import pyarrow as pa

    return as_numpy(mask.cast(pa.uint8()), np.uint8).view(bool)


def row_hashes(table: pa.Table) -> np.ndarray:
    """The hash of every row of ``table`` (float, integer and string columns)."""
    rows = np.full(table.num_rows, _ROW, dtype=np.uint64)
    for column in table.columns:
        array = column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)
        rows *= _STEP
        rows ^= _column_hashes(array)
        _mix(rows)
    return rows


def _column_hashes(array: pa.Array) -> np.ndarray:
    import pyarrow as pa
    import pyarrow.compute as pc

    kind = array.type
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        return _text_hashes(array)
    if pa.types.is_floating(kind):
        values = as_numpy(array.cast(pa.float64()), np.float64).copy()
        if array.null_count:  # the buffer holds arbitrary values at missing slots
            values[as_bools(pc.is_null(array))] = np.nan
        values[values == 0.0] = 0.0  # -0.0 is 0.0
        bits = values.view(np.uint64)
        bits[np.isnan(values)] = _MISSING
        return bits
    if pa.types.is_integer(kind) or pa.types.is_boolean(kind):
        if array.null_count:
            array = array.cast(pa.float64())
            return _column_hashes(array)
        return as_numpy(array.cast(pa.int64()), np.int64).view(np.uint64)
    raise TypeError(f"cannot hash a column of type {kind}")


def _text_hashes(array: pa.Array) -> np.ndarray:
    """Per value: its byte length, then each 8-byte word (zero padded), through the mixer.

    A value longer than ``_SEGMENT_BYTES`` is cut into segments of that size; each segment is
    chained from ``_SEGMENT`` like a value of its own, and the value's hash chains its length
    (with ``_LONG``) and the segments' hashes in order (by segments again when there are many).
    Every chain is at most ``_SEGMENT_WORDS`` long and all of them run side by side, so the cost
    is linear in the bytes whatever the longest value: a chain over the whole of a 20 MB value
    would take millions of NumPy steps of one element each.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    count = len(array)
    offset_type = np.int64 if pa.types.is_large_string(array.type) else np.int32
    _, offsets_buffer, data_buffer = array.buffers()
    offsets = np.frombuffer(offsets_buffer, dtype=offset_type)
    offsets = offsets[array.offset : array.offset + count + 1]
    starts = offsets[:-1].astype(np.int64)
    lengths = offsets[1:].astype(np.int64) - starts
    data = np.frombuffer(data_buffer, dtype=np.uint8) if data_buffer is not None else np.empty(0)
    end = int(offsets[-1])
    padded = np.zeros(end + 8, dtype=np.uint8)  # every 8-byte read stays inside
    padded[:end] = data[:end]
    words = np.lib.stride_tricks.sliding_window_view(padded, 8)
    seeds = _mix(lengths.astype(np.uint64) ^ _TEXT)
    long = np.flatnonzero(lengths > _SEGMENT_BYTES)
    if not long.size:
        hashes = _chain_bytes(seeds, words, starts, lengths)
    else:
        pieces = np.ones(count, dtype=np.int64)
        pieces[long] = -(-lengths[long] // _SEGMENT_BYTES)
        owner = np.repeat(np.arange(count), pieces)
        first = np.cumsum(pieces) - pieces
        index = np.arange(len(owner)) - first[owner]
        piece_seeds = seeds[owner]
        piece_seeds[pieces[owner] > 1] = _SEGMENT
        digests = _chain_bytes(
            piece_seeds,
            words,
            starts[owner] + index * _SEGMENT_BYTES,
            np.minimum(lengths[owner] - index * _SEGMENT_BYTES, _SEGMENT_BYTES),
        )
        hashes = digests[first]
        long_seeds = _mix(lengths[long].astype(np.uint64) ^ _LONG)
        hashes[long] = _fold(long_seeds, digests, first[long], pieces[long])
    if array.null_count:
        hashes[as_bools(pc.is_null(array))] = _MISSING
    return hashes


def _chain_bytes(
    hashes: np.ndarray, words: np.ndarray, starts: np.ndarray, lengths: np.ndarray
) -> np.ndarray:
    """Chain each run of bytes (``starts``, ``lengths``) into its hash, 8 bytes at a time."""
    active = np.flatnonzero(lengths > 0)
    step = 0
    while active.size:
        remaining = lengths[active] - step
        word = np.ascontiguousarray(words[starts[active] + step]).view("<u8").ravel()
        short = remaining < 8
        if short.any():
            bits = (remaining[short] * 8).astype(np.uint64)
            word[short] &= (_U(1) << bits) - _U(1)
        mixed = hashes[active] ^ word
        hashes[active] = _mix(mixed)
        step += 8
        active = active[remaining > 8]
    return hashes


def _fold(
    hashes: np.ndarray, values: np.ndarray, starts: np.ndarray, counts: np.ndarray
) -> np.ndarray:
    """Chain each run of 64-bit ``values`` into its hash; a run longer than ``_SEGMENT_WORDS`` is
    cut into segments, each chained from ``_SEGMENT``, whose hashes are then folded in order."""
    long = np.flatnonzero(counts > _SEGMENT_WORDS)
    direct = np.flatnonzero(counts <= _SEGMENT_WORDS)
    if direct.size:
        hashes[direct] = _chain_words(hashes[direct], values, starts[direct], counts[direct])
    if long.size:
        pieces = -(-counts[long] // _SEGMENT_WORDS)
        owner = np.repeat(np.arange(long.size), pieces)
        first = np.cumsum(pieces) - pieces
        index = np.arange(len(owner)) - first[owner]
        digests = _chain_words(
            np.full(len(owner), _SEGMENT, dtype=np.uint64),
            values,
            starts[long][owner] + index * _SEGMENT_WORDS,
            np.minimum(counts[long][owner] - index * _SEGMENT_WORDS, _SEGMENT_WORDS),
        )
        hashes[long] = _fold(hashes[long], digests, first, pieces)
    return hashes


def _chain_words(
    hashes: np.ndarray, values: np.ndarray, starts: np.ndarray, counts: np.ndarray
) -> np.ndarray:
    """Chain each run of 64-bit ``values`` (``starts``, ``counts``) into its hash, one at a time."""
    active = np.flatnonzero(counts > 0)
    step = 0
    while active.size:
        hashes[active] = _mix(hashes[active] ^ values[starts[active] + step])
        step += 1
        active = active[counts[active] > step]
    return hashes
