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
    .recovered/<time>/        what a repair or a set-aside moved aside (never deleted)

A batch's files are written before the manifest that names it (its record last), so a killed
ingestion leaves at most batch files that no reader ever sees, and every batch a manifest names
carries what is needed to rebuild the manifest without it. The records themselves are in
``beryl.data.manifest``, the snapshot's upkeep in ``beryl.data.snapshot``; ``beryl.data.repair``
holds the repairs (rebuilding a lost or damaged manifest from the batch records, rebuilding
damaged hash indexes) and ``beryl.data.setaside`` sets batches aside.

A ``Dataset`` knows the identity of the manifest it last read or published
(``loaded_identity``): ``is_current()`` tells with one ``stat`` whether ``dataset.json`` is
still that one, so a workspace reads it again only when another process changed it. Arrow is
imported by what reads the batches' rows: a command that only checks the dataset (an ingestion
or a pass with nothing new) never loads it.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import numpy as np

from beryl._io import TMP_PREFIX, atomic_write_json, atomic_write_text
from beryl.data import rowhash, snapshot
from beryl.data._batchfiles import BatchWriter, write_hashes
from beryl.data.manifest import (
    FORMAT_VERSION,
    BatchInfo,
    BatchRecord,
    FileRecord,
    Manifest,
    records_by_batch,
)
from beryl.data.safeopen import Identity
from beryl.data.schema import Schema
from beryl.errors import EmptyDatasetError, StateError, describe_os_error
from beryl.recovery import RECOVERY_FOLDER

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

MANIFEST_NAME = "dataset.json"
SNAPSHOT_NAME = "finaldata.csv"
INGESTED_FILES_NAME = "ingestedfiles.txt"
BATCH_FOLDER = "batches"
PARQUET_SUFFIX = ".parquet"
HASHES_SUFFIX = ".hashes.npy"
RECORD_SUFFIX = ".batch.json"
_REBUILT = "the next `beryl ingest` or `beryl run` rebuilds it from the batches' own records"


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
        # the identity of dataset.json as last read or published here (None: there was none)
        self.loaded_identity: Identity | None = None
        self._manifest, self.problem = self._load()

    @property
    def manifest(self) -> Manifest:
        if self.problem is not None:
            self.problem.raise_it()
        return self._manifest

    def is_current(self) -> bool:
        """Whether ``dataset.json`` is still the one this dataset last read or published."""
        return Identity.at(self.manifest_path) == self.loaded_identity

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
        return self.manifest.rows

    def _load(self) -> tuple[Manifest, _Problem | None]:
        path = self.manifest_path
        try:
            with path.open("rb") as handle:
                self.loaded_identity = Identity.of(os.fstat(handle.fileno()))
                raw = handle.read()
        except FileNotFoundError:
            if not self.batch_ids_on_disk():
                return Manifest(), None  # nothing ingested yet
            error = StateError(
                f"dataset record {path} is missing, but {self.batch_folder} holds batches",
                hint=_REBUILT,
            )
            return Manifest(), _Problem(error, rebuild=True)
        except OSError as exc:
            self.loaded_identity = Identity.at(path)
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

    def files_on_disk(self) -> list[Path]:
        """The files in ``batches/``, in name order (temporary files of writes aside)."""
        try:
            paths = sorted(self.batch_folder.iterdir())
        except (FileNotFoundError, NotADirectoryError):
            return []
        return [p for p in paths if not p.name.startswith(TMP_PREFIX)]

    def batch_files(self, batch_id: str) -> list[Path]:
        """The files of a batch that are on disk (every ``batches/<id>.*``)."""
        return [p for p in self.files_on_disk() if p.name.split(".", 1)[0] == batch_id]

    def batch_ids_on_disk(self) -> set[str]:
        """The batch ids that files in ``batches/`` belong to."""
        return {p.name.split(".", 1)[0] for p in self.files_on_disk() if p.name[0] != "."}

    def new_batch_id(self, taken: Collection[str] = ()) -> str:
        """A batch id no batch has, on record, on disk or in ``taken``: the UTC time, to the
        microsecond, so that ids sort as the batches were made."""
        used = {b.id for b in self._manifest.batches} | self.batch_ids_on_disk() | set(taken)
        while True:
            candidate = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
            if candidate not in used:
                return candidate

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
        import pyarrow as pa

        tables = [self._read_batch(b.id, columns) for b in wanted]
        return pa.concat_tables(tables) if len(tables) > 1 else tables[0]

    def _read_batch(self, batch_id: str, columns: list[str] | None) -> pa.Table:
        import pyarrow as pa
        import pyarrow.parquet as pq

        path = self.batch_path(batch_id)
        try:
            return pq.read_table(path, columns=columns)
        except PermissionError as exc:
            raise _unavailable(path, exc) from exc
        except (OSError, pa.ArrowException) as exc:  # ArrowInvalid: a damaged file
            raise damaged_batch(path, batch_id, _short(exc)) from exc

    def row_groups(self, batch_id: str, columns: list[str] | None = None) -> Iterator[pa.Table]:
        """A batch's rows a Parquet row group at a time (memory holds one group)."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        path = self.batch_path(batch_id)
        try:
            parquet = pq.ParquetFile(path)
            for group in range(parquet.num_row_groups):
                yield parquet.read_row_group(group, columns=columns)
        except PermissionError as exc:
            raise _unavailable(path, exc) from exc
        except (OSError, pa.ArrowException) as exc:
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
                manifest.snapshot = snapshot.state(self, manifest)
            elif settings_snapshot:
                manifest.snapshot = snapshot.write(self, previous, manifest)
            else:
                manifest.snapshot = None
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
        names = self.ingested_names()
        atomic_write_text(self.folder / INGESTED_FILES_NAME, "".join(n + "\n" for n in names))

    def publish(self, manifest: Manifest, previous: Manifest | None = None) -> None:
        """Write the batch records ``manifest`` needs, then the manifest itself (atomically),
        and use it from now on.

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
        self.adopt(manifest)

    def adopt(self, manifest: Manifest) -> None:
        """Use ``manifest`` from now on: it is what ``dataset.json`` holds now (just published,
        or, with no ``dataset.json``, what a repair made of the batches)."""
        self._manifest, self.problem = manifest, None
        self.loaded_identity = Identity.at(self.manifest_path)

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
            if not self.discard_unpublished([b.id for b in manifest.batches if b.id not in known]):
                snapshot.cut(self, previous)

    def discard_unpublished(self, batch_ids: list[str]) -> bool:
        """After a failed write: remove the files of these new batches that the manifest on disk
        does not name; whether it names any (it was published after all, and stays)."""
        on_disk = Dataset(self.folder)
        published = set() if on_disk.problem else {b.id for b in on_disk._manifest.batches}
        for batch_id in batch_ids:
            if batch_id not in published:
                for path in self.batch_files(batch_id):
                    path.unlink(missing_ok=True)
        return not published.isdisjoint(batch_ids)

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
