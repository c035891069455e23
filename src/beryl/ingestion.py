"""Ingestion: find new CSV files, read and clean them, and append one deduplicated batch.

A file is new when its name *and* content hash have not been seen: a renamed copy of an ingested
file is recorded as ``duplicate-file``; a changed file is read again and adds only its new rows.
A file that cannot be used is recorded as ``quarantined`` with the reason and left where it is;
it is tried again when its content changes. The good files of the same pass still go in.
"""

from __future__ import annotations

import csv
import os
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from beryl._io import is_utf8, sha256_bytes, utc_now
from beryl.config import Settings
from beryl.dataset import BatchInfo, BatchWriter, Dataset, FileRecord, Manifest
from beryl.errors import DataError, SchemaError
from beryl.rowhash import as_bools, row_hashes
from beryl.schema import MAX_EXACT_LABEL, Schema, arrow_schema, infer_roles, infer_schema

Progress = Callable[[str, int, int], None]

_SETTLE_NS = 2_000_000_000


@dataclass(frozen=True)
class Candidate:
    """A file in the input folder that the dataset has not seen with this content."""

    path: Path
    name: str
    sha256: str
    size: int
    mtime_ns: int

    def record(self, sha256: str, status: str, reason: str | None = None) -> FileRecord:
        """The ingestion record of this file, as of now."""
        mtime_ns = _trusted_mtime(self.mtime_ns)
        return FileRecord(
            self.name, sha256, status, _now(), size=self.size, mtime_ns=mtime_ns, reason=reason
        )


@dataclass
class Scan:
    """What is in the input folder compared with the ingestion record."""

    new: list[Candidate] = field(default_factory=list)
    duplicates: list[FileRecord] = field(default_factory=list)
    rejected: list[FileRecord] = field(default_factory=list)
    known: list[str] = field(default_factory=list)


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


class _Known:
    """What the ingestion record says about file contents: seen under a name, or ingested."""

    def __init__(self, dataset: Dataset) -> None:
        self.by_name_hash = {(r.name, r.sha256) for r in dataset.files}
        self.ingested = {r.sha256: r.name for r in dataset.files if r.status == "ingested"}

    def duplicate(self, candidate: Candidate, digest: str) -> FileRecord | None:
        """The record of a renamed copy of an ingested file, else None."""
        if digest not in self.ingested:
            return None
        reason = f"same content as {self.ingested[digest]}, already ingested"
        return candidate.record(digest, "duplicate-file", reason)


def scan_input(settings: Settings, dataset: Dataset, *, read_new: bool = True) -> Scan:
    """Classify every ``*.csv`` entry of the input folder against the ingestion record.

    ``read_new=False`` leaves files that may be new unread (their ``sha256`` empty): ``ingest``
    reads each once and hashes it as it goes.
    """
    folder = settings.input_folder
    scan = Scan()
    if not folder.is_dir():
        raise DataError(
            f"input folder {folder} does not exist",
            hint="create it or fix input_folder_path in config.json",
        )
    known = _Known(dataset)
    by_name_hash = known.by_name_hash
    # A file whose name, size and modification time match its record is not read again (as git
    # and rsync do): a pass with no new data costs a directory listing, not a hash of every file.
    seen = {(r.name, r.size, r.mtime_ns) for r in dataset.files if r.mtime_ns is not None}
    for entry in sorted(os.scandir(folder), key=lambda e: e.name):
        if not entry.name.lower().endswith(".csv"):
            continue
        info = entry.stat(follow_symlinks=False)
        if not is_utf8(entry.name):
            shown = os.fsencode(entry.name).decode("utf-8", errors="replace")
            key = (shown, f"bad-name:{info.st_ino}:{info.st_mtime_ns}")
            if key not in by_name_hash:
                scan.rejected.append(
                    FileRecord(
                        name=shown,
                        sha256=key[1],
                        status="quarantined",
                        time=_now(),
                        reason=f"{shown}: the file name is not valid UTF-8; rename the file",
                    )
                )
            continue
        if not stat.S_ISREG(info.st_mode):
            kind = "a symbolic link" if stat.S_ISLNK(info.st_mode) else "not a regular file"
            key = (entry.name, f"not-a-file:{info.st_mode:o}:{info.st_mtime_ns}")
            if key not in by_name_hash:
                scan.rejected.append(
                    FileRecord(
                        name=entry.name,
                        sha256=key[1],
                        status="quarantined",
                        time=_now(),
                        reason=f"{entry.name} is {kind}: only regular files inside the input "
                        "folder are read",
                    )
                )
            continue
        if (entry.name, info.st_size, info.st_mtime_ns) in seen:
            scan.known.append(entry.name)
            continue
        candidate = Candidate(Path(entry.path), entry.name, "", info.st_size, info.st_mtime_ns)
        if not read_new:
            scan.new.append(candidate)
            continue
        data = candidate.path.read_bytes()
        digest = sha256_bytes(data)
        candidate = Candidate(candidate.path, entry.name, digest, len(data), info.st_mtime_ns)
        duplicate = known.duplicate(candidate, digest)
        if (entry.name, digest) in by_name_hash:
            scan.known.append(entry.name)
        elif duplicate is not None:
            scan.duplicates.append(duplicate)
        else:
            scan.new.append(candidate)
    return scan


def text_columns(settings: Settings, schema: Schema | None) -> list[str]:
    """Columns read as text: identifiers, categorical features and the label."""
    if schema is not None:
        return schema.text_columns
    return [*settings.id_columns, *(settings.categorical_features or []), settings.target]


def read_clean(data: bytes, schema: Schema, source: str) -> tuple[pa.Table, str | None]:
    """A file's rows, cleaned, as a table of the dataset's types; with a note on how it was read.

    A well-formed file is parsed straight into the dataset's types by Arrow (on all cores, no
    Python objects); anything else takes the careful path (``read_csv_bytes`` and
    ``clean_dataset``), which either accepts it with the same result or says what is wrong.
    """
    table = _read_typed(data, schema)
    if table is not None:
        return table, None
    from beryl.cleaning import clean_dataset, read_csv_bytes, to_arrow

    raw = read_csv_bytes(data, source, schema.text_columns)
    frame = clean_dataset(raw, schema, source)
    return to_arrow(frame, schema), raw.attrs.get("note")


# What Python's str.strip() removes (every character whose isspace() is true): a text value with
# one at either end is trimmed by the careful path, so the fast path leaves such files to it.
PY_WHITESPACE = (
    "\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005"
    "\u2006\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
)


def _padded(values: pa.ChunkedArray) -> bool:
    trimmed = pc.utf8_trim(values, characters=PY_WHITESPACE)
    return not pc.all(pc.equal(trimmed, values)).as_py()


def _read_typed(data: bytes, schema: Schema) -> pa.Table | None:
    """Parse ``data`` directly as the dataset's columns, or None when the file needs a closer look.

    The result equals what the careful path would produce: numbers, blanks and labels parse the
    same way, and every case the careful path would change or refuse (padded text, blank labels,
    infinities, labels beyond exact integers, odd headers) makes this return None.
    """
    names = _header(data)
    if names is None or len(set(names)) != len(names) or set(schema.columns) - set(names):
        return None
    types = arrow_schema(schema)
    # Only a quoted value can hold a line break; without quotes after the header, Arrow may split
    # the file at any line end, which parses faster.
    quoted = data.find(b'"', data.find(b"\n") + 1) >= 0
    try:
        table = pacsv.read_csv(
            pa.BufferReader(data),
            parse_options=pacsv.ParseOptions(newlines_in_values=quoted),
            convert_options=pacsv.ConvertOptions(
                column_types={f.name: f.type for f in types},
                include_columns=schema.columns,
                strings_can_be_null=True,
            ),
        )
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None
    if table.num_rows == 0 or table.schema != types:
        return None
    for column in schema.numeric:
        if pc.any(pc.is_inf(table[column])).as_py():
            return None
    label = table[schema.target]
    if label.null_count:
        return None
    if schema.label_is_numeric and pc.max(pc.abs(label)).as_py() > MAX_EXACT_LABEL:
        return None
    for column_type in types:
        if pa.types.is_large_string(column_type.type) and _padded(table[column_type.name]):
            return None
    return table


def _first_schema(settings: Settings, data: bytes, source: str) -> Schema:
    """The dataset's schema from its first file: the config's roles, and for features it does
    not list, numeric when every value is a number.

    Arrow's type inference decides when it finds numbers (or nothing) in every unlisted column;
    a text column could still hold numbers the careful reader accepts (padded, say), so then the
    careful path decides.
    """
    reserved = set(text_columns(settings, None))
    names = _header(data)
    table = None
    if names is not None and len(set(names)) == len(names):
        try:
            table = pacsv.read_csv(
                pa.BufferReader(data),
                parse_options=pacsv.ParseOptions(newlines_in_values=True),
                convert_options=pacsv.ConvertOptions(
                    column_types={c: pa.string() for c in reserved if c in names},
                    strings_can_be_null=True,
                ),
            )
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            table = None
    if table is not None and table.num_rows:
        kinds = {name: table.schema.field(name).type for name in table.column_names}
        numeric = {
            name
            for name, kind in kinds.items()
            if pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_null(kind)
        }
        if all(name in numeric for name in kinds if name not in reserved):
            return infer_roles(settings, list(kinds), numeric.__contains__, source)
    from beryl.cleaning import read_csv_bytes

    raw = read_csv_bytes(data, source, text_columns(settings, None))
    return infer_schema(settings, raw, source)


def _header(data: bytes) -> list[str] | None:
    """The column names of a plain header line (no quoted line breaks, no padding), else None."""
    end = data.find(b"\n")
    line = data[: end if end >= 0 else len(data)].rstrip(b"\r")
    if line.count(b'"') % 2 or line.startswith(b"\xef\xbb\xbf"):
        return None
    try:
        names = next(csv.reader([line.decode("utf-8")]))
    except (UnicodeDecodeError, csv.Error, StopIteration):
        return None
    return names if all(n == n.strip() and n for n in names) else None


# Data read (Arrow bytes) before it is deduplicated and written: two groups at most are held,
# one being written while the next is read, so this bounds memory whatever the files' width.
_GROUP_BYTES = 128 * 2**20


class _Deduplicator:
    """Keeps the first occurrence of every row not yet in the dataset, a group of files at a time.

    Files are collected until about ``_GROUP_BYTES`` of data, then deduplicated together: one
    sort of the group's row hashes finds the repeated ones, and set intersections with the
    dataset's sorted hash runs (and the earlier groups of this pass) find the known ones. Only
    rows whose hash is repeated or known are looked at one by one, so the common case costs a
    sort.
    """

    def __init__(self, stored: list[np.ndarray], writer: BatchWriter) -> None:
        self.runs = [run for run in stored if len(run)]
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
        known = [_intersect(run, unique) for run in self.runs]
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
            record.rows_kept = int(mask.sum())
            fresh = table if record.rows_kept == table.num_rows else table.filter(_arrow_mask(mask))
            self.writer.append(fresh, hashes[start:stop][mask])
            self.records.append(record)
            start = stop
        self.runs.append(np.sort(hashes[keep]))
        self.group, self.size = [], 0


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
    if len(unique) * 16 < len(run):  # a few binary searches beat sorting the big run
        found: np.ndarray = unique[_contains(run, unique)]
        return found
    return np.asarray(np.intersect1d(run, unique, assume_unique=True))


def ingest(settings: Settings, progress: Progress | None = None) -> IngestionResult:
    """Ingest the new files of the input folder as one deduplicated batch.

    Files are read one at a time and their new rows written out at once, so memory holds one
    file, not the whole batch.
    """
    dataset = Dataset(settings.output_folder)
    if dataset.schema is not None:
        dataset.schema.check_settings(settings)
    scan = scan_input(settings, dataset, read_new=False)
    known = _Known(dataset)
    result = IngestionResult(records=[*scan.rejected], unchanged=scan.known)
    schema = dataset.schema
    classes = list(dataset.manifest.classes)
    same_pass: dict[str, FileRecord] = {}  # content hash -> the first file of this pass with it
    batch_id = _batch_id()
    snapshot = settings.write_csv_snapshot
    stored: list[np.ndarray] = []  # the dataset's row hashes, only when a file may be new
    if scan.new:
        dataset.upgrade_hashes()
        stored = dataset.hash_runs()
    with dataset.batch_writer(batch_id, snapshot, settings.id_columns) as writer:
        deduplicate = _Deduplicator(stored, writer)
        for index, candidate in enumerate(scan.new):
            if progress:
                progress(candidate.name, index, len(scan.new))
            try:  # each file is read and hashed once, here
                data = candidate.path.read_bytes()
            except FileNotFoundError:
                result.deferred.append(candidate.name)  # moved away mid-pass: look again next time
                continue
            except OSError as exc:
                _unreadable(candidate, exc, known, result)
                continue
            if _changed_since(candidate):
                result.deferred.append(candidate.name)  # still being written
                continue
            digest = sha256_bytes(data)
            if (candidate.name, digest) in known.by_name_hash:
                result.unchanged.append(candidate.name)
                continue
            duplicate = known.duplicate(candidate, digest)
            if duplicate is not None:
                result.records.append(duplicate)
                continue
            record = candidate.record(digest, "ingested")
            earlier = same_pass.get(digest)
            if earlier is not None and earlier.status == "ingested":
                record.status = "duplicate-file"
                record.reason = f"same content as {earlier.name}, ingested in this pass"
                result.records.append(record)
                continue
            same_pass[digest] = record
            try:
                file_schema = schema or _first_schema(settings, data, candidate.name)
                table, record.note = read_clean(data, file_schema, candidate.name)
                classes = _check_classes(table[file_schema.target], classes, candidate.name)
                schema = file_schema
            except SchemaError as exc:
                record.status = "quarantined"
                record.reason = str(exc)
                result.records.append(record)
                continue
            del data
            record.rows_read = table.num_rows
            deduplicate.add(record, table)
        deduplicate.flush()
        readers = deduplicate.records
        if progress and scan.new:
            progress("", len(scan.new), len(scan.new))

    manifest = Manifest(
        schema=schema,
        batches=list(dataset.batches),
        files=list(dataset.files),
        snapshot=dict(dataset.manifest.snapshot),
        classes=classes,
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
    if result.records:
        dataset.commit(manifest, settings.write_csv_snapshot, appended=writer.appended)
    result.dataset_rows = dataset.rows
    return result


def _unreadable(candidate: Candidate, exc: OSError, known: _Known, result: IngestionResult) -> None:
    """Quarantine a file that cannot be read; it is tried again once its size or time change."""
    key = f"unreadable:{candidate.size}:{candidate.mtime_ns}"
    if (candidate.name, key) in known.by_name_hash:
        result.unchanged.append(candidate.name)
        return
    reason = f"{candidate.name}: cannot be read: {exc.strerror or exc}"
    result.records.append(candidate.record(key, "quarantined", reason))


def _contains(sorted_hashes: np.ndarray, hashes: np.ndarray) -> np.ndarray:
    """Which ``hashes`` occur in the sorted array: a binary search each, no re-sort of the
    (large) existing side."""
    if sorted_hashes.size == 0:
        return np.zeros(len(hashes), dtype=bool)
    position = np.searchsorted(sorted_hashes, hashes)
    position[position == sorted_hashes.size] = 0
    return np.asarray(sorted_hashes[position] == hashes)


def _check_classes(labels: pa.ChunkedArray, known: list[Any], source: str) -> list[Any]:
    """The label values seen so far, including ``labels``; at most two (binary attrition).

    Once the dataset has two label values, a file with any other value is refused.
    """
    found = sorted(set(pc.unique(labels).to_pylist()), key=str)
    unknown = [v for v in found if v not in known]
    if unknown and len(known) + len(unknown) > 2:
        shown = ", ".join(repr(v) for v in unknown[:5])
        raise SchemaError(
            f"{source}: label value(s) {shown} are not among the known classes "
            f"{', '.join(repr(v) for v in known) or '(none yet)'}",
            hint="attrition labels are binary; fix the labels or check positive_label",
        )
    return sorted([*known, *unknown], key=str)


def _trusted_mtime(mtime_ns: int) -> int | None:
    """The modification time to trust later, or None for a file changed moments ago.

    File times are coarse (a few milliseconds): a file rewritten right after it was read could
    keep the same size and time, so only a time older than the settle period is recorded.
    """
    return mtime_ns if time.time_ns() - mtime_ns > _SETTLE_NS else None


def _changed_since(candidate: Candidate) -> bool:
    """True when the file changed after it was hashed: it is still being written."""
    try:
        info = candidate.path.stat()
    except FileNotFoundError:
        return True
    return info.st_size != candidate.size or info.st_mtime_ns != candidate.mtime_ns
