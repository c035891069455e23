"""The consolidated dataset: immutable Parquet batches listed in one atomically replaced manifest.

Layout of ``output_folder_path``::

    dataset.json              manifest: schema, batches, the ingestion record of every file
    batches/<id>.parquet      rows that were new to the dataset when batch <id> was ingested
    batches/<id>.hashes.npy   their 64-bit row hashes, sorted (the deduplication index)
    finaldata.csv             CSV snapshot of the whole dataset (``write_csv_snapshot``)
    ingestedfiles.txt         one ingested file name per line

A batch file is written before the manifest that names it, so a killed ingestion leaves at most
an orphan batch that no reader ever sees. New rows are appended to ``finaldata.csv`` in place as
they are ingested; the manifest records the snapshot's length, and a snapshot longer than that
(an ingestion killed before its manifest) is cut back to it by ``repair``.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, BinaryIO

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from beryl import rowhash
from beryl._io import (
    atomic_path,
    atomic_write_json,
    atomic_write_text,
    read_json,
    remove_stale_temporaries,
)
from beryl.errors import EmptyDatasetError, StateError
from beryl.schema import Schema

if TYPE_CHECKING:
    import pandas as pd

MANIFEST_NAME = "dataset.json"
SNAPSHOT_NAME = "finaldata.csv"
INGESTED_FILES_NAME = "ingestedfiles.txt"
BATCH_FOLDER = "batches"
FORMAT_VERSION = 1


@dataclass
class FileRecord:
    """What happened to one input file (the ingestion record)."""

    name: str
    sha256: str
    status: str  # ingested | duplicate-file | quarantined
    time: str
    rows_read: int = 0
    rows_kept: int = 0
    batch: str | None = None
    reason: str | None = None
    size: int = 0
    note: str | None = None
    mtime_ns: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v is not None}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FileRecord:
        return cls(**data)


@dataclass
class BatchInfo:
    """One immutable batch of rows new to the dataset."""

    id: str
    created: str
    rows: int
    files: list[str]

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class Manifest:
    schema: Schema | None = None
    batches: list[BatchInfo] = field(default_factory=list)
    files: list[FileRecord] = field(default_factory=list)
    snapshot: dict[str, Any] = field(default_factory=dict)
    classes: list[Any] = field(default_factory=list)
    row_hash: int = rowhash.VERSION

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT_VERSION,
            "schema": self.schema.to_dict() if self.schema else None,
            "classes": self.classes,
            "batches": [b.to_dict() for b in self.batches],
            "files": [f.to_dict() for f in self.files],
            "snapshot": self.snapshot,
            "row_hash": self.row_hash,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Manifest:
        schema = Schema.from_dict(data["schema"]) if data.get("schema") else None
        return cls(
            schema=schema,
            batches=[BatchInfo(**b) for b in data.get("batches", [])],
            files=[FileRecord.from_dict(f) for f in data.get("files", [])],
            snapshot=dict(data.get("snapshot", {})),
            classes=list(data.get("classes", [])),
            row_hash=int(data.get("row_hash", 1)),
        )


class Dataset:
    """Read access to the consolidated dataset, and the one writer of its manifest."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.manifest = self._load()

    @property
    def manifest_path(self) -> Path:
        return self.folder / MANIFEST_NAME

    @property
    def snapshot_path(self) -> Path:
        return self.folder / SNAPSHOT_NAME

    @property
    def schema(self) -> Schema | None:
        return self.manifest.schema

    @property
    def batches(self) -> list[BatchInfo]:
        return self.manifest.batches

    @property
    def files(self) -> list[FileRecord]:
        return self.manifest.files

    @property
    def rows(self) -> int:
        return sum(b.rows for b in self.manifest.batches)

    def _load(self) -> Manifest:
        if not self.manifest_path.exists():
            return Manifest()
        try:
            return Manifest.from_dict(read_json(self.manifest_path))
        except (ValueError, KeyError, TypeError) as exc:
            raise StateError(
                f"dataset manifest {self.manifest_path} is unreadable: {exc}",
                hint="restore it from a backup; Beryl never writes it partially",
            ) from exc
        except OSError as exc:
            raise StateError(
                f"cannot read the dataset manifest {self.manifest_path}: {exc.strerror}"
            ) from exc

    def batch_path(self, batch_id: str) -> Path:
        return self.folder / BATCH_FOLDER / f"{batch_id}.parquet"

    def hashes_path(self, batch_id: str) -> Path:
        return self.folder / BATCH_FOLDER / f"{batch_id}.hashes.npy"

    def ingested_names(self) -> list[str]:
        """Names of ingested files, each once, in order of first ingestion."""
        seen: dict[str, None] = {}
        for record in self.manifest.files:
            if record.status == "ingested":
                seen.setdefault(record.name, None)
        return list(seen)

    def row_hashes(self) -> np.ndarray:
        """Sorted 64-bit hashes of every row in the dataset."""
        runs = self.hash_runs()
        if not runs:
            return np.empty(0, dtype=np.uint64)
        return np.sort(np.concatenate(runs))

    def hash_runs(self) -> list[np.ndarray]:
        """Each batch's sorted row hashes, mapped from disk (only the pages searched are read).

        Hashes written by another row-hash version are only comparable after ``upgrade_hashes``.
        """
        return [np.load(self.hashes_path(b.id), mmap_mode="r") for b in self.manifest.batches]

    def upgrade_hashes(self) -> None:
        """Hash every batch again when the dataset was hashed by another row-hash version.

        Call only while holding the workspace lock. Each hash file is replaced atomically and the
        manifest records the version last, so an interrupted upgrade is simply done again.
        """
        if self.manifest.row_hash == rowhash.VERSION:
            return
        for batch in self.manifest.batches:
            hashes = rowhash.row_hashes(pq.read_table(self.batch_path(batch.id)))
            _write_hashes(self.hashes_path(batch.id), np.sort(hashes))
        self.manifest.row_hash = rowhash.VERSION
        if self.manifest_path.exists():
            atomic_write_json(self.manifest_path, self.manifest.to_dict())

    def read_table(
        self, columns: list[str] | None = None, batches: list[str] | None = None
    ) -> pa.Table:
        wanted = self.manifest.batches
        if batches is not None:
            chosen = set(batches)
            wanted = [b for b in wanted if b.id in chosen]
        if not wanted:
            raise EmptyDatasetError(
                f"no data has been ingested into {self.folder} yet",
                hint="put CSV files into the input folder and run `beryl ingest`",
            )
        tables = [self._read_batch(b.id, columns) for b in wanted]
        return pa.concat_tables(tables) if len(tables) > 1 else tables[0]

    def _read_batch(self, batch_id: str, columns: list[str] | None) -> pa.Table:
        path = self.batch_path(batch_id)
        try:
            return pq.read_table(path, columns=columns)
        except (OSError, pa.ArrowException) as exc:  # ArrowInvalid: a damaged file
            raise StateError(
                f"dataset batch {path} cannot be read: {exc}",
                hint="restore it from a backup",
            ) from exc

    def read(
        self, columns: list[str] | None = None, batches: list[str] | None = None
    ) -> pd.DataFrame:
        """The consolidated dataset (or some of its batches) as a DataFrame."""
        frame: pd.DataFrame = self.read_table(columns, batches).to_pandas()
        return frame

    def batch_writer(
        self, batch_id: str, write_snapshot: bool, id_columns: list[str]
    ) -> BatchWriter:
        """A writer for batch ``batch_id``, fed one deduplicated table at a time."""
        return BatchWriter(self, batch_id, write_snapshot, id_columns)

    def commit(self, manifest: Manifest, settings_snapshot: bool, appended: bool = False) -> None:
        """Publish ``manifest``, then refresh the derived original-layout files.

        ``appended``: the new batches' rows were already appended to the snapshot in place.
        """
        previous = self.manifest
        if settings_snapshot and appended and self.snapshot_path.exists():
            ids = [b.id for b in manifest.batches]
            manifest.snapshot = {"batches": ids, "bytes": self.snapshot_path.stat().st_size}
        elif settings_snapshot:
            manifest.snapshot = self._write_snapshot(previous, manifest)
        else:
            manifest.snapshot = {}
            # A snapshot that would no longer match the dataset is removed (the batches hold
            # every row; `write_csv_snapshot: true` writes it again).
            self.snapshot_path.unlink(missing_ok=True)
        atomic_write_json(self.manifest_path, manifest.to_dict())
        self.manifest = manifest
        names = self.ingested_names()
        atomic_write_text(self.folder / INGESTED_FILES_NAME, "".join(n + "\n" for n in names))

    def snapshot_appendable(self) -> bool:
        """Whether new rows can be appended to the snapshot: it holds exactly the dataset."""
        recorded = self.manifest.snapshot
        if not self.manifest.batches:
            return True  # written from scratch, header first
        path = self.snapshot_path
        return (
            path.exists()
            and recorded.get("batches") == [b.id for b in self.manifest.batches]
            and recorded.get("bytes") == path.stat().st_size
        )

    def repair(self, write_snapshot: bool) -> list[str]:
        """After a crash: drop what no manifest names and rebuild stale derived files.

        Call only while holding the workspace lock (an ingestion writes its batch before the
        manifest that names it). Returns what was repaired.
        """
        repaired = []
        for folder in (self.folder, self.folder / BATCH_FOLDER):
            if remove_stale_temporaries(folder):
                repaired.append(f"removed temporary files in {folder}")
        known = {b.id for b in self.manifest.batches}
        batch_folder = self.folder / BATCH_FOLDER
        if batch_folder.is_dir():
            for path in batch_folder.iterdir():
                batch_id = path.name.split(".", 1)[0]
                if path.is_file() and batch_id not in known:
                    path.unlink()
                    repaired.append(f"removed unfinished batch file {path.name}")
        if not self.manifest_path.exists():
            return repaired
        names = "".join(n + "\n" for n in self.ingested_names())
        listing = self.folder / INGESTED_FILES_NAME
        if not listing.exists() or listing.read_text(encoding="utf-8") != names:
            atomic_write_text(listing, names)
            repaired.append(f"rewrote {INGESTED_FILES_NAME}")
        if write_snapshot and self.manifest.batches:
            recorded = self.manifest.snapshot
            path = self.snapshot_path
            current = [b.id for b in self.manifest.batches]
            size = path.stat().st_size if path.exists() else -1
            if recorded.get("batches") == current and size > recorded.get("bytes", size):
                # rows appended by an ingestion that never published its manifest
                os.truncate(path, recorded["bytes"])
                repaired.append(f"cut {SNAPSHOT_NAME} back to the published dataset")
            elif recorded.get("batches") != current or recorded.get("bytes") != size:
                self.manifest.snapshot = self._write_snapshot(Manifest(), self.manifest)
                atomic_write_json(self.manifest_path, self.manifest.to_dict())
                repaired.append(f"rewrote {SNAPSHOT_NAME}")
        elif not self.manifest.batches and self.snapshot_path.exists():
            self.snapshot_path.unlink()
            repaired.append(f"removed {SNAPSHOT_NAME} of an ingestion that never finished")
        return repaired

    def _write_snapshot(self, previous: Manifest, manifest: Manifest) -> dict[str, Any]:
        """Keep finaldata.csv equal to the dataset, appending only new batches when possible."""
        if manifest.schema is None or not manifest.batches:
            return {}
        known = [b.id for b in previous.batches]
        target_ids = [b.id for b in manifest.batches]
        path = self.snapshot_path
        reusable = (
            path.exists()
            and previous.snapshot.get("batches") == known
            and previous.snapshot.get("bytes") == path.stat().st_size
            and target_ids[: len(known)] == known
        )
        columns = manifest.schema.columns
        if reusable:
            with _appending(path, header=None) as write:
                for batch_id in target_ids[len(known) :]:
                    self._copy_batch(batch_id, columns, write)
        else:
            with atomic_path(path) as tmp, _appending(tmp, header=columns) as write:
                for batch_id in target_ids:
                    self._copy_batch(batch_id, columns, write)
        return {"batches": target_ids, "bytes": path.stat().st_size}

    def _copy_batch(
        self, batch_id: str, columns: list[str], write: Callable[[pa.Table], None]
    ) -> None:
        parquet = pq.ParquetFile(self.batch_path(batch_id))
        for group in range(parquet.num_row_groups):
            write(parquet.read_row_group(group, columns=columns))


@contextmanager
def _appending(path: Path, header: list[str] | None) -> Iterator[Callable[[pa.Table], None]]:
    """Append CSV rows to ``path`` in place: kept when the block ends normally, cut back to the
    file's old length when it ends with an error.

    ``header``: the columns to write first into a new (emptied) file, or None to only append.
    The rows are flushed, not fsynced: the snapshot is derived data, and if a power loss drops
    rows the manifest already counts, its length no longer matches and ``repair`` rewrites it.
    """
    start = path.stat().st_size if header is None else 0
    with path.open("r+b" if header is None else "wb") as handle:
        handle.seek(start)
        try:
            if header is not None:  # written by Arrow, quoted as Arrow quotes it
                empty = pa.schema([(name, pa.string()) for name in header]).empty_table()
                options = pacsv.WriteOptions(include_header=True, quoting_style="needed")
                pacsv.write_csv(empty, handle, options)
            yield functools.partial(_write_rows, handle)
            handle.flush()
        except BaseException:
            handle.truncate(start)
            raise


def _write_rows(handle: BinaryIO, table: pa.Table) -> None:
    """``table``'s rows as CSV (no header) at the end of ``handle``."""
    # Arrow's CSV writer (pyarrow 26) writes garbage for a column whose first chunk is empty,
    # so empty record batches are dropped first (no copy).
    batches = [batch for batch in table.to_batches() if batch.num_rows]
    if not batches:
        return
    table = pa.Table.from_batches(batches, table.schema)
    options = pacsv.WriteOptions(include_header=False, quoting_style="needed")
    pacsv.write_csv(_integral_floats_as_ints(table), handle, options)


class BatchWriter:
    """Writes one batch as its rows arrive: Parquet row groups, sorted hashes, snapshot rows.

    Use as a context manager: leaving the block normally makes the batch file and its hashes
    durable, still unnamed by any manifest until the caller commits one; leaving it with an error
    removes the temporary batch file and cuts the snapshot back. Rows are written on background
    threads, one per file (Arrow's writers release the GIL), while the caller reads more;
    ``drain`` waits for them, which bounds how many tables are held.
    """

    def __init__(
        self, dataset: Dataset, batch_id: str, write_snapshot: bool, id_columns: list[str]
    ) -> None:
        self.dataset = dataset
        self.batch_id = batch_id
        self.rows = 0
        self.appended = write_snapshot and dataset.snapshot_appendable()
        self._id_columns = set(id_columns)
        self._hashes: list[np.ndarray] = []
        self._stack = ExitStack()
        self._parquet: pq.ParquetWriter | None = None
        self._snapshot: Callable[[pa.Table], None] | None = None
        # one thread per writer: the Parquet file and the CSV snapshot are written side by side
        self._threads = [
            ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"beryl-{name}")
            for name in ("parquet", "csv")
        ]
        self._pending: list[Future[None]] = []

    def __enter__(self) -> BatchWriter:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        try:
            for thread in self._threads:
                thread.shutdown(wait=True)
            if self._parquet is not None:
                self._parquet.close()
            if error is None:
                for job in self._pending:
                    job.result()  # a write that failed fails the batch
                if self._hashes:
                    hashes = np.sort(np.concatenate(self._hashes))
                    _write_hashes(self.dataset.hashes_path(self.batch_id), hashes)
        except BaseException as failure:  # undo everything, then report the failure
            self._stack.__exit__(type(failure), failure, failure.__traceback__)
            raise
        # an error undoes the batch file and the snapshot rows; success keeps both
        self._stack.__exit__(kind, error, trace)

    def append(self, table: pa.Table, hashes: np.ndarray) -> None:
        """Add rows that are new to the dataset, with their row hashes."""
        if table.num_rows == 0:
            return
        if self._parquet is None:
            self._open(table.schema)
        assert self._parquet is not None
        parquet, csv = self._threads
        self._pending.append(parquet.submit(self._parquet.write_table, table))
        if self._snapshot is not None:
            self._pending.append(csv.submit(self._snapshot, table))
        self._hashes.append(hashes)
        self.rows += table.num_rows

    def drain(self) -> None:
        """Wait until every table handed over so far is written (re-raising a failed write)."""
        while self._pending:
            self._pending.pop(0).result()

    def _open(self, schema: pa.Schema) -> None:
        tmp = self._stack.enter_context(atomic_path(self.dataset.batch_path(self.batch_id)))
        # identifiers are mostly unique: a dictionary would only cost time; no reader filters
        # on column statistics, so none are computed
        encoded = [c for c in schema.names if c not in self._id_columns]
        self._parquet = pq.ParquetWriter(
            tmp, schema, use_dictionary=encoded, write_statistics=False
        )
        if self.appended:
            fresh = not self.dataset.manifest.batches
            header = list(schema.names) if fresh else None
            self._snapshot = self._stack.enter_context(
                _appending(self.dataset.snapshot_path, header)
            )


def _write_hashes(path: Path, hashes: np.ndarray) -> None:
    with atomic_path(path) as tmp, tmp.open("wb") as handle:
        np.save(handle, hashes, allow_pickle=False)


def _integral_floats_as_ints(table: pa.Table) -> pa.Table:
    """Write 100.0 as 100 so the CSV snapshot reads like the files it came from.

    A float column becomes int64 when every value converts exactly: Arrow's safe cast refuses
    fractions, infinities, NaN and values beyond int64, and then the floats are kept.
    """
    for index, column in enumerate(table.columns):
        if pa.types.is_floating(column.type):
            try:
                as_int = column.cast(pa.int64())
            except pa.ArrowInvalid:
                continue
            table = table.set_column(index, table.field(index).name, as_int)
    return table
