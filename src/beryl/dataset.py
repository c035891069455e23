"""The consolidated dataset: immutable Parquet batches listed in one atomically replaced manifest.

Layout of ``output_folder_path``::

    dataset.json              manifest: schema, batches, the ingestion record of every file
    batches/<id>.parquet      rows that were new to the dataset when batch <id> was ingested
    batches/<id>.hashes.npy   their 64-bit row hashes (deduplication index)
    finaldata.csv             CSV snapshot of the whole dataset (``write_csv_snapshot``)
    ingestedfiles.txt         one ingested file name per line

A batch file is written before the manifest that names it, so a killed ingestion leaves at most
an orphan batch that no reader ever sees.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from beryl._io import (
    atomic_write_json,
    atomic_write_text,
    atomic_write_with,
    read_json,
    remove_stale_temporaries,
)
from beryl.errors import DataError, EmptyDatasetError
from beryl.schema import Schema

MANIFEST_NAME = "dataset.json"
SNAPSHOT_NAME = "finaldata.csv"
INGESTED_FILES_NAME = "ingestedfiles.txt"
BATCH_FOLDER = "batches"
FORMAT_VERSION = 1


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


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

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT_VERSION,
            "schema": self.schema.to_dict() if self.schema else None,
            "classes": self.classes,
            "batches": [b.to_dict() for b in self.batches],
            "files": [f.to_dict() for f in self.files],
            "snapshot": self.snapshot,
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
            raise DataError(
                f"dataset manifest {self.manifest_path} is unreadable: {exc}",
                hint="restore it from a backup; Beryl never writes it partially",
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
        parts = [np.load(self.hashes_path(b.id)) for b in self.manifest.batches]
        if not parts:
            return np.empty(0, dtype=np.uint64)
        return np.sort(np.concatenate(parts))

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
        tables = [pq.read_table(self.batch_path(b.id), columns=columns) for b in wanted]
        return pa.concat_tables(tables) if len(tables) > 1 else tables[0]

    def read(
        self, columns: list[str] | None = None, batches: list[str] | None = None
    ) -> pd.DataFrame:
        """The consolidated dataset (or some of its batches) as a DataFrame."""
        frame: pd.DataFrame = self.read_table(columns, batches).to_pandas()
        return frame

    def write_batch(self, batch_id: str, frame: pd.DataFrame, hashes: np.ndarray) -> None:
        """Write one immutable batch; it becomes visible only when a manifest names it."""
        table = pa.Table.from_pandas(frame, preserve_index=False)
        atomic_write_with(self.batch_path(batch_id), lambda p: pq.write_table(table, p))
        atomic_write_with(self.hashes_path(batch_id), lambda p: _save_npy(p, hashes))

    def commit(self, manifest: Manifest, settings_snapshot: bool) -> None:
        """Publish ``manifest``, then refresh the derived original-layout files."""
        previous = self.manifest
        if settings_snapshot:
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
            if (
                not path.exists()
                or recorded.get("batches") != current
                or recorded.get("bytes") != path.stat().st_size
            ):
                self.manifest.snapshot = self._write_snapshot(Manifest(), self.manifest)
                atomic_write_json(self.manifest_path, self.manifest.to_dict())
                repaired.append(f"rewrote {SNAPSHOT_NAME}")
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
        new_ids = target_ids[len(known) :] if reusable else target_ids
        columns = manifest.schema.columns

        def write(tmp: Path) -> None:
            if reusable:
                shutil.copyfile(path, tmp)
            with tmp.open("ab" if reusable else "wb") as handle:
                for index, batch_id in enumerate(new_ids):
                    table = pq.read_table(self.batch_path(batch_id), columns=columns)
                    header = not reusable and index == 0
                    pacsv.write_csv(
                        _integral_floats_as_ints(table),
                        handle,
                        pacsv.WriteOptions(include_header=header, quoting_style="needed"),
                    )
                if not new_ids and not reusable:
                    handle.write((",".join(columns) + "\n").encode())

        atomic_write_with(path, write)
        return {"batches": target_ids, "bytes": path.stat().st_size}


def _save_npy(path: Path, array: np.ndarray) -> None:
    with path.open("wb") as handle:
        np.save(handle, array, allow_pickle=False)


def _integral_floats_as_ints(table: pa.Table) -> pa.Table:
    """Write 100.0 as 100 so the CSV snapshot reads like the files it came from."""
    import pyarrow.compute as pc

    for index, column in enumerate(table.columns):
        if pa.types.is_floating(column.type):
            values = pc.drop_null(column)
            finite = pc.is_finite(values)
            if len(values) and not pc.all(finite).as_py():
                continue
            if len(values) == 0 or pc.all(pc.equal(pc.floor(values), values)).as_py():
                try:
                    as_int = column.cast(pa.int64())
                except pa.ArrowInvalid:  # beyond the int64 range: keep the floats
                    continue
                table = table.set_column(index, table.field(index).name, as_int)
    return table
