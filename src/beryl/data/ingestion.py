"""Ingestion: find new CSV files, read and clean them, and append one deduplicated batch.

A file is new when its name *and* content hash have not been seen: a renamed copy of an ingested
file is recorded as ``duplicate-file``; a changed file is read again and adds only its new rows.
A file whose identity (device, inode, size, modification and change times) matches its record
is not read at all, so a pass over an unchanged folder costs a directory listing.

Every fault of a file ends in one of three ways, never in a failed pass: ingested; recorded as
``quarantined`` with a reason naming the file and what to do (left where it is, tried again
when it changes, or when the dataset's types change for a file refused for a column's type);
or deferred to the next pass (it vanished, or changed while it was read).
"""

from __future__ import annotations

import dataclasses
import os
import stat
import time
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from beryl._io import is_utf8, utc_now
from beryl.config import Settings
from beryl.data.dataset import BatchInfo, Dataset, FileRecord, Manifest
from beryl.data.deduplication import Deduplicator
from beryl.data.inputfile import (
    WHOLE_FILE_BYTES,
    Identity,
    InputFile,
    NotRegularFileError,
    read_blocks,
)
from beryl.data.reading import check_classes, first_schema, read_clean
from beryl.data.schema import Schema
from beryl.errors import DataError, SchemaError

Progress = Callable[[str, int, int], None]

_SETTLE_NS = 2_000_000_000


@dataclass(frozen=True)
class Candidate:
    """A file in the input folder that the dataset has not seen with this identity."""

    path: Path
    name: str
    sha256: str
    identity: Identity
    listed_ns: int  # when the folder was listed: a file time older than that is trusted

    @property
    def size(self) -> int:
        return self.identity.size

    @property
    def mtime_ns(self) -> int:
        return self.identity.mtime_ns

    def record(self, sha256: str, status: str, reason: str | None = None) -> FileRecord:
        """The ingestion record of this file, as of now.

        Its times are recorded only when they were older than the settle period when the
        folder was listed: file times are coarse (milliseconds, or seconds), so a file rewritten
        right after it was read could keep its size and times.
        """
        info = self.identity
        return FileRecord(
            self.name,
            sha256,
            status,
            _now(),
            size=info.size,
            mtime_ns=_trusted(info.mtime_ns, self.listed_ns),
            ctime_ns=_trusted(info.ctime_ns, self.listed_ns),
            dev=info.dev,
            ino=info.ino,
            reason=reason,
        )


@dataclass
class Scan:
    """What is in the input folder compared with the ingestion record."""

    new: list[Candidate] = field(default_factory=list)
    duplicates: list[FileRecord] = field(default_factory=list)
    rejected: list[FileRecord] = field(default_factory=list)
    known: list[str] = field(default_factory=list)
    deferred: list[str] = field(default_factory=list)


@dataclass
class IngestionResult:
    """The outcome of one ingestion."""

    records: list[FileRecord] = field(default_factory=list)
    batch: BatchInfo | None = None
    deferred: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    dataset_rows: int = 0

    @property
    def rows_added(self) -> int:
        return self.batch.rows if self.batch else 0

    @property
    def quarantined(self) -> list[FileRecord]:
        return [r for r in self.records if r.status == "quarantined"]

    @property
    def ingested(self) -> list[FileRecord]:
        return [r for r in self.records if r.status == "ingested"]

    @property
    def partial(self) -> bool:
        return bool(self.quarantined)

    @property
    def changed(self) -> bool:
        return bool(self.records)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _batch_id() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")


def _trusted(time_ns: int, listed_ns: int) -> int | None:
    """A file time to trust later, or None for one within the settle period of the listing."""
    return time_ns if listed_ns - time_ns > _SETTLE_NS else None


class _Known:
    """What the ingestion record says about file contents: seen under a name, or ingested.

    A file refused for a column's type against another schema than the dataset's (``key``)
    counts as unseen: it is judged again after a re-type.
    """

    def __init__(self, dataset: Dataset, key: str | None) -> None:
        current = [
            r
            for r in dataset.files
            if not (r.status == "quarantined" and r.schema_key and r.schema_key != key)
        ]
        self.by_name_hash = {(r.name, r.sha256) for r in current}
        self.ingested = {r.sha256: r.name for r in dataset.files if r.status == "ingested"}
        self.identities = {
            identity for r in current if (identity := _recorded_identity(r)) is not None
        }
        self.latest = {(r.name, r.sha256): index for index, r in enumerate(dataset.files)}

    def unchanged(self, name: str, info: os.stat_result) -> bool:
        """Whether the file's identity matches a record: then it is not read."""
        return (name, Identity.of(info)) in self.identities

    def duplicate(self, candidate: Candidate, digest: str) -> FileRecord | None:
        """The record of a renamed copy of an ingested file, else None."""
        if digest not in self.ingested:
            return None
        reason = f"same content as {self.ingested[digest]}, already ingested"
        return candidate.record(digest, "duplicate-file", reason)


def _recorded_identity(record: FileRecord) -> tuple[str, Identity] | None:
    values = (record.dev, record.ino, record.mtime_ns, record.ctime_ns)
    if any(v is None for v in values):
        return None  # recorded by an older Beryl, or changed moments before it was read
    dev, ino, mtime_ns, ctime_ns = (int(v) for v in values if v is not None)
    return record.name, Identity(dev, ino, record.size, mtime_ns, ctime_ns)


def _schema_key(dataset: Dataset) -> str | None:
    return dataset.schema.key() if dataset.schema is not None else None


# Characters that end a line for some reader of a line-based file (ingestedfiles.txt, logs, a
# terminal): C0 and C1 controls, DEL, and the Unicode line and paragraph separators.
def _control_character(name: str) -> str | None:
    """The first character of ``name`` that must not go into a line-based file, escaped."""
    for char in name:
        if unicodedata.category(char) == "Cc" or char in "\u2028\u2029":
            return char.encode("unicode_escape").decode("ascii")
    return None


def _shown(name: str) -> str:
    """``name`` with every control character escaped (``\\n``, ``\\x1b``), fit for one line."""
    return "".join(
        c.encode("unicode_escape").decode("ascii")
        if unicodedata.category(c) == "Cc" or c in "\u2028\u2029"
        else c
        for c in name
    )


def _rejection(name: str, info: os.stat_result) -> FileRecord | None:
    """The quarantine record of an entry that is never read for its name or kind, else None.

    Its key (in ``sha256``) changes with the entry, so an unchanged one is recorded once.
    """
    if not is_utf8(name):
        shown = _shown(os.fsencode(name).decode("utf-8", errors="replace"))
        return FileRecord(
            name=shown,
            sha256=f"bad-name:{info.st_ino}:{info.st_mtime_ns}",
            status="quarantined",
            time=_now(),
            reason=f"{shown}: the file name is not valid UTF-8; rename the file",
        )
    control = _control_character(name)
    if control is not None:
        shown = _shown(name)
        return FileRecord(
            name=shown,
            sha256=f"bad-name:{info.st_ino}:{info.st_mtime_ns}",
            status="quarantined",
            time=_now(),
            reason=f"{shown}: the file name contains a control character ({control}): "
            "rename the file",
        )
    if not stat.S_ISREG(info.st_mode):
        kind = "a symbolic link" if stat.S_ISLNK(info.st_mode) else "not a regular file"
        return FileRecord(
            name=name,
            sha256=f"not-a-file:{info.st_mode:o}:{info.st_mtime_ns}",
            status="quarantined",
            time=_now(),
            reason=f"{name} is {kind}: only regular files inside the input folder are read",
        )
    return None


def _listing(settings: Settings) -> list[os.DirEntry[str]]:
    folder = settings.input_folder
    if not folder.is_dir():
        raise DataError(
            f"input folder {folder} does not exist",
            hint="create it or fix input_folder_path in config.json",
        )
    with os.scandir(folder) as entries:
        return sorted((e for e in entries if e.name.lower().endswith(".csv")), key=lambda e: e.name)


def scan_input(settings: Settings, dataset: Dataset, *, read_new: bool = True) -> Scan:
    """Classify every ``*.csv`` entry of the input folder against the ingestion record.

    A file whose identity matches its record is not opened. ``read_new=False`` leaves the
    others unread (their ``sha256`` empty): ``ingest`` reads each once and hashes it as it goes.
    With ``read_new`` each is hashed (in blocks) and treated as ``ingest`` would treat it: one
    that vanished is deferred, one that cannot be read is rejected (quarantined) with the reason.
    """
    scan = Scan()
    known = _Known(dataset, _schema_key(dataset))
    listed_ns = time.time_ns()
    for entry in _listing(settings):
        try:
            info = entry.stat(follow_symlinks=False)
        except FileNotFoundError:
            scan.deferred.append(entry.name)  # gone since the listing: looked at next pass
            continue
        except OSError as exc:
            _refuse_unlisted(entry.name, exc, known, scan)
            continue
        rejected = _rejection(entry.name, info)
        if rejected is not None:
            if (rejected.name, rejected.sha256) not in known.by_name_hash:
                scan.rejected.append(rejected)
            continue
        if known.unchanged(entry.name, info):
            scan.known.append(entry.name)
            continue
        candidate = Candidate(Path(entry.path), entry.name, "", Identity.of(info), listed_ns)
        if not read_new:
            scan.new.append(candidate)
            continue
        _hash_candidate(candidate, known, scan)
    return scan


def _refuse_unlisted(name: str, exc: OSError, known: _Known, scan: Scan) -> None:
    """An entry that cannot even be looked at (``stat`` failed)."""
    key = f"unreadable:{exc.errno}"
    if (name, key) not in known.by_name_hash:
        reason = f"{name}: cannot be read: {exc.strerror or exc}"
        scan.rejected.append(FileRecord(name, key, "quarantined", _now(), reason=reason))


def _hash_candidate(candidate: Candidate, known: _Known, scan: Scan) -> None:
    """Hash a file that may be new, as ``ingest`` would read it (``scan_input(read_new=True)``)."""
    try:
        with InputFile(candidate.path) as source:
            if source.identity != candidate.identity:
                scan.deferred.append(candidate.name)  # changed since the listing
                return
            source.drain()
            if not source.settled():
                scan.deferred.append(candidate.name)  # still being written
                return
            digest = source.digest
    except FileNotFoundError:
        scan.deferred.append(candidate.name)
        return
    except NotRegularFileError:
        record = _swapped(candidate)
        if record is None:
            scan.deferred.append(candidate.name)
        elif (record.name, record.sha256) not in known.by_name_hash:
            scan.rejected.append(record)
        return
    except OSError as exc:
        record = _unreadable_record(candidate, exc)
        if (record.name, record.sha256) not in known.by_name_hash:
            scan.rejected.append(record)
        return
    candidate = dataclasses.replace(candidate, sha256=digest)
    duplicate = known.duplicate(candidate, digest)
    if (candidate.name, digest) in known.by_name_hash:
        scan.known.append(candidate.name)
    elif duplicate is not None:
        scan.duplicates.append(duplicate)
    else:
        scan.new.append(candidate)


def _swapped(candidate: Candidate) -> FileRecord | None:
    """The record of an entry that became a link, folder or FIFO after the listing, the same
    one the listing makes (so the next pass does not record it again); None when it is gone
    or a regular file again (looked at next pass)."""
    try:
        info = os.lstat(candidate.path)
    except OSError:
        return None
    return _rejection(candidate.name, info)


def _unreadable_record(candidate: Candidate, exc: OSError) -> FileRecord:
    """Quarantine a file that cannot be read; it is tried again once its identity changes (a
    change of permissions changes its ``ctime``)."""
    info = candidate.identity
    key = f"unreadable:{info.dev}:{info.ino}:{info.size}:{info.mtime_ns}:{info.ctime_ns}"
    if isinstance(exc, PermissionError):
        what = "give the user running Beryl read access to it"
    else:
        what = "check the file and the disk it is on"
    reason = (
        f"{candidate.name}: cannot be read: {exc.strerror or exc} ({what}; it is tried again "
        "once the file changes)"
    )
    return candidate.record(key, "quarantined", reason)


def ingest(settings: Settings, progress: Progress | None = None) -> IngestionResult:
    """Ingest the new files of the input folder as one deduplicated batch.

    Files are read one at a time (a large one in blocks) and their new rows written out a
    group at a time, so memory holds a bounded amount of data, not the files nor the batch.
    """
    dataset = Dataset(settings.output_folder)
    if dataset.schema is not None:
        dataset.schema.check_settings(settings)
    scan = scan_input(settings, dataset, read_new=False)
    run = _Pass(settings, dataset, scan)
    batch_id = _batch_id()
    if scan.new:
        dataset.upgrade_hashes()
    stored = dataset.hash_runs() if scan.new else []  # the dataset's row hashes, mapped
    with dataset.batch_writer(batch_id, settings.write_csv_snapshot, settings.id_columns) as writer:
        run.deduplicate = Deduplicator(stored, writer)
        for index, candidate in enumerate(scan.new):
            if progress:
                progress(candidate.name, index, len(scan.new))
            run.take(candidate)
        run.deduplicate.flush()
        readers = run.deduplicate.records
        if progress and scan.new:
            progress("", len(scan.new), len(scan.new))

    result = run.result
    manifest = Manifest(
        schema=dataset.schema or run.schema,
        batches=list(dataset.batches),
        files=run.files,
        snapshot=dict(dataset.manifest.snapshot),
        classes=run.classes,
    )
    for record in readers:
        record.batch = batch_id if writer.rows else None
    if writer.rows:
        result.batch = BatchInfo(
            id=batch_id, created=utc_now(), rows=writer.rows, files=[r.name for r in readers]
        )
        manifest.batches.append(result.batch)
    result.records.extend(readers)
    manifest.files.extend(result.records)
    if result.records or run.refreshed:
        dataset.commit(manifest, settings.write_csv_snapshot, appended=writer.appended)
    result.dataset_rows = dataset.rows
    return result


class _Pass:
    """One ingestion's reading of its candidates: each ends ingested (handed to the
    deduplicator), recorded (quarantined, duplicate-file), unchanged or deferred."""

    deduplicate: Deduplicator

    def __init__(self, settings: Settings, dataset: Dataset, scan: Scan) -> None:
        self.settings = settings
        self.dataset = dataset
        self.known = _Known(dataset, _schema_key(dataset))
        self.result = IngestionResult(
            records=[*scan.rejected], deferred=list(scan.deferred), unchanged=scan.known
        )
        self.schema = _explained(dataset.schema, settings, dataset)
        self.classes = list(dataset.manifest.classes)
        self.files = list(dataset.files)  # the records as they will be published
        self.refreshed = False
        self.same_pass: dict[str, FileRecord] = {}  # content hash -> first file with it

    def take(self, candidate: Candidate) -> None:
        """Read one candidate (once, hashing it as it goes) and decide what becomes of it."""
        try:
            source = InputFile(candidate.path)
        except FileNotFoundError:
            self.result.deferred.append(candidate.name)  # moved away mid-pass: look again later
            return
        except NotRegularFileError:
            self._swapped(candidate)
            return
        except OSError as exc:
            self._unreadable(candidate, exc)
            return
        with source:
            if source.identity != candidate.identity:
                self.result.deferred.append(candidate.name)  # changed since the listing
                return
            try:
                if source.size <= WHOLE_FILE_BYTES:
                    self._whole(candidate, source)
                else:
                    self._in_blocks(candidate, source)
            except OSError as exc:  # a read failed (an I/O error, a file system gone away)
                self._unreadable(candidate, exc)

    def _whole(self, candidate: Candidate, source: InputFile) -> None:
        data = source.read_all()
        record = self._judge(candidate, source)
        if record is None:
            return
        schema = self.schema
        try:
            schema = schema or first_schema(self.settings, data, candidate.name)
            table, record.note = read_clean(data, schema, candidate.name)
            del data
            classes = check_classes(table[schema.target], self.classes, candidate.name)
        except SchemaError as exc:
            self._refuse(record, exc)
            return
        self._accept(record, schema, classes, table.num_rows)
        self.deduplicate.add(record, table)

    def _in_blocks(self, candidate: Candidate, source: InputFile) -> None:
        folder = self.settings.output_folder
        error: SchemaError | None = None
        try:
            blocks = read_blocks(
                source, self.settings, self.schema, self.classes, candidate.name, folder
            )
        except SchemaError as exc:
            blocks, error = None, exc
        try:
            record = self._judge(candidate, source)
            if record is None:
                return
            if blocks is None:
                assert error is not None
                self._refuse(record, error)
                return
            record.note = blocks.note
            self._accept(record, blocks.schema, blocks.classes, blocks.rows)
            for table in blocks.held:
                self.deduplicate.add(record, table)
        finally:
            if blocks is not None:
                blocks.held.close()

    def _judge(self, candidate: Candidate, source: InputFile) -> FileRecord | None:
        """After a whole read: the record of a file to ingest, or None when it is decided
        already (changed while read, unchanged content, a renamed copy)."""
        if not source.settled():
            self.result.deferred.append(candidate.name)  # still being written
            return None
        digest = source.digest
        if (candidate.name, digest) in self.known.by_name_hash:
            self.result.unchanged.append(candidate.name)
            self._refresh(candidate, digest)
            return None
        duplicate = self.known.duplicate(candidate, digest)
        if duplicate is not None:
            self.result.records.append(duplicate)
            return None
        record = candidate.record(digest, "ingested")
        earlier = self.same_pass.get(digest)
        if earlier is not None and earlier.status == "ingested":
            record.status = "duplicate-file"
            record.reason = f"same content as {earlier.name}, ingested in this pass"
            self.result.records.append(record)
            return None
        self.same_pass[digest] = record
        return record

    def _accept(self, record: FileRecord, schema: Schema, classes: list[object], rows: int) -> None:
        self.schema = schema
        self.classes = classes
        record.rows_read = rows

    def _refuse(self, record: FileRecord, exc: SchemaError) -> None:
        from beryl.data.cleaning import ColumnTypeError

        record.status = "quarantined"
        record.reason = str(exc)
        if isinstance(exc, ColumnTypeError) and self.schema is not None:
            record.schema_key = self.schema.key()  # judged again after a re-type
        self.result.records.append(record)

    def _refresh(self, candidate: Candidate, digest: str) -> None:
        """Record the new identity of a file whose content is unchanged (touched, copied back,
        its permissions changed), so that the next pass does not read it again."""
        index = self.known.latest.get((candidate.name, digest))
        fresh = candidate.record(digest, "")
        if index is None or fresh.mtime_ns is None or fresh.ctime_ns is None:
            return
        old = self.files[index]
        self.files[index] = dataclasses.replace(
            old,
            size=fresh.size,
            mtime_ns=fresh.mtime_ns,
            ctime_ns=fresh.ctime_ns,
            dev=fresh.dev,
            ino=fresh.ino,
        )
        self.refreshed = True

    def _swapped(self, candidate: Candidate) -> None:
        rejected = _swapped(candidate)
        if rejected is None:
            self.result.deferred.append(candidate.name)
        elif (rejected.name, rejected.sha256) in self.known.by_name_hash:
            self.result.unchanged.append(candidate.name)
        else:
            self.result.records.append(rejected)

    def _unreadable(self, candidate: Candidate, exc: OSError) -> None:
        if isinstance(exc, FileNotFoundError):
            self.result.deferred.append(candidate.name)
            return
        record = _unreadable_record(candidate, exc)
        if (candidate.name, record.sha256) in self.known.by_name_hash:
            self.result.unchanged.append(candidate.name)
            return
        self.result.records.append(record)


def _explained(schema: Schema | None, settings: Settings, dataset: Dataset) -> Schema | None:
    """The dataset's schema, with where each feature's type came from filled in for a dataset
    recorded before origins were (for messages only; the record keeps its schema)."""
    if schema is None or len(schema.origin) == len(schema.features):
        return schema
    first = next((r.name for r in dataset.files if r.status == "ingested"), None)
    origin = {}
    for column in schema.features:
        kind = "numeric" if column in schema.numeric else "categorical"
        listed = settings.numeric_features if kind == "numeric" else settings.categorical_features
        if listed is not None and column in listed:
            origin[column] = f"listed in {kind}_features in config.json"
        elif first is not None:
            origin[column] = f"inferred as {kind} from the first ingested file {first}"
    return schema.with_origin(origin)
