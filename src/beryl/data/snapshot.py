"""``finaldata.csv``: the whole dataset as one CSV file, for the original layout's readers.

It is derived data: new batches' rows are appended in place as they are ingested (cut back on
failure), the manifest records the published length (``SnapshotState``), and a snapshot that
no longer matches its record is cut back (rows of an ingestion that never published) or
written again from the batches. Arrow is imported by what writes rows; checking the snapshot
against its record (every command's repair) only stats the file.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from beryl._io import atomic_path
from beryl.data.manifest import Manifest, SnapshotState

if TYPE_CHECKING:
    import pyarrow as pa

    from beryl.data.dataset import Dataset


@contextmanager
def appending(path: Path, header: list[str] | None) -> Iterator[Callable[[pa.Table], None]]:
    """Append CSV rows to ``path`` in place: kept when the block ends normally, cut back to the
    file's old length when it ends with an error.

    ``header``: the columns to write first into a new (emptied) file, or None to only append.
    The rows are flushed, not fsynced: the snapshot is derived data, and if a power loss drops
    rows the manifest already counts, its length no longer matches and ``repair`` rewrites it.
    """
    import pyarrow as pa
    import pyarrow.csv as pacsv

    start = path.stat().st_size if header is None else 0
    with path.open("r+b" if header is None else "wb") as handle:
        handle.seek(start)
        try:
            if header is not None:  # written by Arrow, quoted as Arrow quotes it
                schema = pa.schema([(name, pa.string()) for name in header])
                empty = pa.Table.from_batches([], schema)  # (``empty_table`` imports pandas)
                options = pacsv.WriteOptions(include_header=True, quoting_style="needed")
                pacsv.write_csv(empty, handle, options)
            yield functools.partial(write_rows, handle)
            handle.flush()
        except BaseException:
            handle.truncate(start)
            raise


def write_rows(handle: BinaryIO, table: pa.Table) -> None:
    """``table``'s rows as CSV (no header) at the end of ``handle``."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    # Arrow's CSV writer (pyarrow 26) writes garbage for a column whose first chunk is empty,
    # so empty record batches are dropped first (no copy).
    batches = [batch for batch in table.to_batches() if batch.num_rows]
    if not batches:
        return
    table = pa.Table.from_batches(batches, table.schema)
    options = pacsv.WriteOptions(include_header=False, quoting_style="needed")
    pacsv.write_csv(integral_floats_as_ints(table), handle, options)


def integral_floats_as_ints(table: pa.Table) -> pa.Table:
    """Write 100.0 as 100 so the CSV snapshot reads like the files it came from.

    A float column becomes int64 when every value converts exactly: Arrow's safe cast refuses
    fractions, infinities, NaN and values beyond int64, and then the floats are kept.
    """
    import pyarrow as pa

    for index, column in enumerate(table.columns):
        if pa.types.is_floating(column.type):
            try:
                as_int = column.cast(pa.int64())
            except pa.ArrowInvalid:
                continue
            table = table.set_column(index, table.field(index).name, as_int)
    return table


def matches(dataset: Dataset, manifest: Manifest) -> bool:
    """Whether the snapshot on disk is the one ``manifest`` records (its batches and length)."""
    recorded = manifest.snapshot
    path = dataset.snapshot_path
    return (
        recorded is not None
        and recorded.holds(manifest.batches)
        and path.exists()
        and recorded.bytes == path.stat().st_size
    )


def appendable(dataset: Dataset) -> bool:
    """Whether new rows can be appended to the snapshot: it holds exactly the dataset."""
    manifest = dataset.manifest
    return not manifest.batches or matches(dataset, manifest)  # none: written header first


def state(dataset: Dataset, manifest: Manifest) -> SnapshotState:
    """The snapshot as it is now, recorded as holding ``manifest``'s batches."""
    ids = tuple(b.id for b in manifest.batches)
    return SnapshotState(ids, dataset.snapshot_path.stat().st_size)


def write(dataset: Dataset, previous: Manifest, manifest: Manifest) -> SnapshotState | None:
    """Make finaldata.csv hold ``manifest``'s batches, appending only new batches when the
    snapshot holds exactly ``previous``'s."""
    if manifest.schema is None or not manifest.batches:
        return None
    known = [b.id for b in previous.batches]
    target = [b.id for b in manifest.batches]
    path = dataset.snapshot_path
    columns = manifest.schema.columns
    if matches(dataset, previous) and target[: len(known)] == known:
        with appending(path, header=None) as append:
            for batch_id in target[len(known) :]:
                _copy(dataset, batch_id, columns, append)
    else:
        with atomic_path(path) as tmp, appending(tmp, header=columns) as append:
            for batch_id in target:
                _copy(dataset, batch_id, columns, append)
    return state(dataset, manifest)


def _copy(
    dataset: Dataset, batch_id: str, columns: list[str], append: Callable[[pa.Table], None]
) -> None:
    for group in dataset.row_groups(batch_id, columns):
        append(group)


def cut(dataset: Dataset, manifest: Manifest) -> bytes:
    """Cut finaldata.csv back to the length ``manifest`` records when rows were appended after
    it (by an ingestion that never published); returns the bytes cut off."""
    recorded = manifest.snapshot
    path = dataset.snapshot_path
    if not manifest.batches or recorded is None or not recorded.holds(manifest.batches):
        return b""
    if not path.exists() or path.stat().st_size <= recorded.bytes:
        return b""
    with path.open("rb") as handle:
        handle.seek(recorded.bytes)
        tail = handle.read()
    os.truncate(path, recorded.bytes)
    return tail
