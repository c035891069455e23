"""The consolidated dataset: immutable Parquet batches listed in one atomically replaced manifest.

Layout of ``output_folder_path``::

    dataset.json              manifest: schema, batches, the ingestion record of every file
    batches/<id>.parquet      rows that were new to the dataset when batch <id> was ingested
    batches/<id>.hashes.npy   their 64-bit row hashes, sorted (the deduplication index)
    batches/<id>.batch.json   the batch's own record: what the manifest says about it, the
                              file records of the ingestion that made it, the schema, the
                              classes and the row-hash version (``RECORD_SUFFIX``)
    finaldata.csv             CSV snapshot of the whole dataset (``write_csv_snapshot``)
    ingestedfiles.txt         one ingested file name per line
    .recovered/<time>/        what a repair or ``set_aside_batch`` moved aside (never deleted)

A batch's files are written before the manifest that names it (its record last), so a killed
ingestion leaves at most batch files that no reader ever sees, and every batch a manifest names
carries what is needed to rebuild the manifest without it. New rows are appended to
``finaldata.csv`` in place as they are ingested; the manifest records the snapshot's length, and
a snapshot longer than that (an ingestion killed before its manifest) is cut back to it by
``repair``. ``beryl.data.repair`` holds the repairs: rebuilding a lost or damaged manifest
from the batch records, rebuilding damaged hash indexes, and setting batches aside.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from beryl._io import (
    TMP_PREFIX,
    atomic_path,
    atomic_write_json,
    atomic_write_text,
)
from beryl.data import rowhash
from beryl.data._batchfiles import BatchWriter as BatchWriter
from beryl.data._batchfiles import appending, write_hashes
from beryl.data.schema import Schema
from beryl.errors import EmptyDatasetError, StateError, describe_os_error
from beryl.recovery import RECOVERY_FOLDER

if TYPE_CHECKING:
    import pandas as pd

    from beryl.config import Settings
    from beryl.data.repair import SetAside

MANIFEST_NAME = "dataset.json"
SNAPSHOT_NAME = "finaldata.csv"
INGESTED_FILES_NAME = "ingestedfiles.txt"
BATCH_FOLDER = "batches"
PARQUET_SUFFIX = ".parquet"
HASHES_SUFFIX = ".hashes.npy"
RECORD_SUFFIX = ".batch.json"
FORMAT_VERSION = 1
RECORD_FORMAT_VERSION = 1
SET_ASIDE = "set-aside"  # the status of a file record whose batch was set aside
_BATCH_ID = re.compile(r"^[A-Za-z0-9_-]+$")
_REBUILT = "the next `beryl ingest` or `beryl run` rebuilds it from the batches' own records"


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
    # The file's identity when it was read (``os.stat``): a file whose device, inode, size,
    # modification and change times all match is not read again. A time within the settle
    # period of the read is not recorded (None: the file is read again next time).
    mtime_ns: int | None = None
    ctime_ns: int | None = None
    dev: int | None = None
    ino: int | None = None
    # For a file refused for its content: the key of the schema it was judged against
    # (``Schema.key``); it is judged again once the dataset's schema has another key.
    schema_key: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v is not None}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FileRecord:
        return cls(**data)


@dataclass
class BatchInfo:
    """One immutable batch of rows new to the dataset.

    ``sizes``: the bytes of its files on disk (``parquet``, ``hashes``, ``record``), so that a
    repair finds a cut or swapped file with one ``stat``.
    """

    id: str
    created: str
    rows: int
    files: list[str]
    sizes: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        data = dict(self.__dict__)
        data["sizes"] = dict(self.sizes)
        return data

    @classmethod
    def from_dict(cls, data: Any) -> BatchInfo:
        """A batch as a manifest or a batch record holds it; ValueError or TypeError if not."""
        if not isinstance(data, dict):
            raise TypeError("a batch is not a JSON object")
        batch = cls(**data)
        if not isinstance(batch.id, str) or not _BATCH_ID.match(batch.id):
            raise ValueError(f"{batch.id!r} is not a batch id")
        if not _is_count(batch.rows) or not isinstance(batch.created, str):
            raise ValueError(f"batch {batch.id} has no row count or time")
        if not isinstance(batch.files, list) or not all(isinstance(f, str) for f in batch.files):
            raise ValueError(f"batch {batch.id}: files is not a list of names")
        if not isinstance(batch.sizes, dict) or not all(map(_is_count, batch.sizes.values())):
            raise ValueError(f"batch {batch.id}: sizes is not a mapping of byte counts")
        return batch


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _file_record(data: Any) -> FileRecord:
    if not isinstance(data, dict):
        raise TypeError("a file record is not a JSON object")
    record = FileRecord.from_dict(data)
    if not all(isinstance(v, str) for v in (record.name, record.sha256, record.status)):
        raise ValueError("a file record has no name, sha256 or status")
    return record


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
    def from_dict(cls, data: Any) -> Manifest:
        """The manifest ``data`` describes; ValueError, KeyError or TypeError when it is not one."""
        if not isinstance(data, dict):
            raise TypeError("not a JSON object")
        schema = Schema.from_dict(data["schema"]) if data.get("schema") else None
        batches, files = data.get("batches", []), data.get("files", [])
        snapshot, classes = data.get("snapshot", {}), data.get("classes", [])
        if not isinstance(batches, list) or not isinstance(files, list):
            raise TypeError("batches and files are not lists")
        if not isinstance(snapshot, dict) or not isinstance(classes, list):
            raise TypeError("snapshot is not an object or classes not a list")
        manifest = cls(
            schema=schema,
            batches=[BatchInfo.from_dict(b) for b in batches],
            files=[_file_record(f) for f in files],
            snapshot=dict(snapshot),
            classes=list(classes),
            row_hash=int(data.get("row_hash", 1)),
        )
        if len({b.id for b in manifest.batches}) != len(manifest.batches):
            raise ValueError("a batch is named twice")
        return manifest

    @property
    def header(self) -> tuple[Any, ...]:
        """What every batch record repeats from the manifest."""
        return (self.schema, self.classes, self.row_hash)


@dataclass(frozen=True)
class BatchRecord:
    """What ``batches/<id>.batch.json`` holds: enough to rebuild the manifest's part on it."""

    batch: BatchInfo
    files: list[FileRecord]
    schema: Schema | None
    classes: list[Any]
    row_hash: int

    def to_dict(self) -> dict[str, Any]:
        sizes = {k: v for k, v in self.batch.sizes.items() if k != "record"}
        return {
            "format": RECORD_FORMAT_VERSION,
            "batch": {**self.batch.to_dict(), "sizes": sizes},
            "files": [f.to_dict() for f in self.files],
            "schema": self.schema.to_dict() if self.schema else None,
            "classes": self.classes,
            "row_hash": self.row_hash,
        }

    @classmethod
    def from_dict(cls, data: Any) -> BatchRecord:
        if not isinstance(data, dict):
            raise TypeError("not a JSON object")
        version = data.get("format")
        if not isinstance(version, int) or version > RECORD_FORMAT_VERSION:
            raise ValueError(f"format {version!r} is not one this Beryl reads")
        files, classes = data["files"], data["classes"]
        if not isinstance(files, list) or not isinstance(classes, list):
            raise TypeError("files or classes is not a list")
        return cls(
            batch=BatchInfo.from_dict(data["batch"]),
            files=[_file_record(f) for f in files],
            schema=Schema.from_dict(data["schema"]) if data.get("schema") else None,
            classes=classes,
            row_hash=int(data["row_hash"]),
        )


class DamagedFile(Exception):
    """A state file whose content is not what the manifest says (the reason is the message)."""


@dataclass(frozen=True)
class _Problem:
    """Why the manifest could not be loaded; ``rebuild``: a repair may rebuild it."""

    error: StateError
    rebuild: bool

    def raise_it(self) -> NoReturn:
        raise StateError(self.error.message, hint=self.error.hint) from self.error.__cause__


class Dataset:
    """Read access to the consolidated dataset, and the one writer of its manifest.

    Construction never fails and never writes: a missing or damaged manifest is reported (as
    ``StateError``, naming the file) by whatever reads the dataset, and rebuilt by ``repair``.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._manifest, self.problem = self._load()

    @property
    def manifest(self) -> Manifest:
        if self.problem is not None:
            self.problem.raise_it()
        return self._manifest

    @manifest.setter
    def manifest(self, manifest: Manifest) -> None:
        self.adopt(manifest)

    @property
    def manifest_path(self) -> Path:
        return self.folder / MANIFEST_NAME

    @property
    def snapshot_path(self) -> Path:
        return self.folder / SNAPSHOT_NAME

    @property
    def batch_folder(self) -> Path:
        return self.folder / BATCH_FOLDER

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

    def _load(self) -> tuple[Manifest, _Problem | None]:
        path = self.manifest_path
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            if not self.batch_ids_on_disk():
                return Manifest(), None  # nothing ingested yet
            error = StateError(
                f"dataset record {path} is missing, but {self.batch_folder} holds batches",
                hint=_REBUILT,
            )
            return Manifest(), _Problem(error, rebuild=True)
        except OSError as exc:
            message, hint = describe_os_error(exc, path)
            error = StateError(f"cannot read the dataset record {path}: {message}", hint=hint)
            return Manifest(), _Problem(error, rebuild=False)
        try:
            data = json.loads(raw.decode("utf-8"))
            version = data.get("format", 1) if isinstance(data, dict) else 1
            if isinstance(version, int) and version > FORMAT_VERSION:
                error = StateError(
                    f"dataset record {path} was written by a newer Beryl (format {version})",
                    hint="run the Beryl that wrote it, or a newer one",
                )
                return Manifest(), _Problem(error, rebuild=False)
            return Manifest.from_dict(data), None
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            error = StateError(f"dataset record {path} is damaged ({_short(exc)})", hint=_REBUILT)
            error.__cause__ = exc
            return Manifest(), _Problem(error, rebuild=True)

    def batch_path(self, batch_id: str) -> Path:
        return self.batch_folder / f"{batch_id}{PARQUET_SUFFIX}"

    def hashes_path(self, batch_id: str) -> Path:
        return self.batch_folder / f"{batch_id}{HASHES_SUFFIX}"

    def record_path(self, batch_id: str) -> Path:
        return self.batch_folder / f"{batch_id}{RECORD_SUFFIX}"

    def batch_files(self, batch_id: str) -> list[Path]:
        """The files of a batch that are on disk."""
        paths = (self.batch_path(batch_id), self.hashes_path(batch_id), self.record_path(batch_id))
        return [p for p in paths if p.exists()]

    def batch_ids_on_disk(self) -> set[str]:
        """The batch ids that files in ``batches/`` belong to (temporary files aside)."""
        try:
            names = [p.name for p in self.batch_folder.iterdir()]
        except (FileNotFoundError, NotADirectoryError):
            return set()
        return {n.split(".", 1)[0] for n in names if not n.startswith((TMP_PREFIX, "."))}

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
        A damaged hash index is a ``StateError`` naming it (``repair`` rebuilds it).
        """
        runs = []
        for batch in self.manifest.batches:
            try:
                runs.append(self.load_hashes(batch))
            except DamagedFile as damage:
                raise StateError(
                    f"hash index {self.hashes_path(batch.id)} of batch {batch.id} is damaged "
                    f"({damage})",
                    hint="the next `beryl ingest` or `beryl run` rebuilds it from the batch",
                ) from None
        return runs

    def load_hashes(self, batch: BatchInfo) -> np.ndarray:
        """A batch's hash index, mapped; ``DamagedFile`` unless it holds ``batch.rows`` hashes."""
        path = self.hashes_path(batch.id)
        try:
            hashes = np.load(path, mmap_mode="r", allow_pickle=False)
        except FileNotFoundError:
            raise DamagedFile("the file is missing") from None
        except PermissionError as exc:
            raise _unavailable(path, exc) from exc
        except (OSError, ValueError, EOFError) as exc:
            raise DamagedFile(f"not a hash index: {_short(exc)}") from None
        if not isinstance(hashes, np.ndarray):  # an .npz archive
            with contextlib.suppress(AttributeError):
                hashes.close()
            raise DamagedFile("not a hash index")
        if hashes.dtype != np.uint64 or hashes.shape != (batch.rows,):
            raise DamagedFile(
                f"it holds {hashes.shape} {hashes.dtype}, not the batch's {batch.rows} hashes"
            )
        size = path.stat().st_size
        expected = batch.sizes.get("hashes", int(getattr(hashes, "offset", 0)) + hashes.nbytes)
        if size != expected:
            raise DamagedFile(f"{size} bytes where {expected} were written")
        return hashes

    def upgrade_hashes(self) -> None:
        """Hash every batch again when the dataset was hashed by another row-hash version.

        Call only while holding the workspace lock. Each hash file is replaced atomically and the
        manifest records the version last, so an interrupted upgrade is simply done again.
        """
        if self.manifest.row_hash == rowhash.VERSION:
            return
        self.rehash(self.manifest.batches)
        self.manifest.row_hash = rowhash.VERSION
        if self.manifest_path.exists():
            self.publish(self.manifest)

    def rehash(self, batches: list[BatchInfo]) -> None:
        """Write the hash index of ``batches`` again from their rows (under the lock)."""
        for batch in batches:
            hashes = rowhash.row_hashes(self._read_batch(batch.id, None))
            path = self.hashes_path(batch.id)
            write_hashes(path, np.sort(hashes))
            batch.sizes["hashes"] = path.stat().st_size

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
        except PermissionError as exc:
            raise _unavailable(path, exc) from exc
        except (OSError, pa.ArrowException) as exc:  # ArrowInvalid: a damaged file
            raise damaged_batch(path, batch_id, _short(exc)) from exc

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
        Each new batch gets its record (``batches/<id>.batch.json``) before the manifest. When
        this fails before the manifest is published, the new batches' files (written by this
        ingestion, named by nothing) are removed and the snapshot is cut back, so the dataset
        is as it was.
        """
        previous = self._manifest
        try:
            if settings_snapshot and appended and self.snapshot_path.exists():
                ids = [b.id for b in manifest.batches]
                manifest.snapshot = {"batches": ids, "bytes": self.snapshot_path.stat().st_size}
            elif settings_snapshot:
                manifest.snapshot = self.write_snapshot(previous, manifest)
            else:
                manifest.snapshot = {}
                # A snapshot that would no longer match the dataset is removed (the batches hold
                # every row; `write_csv_snapshot: true` writes it again).
                self.snapshot_path.unlink(missing_ok=True)
            self.publish(manifest, previous)
        except OSError as exc:
            self._undo(previous, manifest)
            message, hint = describe_os_error(exc)
            raise StateError(f"cannot publish the dataset: {message}", hint=hint) from exc
        except BaseException:
            self._undo(previous, manifest)
            raise
        self._manifest, self.problem = manifest, None
        names = self.ingested_names()
        atomic_write_text(self.folder / INGESTED_FILES_NAME, "".join(n + "\n" for n in names))

    def publish(self, manifest: Manifest, previous: Manifest | None = None) -> None:
        """Write the batch records ``manifest`` needs, then the manifest itself (atomically).

        A batch without a recorded record size gets its record; the last batch's record is
        written again when the schema, the classes or the row-hash version changed since
        ``previous`` (a rebuild takes them from the last batch). The sizes of a batch's files
        are measured once, when they are first published, so that ``repair`` notices a file
        that changed: a writer that replaces a batch's files on purpose clears its ``sizes``.
        """
        last = manifest.batches[-1].id if manifest.batches else None
        refresh = (
            previous is None
            or previous.header != manifest.header
            or (previous.batches[-1].id if previous.batches else None) != last
        )
        groups: dict[str, list[FileRecord]] | None = None
        for batch in manifest.batches:
            for kind, path in (
                ("parquet", self.batch_path(batch.id)),
                ("hashes", self.hashes_path(batch.id)),
            ):
                if kind not in batch.sizes:
                    with contextlib.suppress(FileNotFoundError):  # repair reports it
                        batch.sizes[kind] = path.stat().st_size
            if "record" not in batch.sizes or (refresh and batch.id == last):
                groups = groups if groups is not None else records_by_batch(manifest)
                record = BatchRecord(
                    batch,
                    groups.get(batch.id, []),
                    manifest.schema,
                    manifest.classes,
                    manifest.row_hash,
                )
                path = self.record_path(batch.id)
                atomic_write_json(path, record.to_dict())
                batch.sizes["record"] = path.stat().st_size
        atomic_write_json(self.manifest_path, manifest.to_dict())

    def adopt(self, manifest: Manifest) -> None:
        """Use ``manifest`` from now on (a repair has just published it)."""
        self._manifest, self.problem = manifest, None

    def read_record(self, batch_id: str) -> BatchRecord:
        """A batch's own record; ``DamagedFile`` when it is missing or not one."""
        path = self.record_path(batch_id)
        try:
            record = BatchRecord.from_dict(json.loads(path.read_bytes().decode("utf-8")))
        except FileNotFoundError:
            raise DamagedFile("the file is missing") from None
        except PermissionError as exc:
            raise _unavailable(path, exc) from exc
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise DamagedFile(f"not a batch record: {_short(exc)}") from None
        if record.batch.id != batch_id:
            raise DamagedFile(f"it describes batch {record.batch.id}")
        record.batch.sizes["record"] = path.stat().st_size
        return record

    def _undo(self, previous: Manifest, manifest: Manifest) -> None:
        """After a commit failed: remove what it wrote for new batches, unless it published."""
        with contextlib.suppress(OSError, StateError):
            known = {b.id for b in previous.batches}
            new = [b.id for b in manifest.batches if b.id not in known]
            on_disk = Dataset(self.folder)
            if on_disk.problem is None and any(b.id in new for b in on_disk._manifest.batches):
                return  # published after all (the failure came later): nothing to undo
            for batch_id in new:
                for path in self.batch_files(batch_id):
                    path.unlink()
            cut_snapshot(self, previous)

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
        """After a crash or damage: put the dataset right without losing a row.

        Rebuilds a missing or damaged manifest from the batch records, moves what no manifest
        names to ``.recovered/``, rebuilds damaged hash indexes, writes missing batch records
        and rebuilds stale derived files; refuses (``StateError`` naming the file and the
        command) what it cannot repair alone: a damaged batch, or batches without records and
        no manifest. Call only while holding the workspace lock. Returns what was repaired.
        """
        from beryl.data.repair import repair

        return repair(self, write_snapshot)

    def write_snapshot(self, previous: Manifest, manifest: Manifest) -> dict[str, Any]:
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
            with appending(path, header=None) as write:
                for batch_id in target_ids[len(known) :]:
                    self._copy_batch(batch_id, columns, write)
        else:
            with atomic_path(path) as tmp, appending(tmp, header=columns) as write:
                for batch_id in target_ids:
                    self._copy_batch(batch_id, columns, write)
        return {"batches": target_ids, "bytes": path.stat().st_size}

    def _copy_batch(
        self, batch_id: str, columns: list[str], write: Callable[[pa.Table], None]
    ) -> None:
        path = self.batch_path(batch_id)
        try:
            parquet = pq.ParquetFile(path)
            for group in range(parquet.num_row_groups):
                write(parquet.read_row_group(group, columns=columns))
        except PermissionError as exc:
            raise _unavailable(path, exc) from exc
        except pa.ArrowException as exc:
            raise damaged_batch(path, batch_id, _short(exc)) from exc


def records_by_batch(manifest: Manifest) -> dict[str, list[FileRecord]]:
    """The file records each batch's record carries: those of the ingestion that made it.

    Records are in the order ingestions appended them; a batch takes the records since the
    previous batch's (files of passes that added no rows, then its own ingestion's), so the
    records taken together, in batch order, are the manifest's up to its last batch.
    """
    named = {b.id for b in manifest.batches}
    groups: dict[str, list[FileRecord]] = {}
    pending: list[FileRecord] = []
    for record in manifest.files:
        pending.append(record)
        if record.batch in named:
            groups.setdefault(record.batch, []).extend(pending)
            pending = []
    return groups


def cut_snapshot(dataset: Dataset, manifest: Manifest) -> bytes:
    """Cut finaldata.csv back to the length ``manifest`` records when rows were appended after
    it (by an ingestion that never published); returns the bytes cut off."""
    recorded = manifest.snapshot
    path = dataset.snapshot_path
    current = [b.id for b in manifest.batches]
    if not current or recorded.get("batches") != current or not path.exists():
        return b""
    end = recorded.get("bytes")
    if not isinstance(end, int) or path.stat().st_size <= end:
        return b""
    with path.open("rb") as handle:
        handle.seek(end)
        tail = handle.read()
    os.truncate(path, end)
    return tail


def damaged_batch(path: Path, batch_id: str, why: str, others: tuple[str, ...] = ()) -> StateError:
    """The refusal for a batch Beryl cannot read: which file, why, and the command that
    recovers (``others``: more batches damaged alike)."""
    more = f" (and {len(others)} more batch(es))" if others else ""
    ids = " ".join((batch_id, *others))
    return StateError(
        f"dataset batch {path} is damaged ({why}){more}",
        hint=f"set it aside with `beryl dataset set-aside {ids}`: the files that fed it are "
        "read again from the input folder on the next pass, and the batch is kept in "
        f"{path.parent.parent / RECOVERY_FOLDER}",
    )


def _unavailable(path: Path, exc: OSError) -> StateError:
    message, hint = describe_os_error(exc, path)
    return StateError(f"cannot read {path}: {message}", hint=hint)


def _short(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) <= 200 else text[:200] + "…"


def set_aside_batch(target: Settings | Dataset, batch_id: str) -> SetAside:
    """Move a batch Beryl cannot use (with its index and record) to ``.recovered/``, publish a
    manifest without it, and mark the files that fed it as not ingested, so that the next pass
    reads them again from the input folder and their rows come back.

    ``target``: the workspace's ``Settings`` (the workspace lock is taken here), or a
    ``Dataset`` whose caller holds it.

        set_aside_batch(settings, "20240611T101500123456Z")
    """
    return set_aside_batches(target, [batch_id])


def set_aside_batches(
    target: Settings | Dataset, batch_ids: list[str] | None, *, write_snapshot: bool | None = None
) -> SetAside:
    """``set_aside_batch`` for several batches at once; ``None``: every batch."""
    from beryl.data.repair import set_aside

    if isinstance(target, Dataset):
        keep = target.snapshot_path.exists() if write_snapshot is None else write_snapshot
        return set_aside(target, batch_ids, keep)
    from beryl.loop.passes import pass_lock

    with pass_lock(target):
        keep = target.write_csv_snapshot if write_snapshot is None else write_snapshot
        return set_aside(Dataset(target.output_folder), batch_ids, keep)
