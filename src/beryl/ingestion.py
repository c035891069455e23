"""Ingestion: find new CSV files, read and clean them, and append one deduplicated batch.

A file is new when its name *and* content hash have not been seen: a renamed copy of an ingested
file is recorded as ``duplicate-file``; a changed file is read again and adds only its new rows.
A file that cannot be used is recorded as ``quarantined`` with the reason and left where it is;
it is tried again when its content changes. The good files of the same pass still go in.
"""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv

from beryl._io import sha256_bytes
from beryl.config import Settings
from beryl.dataset import BatchInfo, Dataset, FileRecord, Manifest, utc_now
from beryl.errors import DataError, SchemaError
from beryl.schema import Schema, infer_schema

Progress = Callable[[str, int, int], None]

_MAX_SHOWN = 5
_SETTLE_NS = 2_000_000_000
_SNIFF_BYTES = 64 * 1024
_MAX_LABEL = 2**53  # integer labels beyond this are not exact in the float they parse through


@dataclass(frozen=True)
class Candidate:
    """A file in the input folder that the dataset has not seen with this content."""

    path: Path
    name: str
    sha256: str
    size: int
    mtime_ns: int


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


def scan_input(settings: Settings, dataset: Dataset) -> Scan:
    """Classify every ``*.csv`` entry of the input folder against the ingestion record."""
    folder = settings.input_folder
    scan = Scan()
    if not folder.is_dir():
        raise DataError(
            f"input folder {folder} does not exist",
            hint="create it or fix input_folder_path in config.json",
        )
    by_name_hash = {(r.name, r.sha256) for r in dataset.files}
    # A file whose name, size and modification time match its record is not read again (as git
    # and rsync do): a pass with no new data costs a directory listing, not a hash of every file.
    seen = {(r.name, r.size, r.mtime_ns) for r in dataset.files if r.mtime_ns is not None}
    ingested_hashes = {r.sha256: r.name for r in dataset.files if r.status == "ingested"}
    for entry in sorted(os.scandir(folder), key=lambda e: e.name):
        if not entry.name.lower().endswith(".csv"):
            continue
        info = entry.stat(follow_symlinks=False)
        if not _utf8_name(entry.name):
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
        data = Path(entry.path).read_bytes()
        digest = sha256_bytes(data)
        if (entry.name, digest) in by_name_hash:
            scan.known.append(entry.name)
            continue
        if digest in ingested_hashes:
            scan.duplicates.append(
                FileRecord(
                    name=entry.name,
                    sha256=digest,
                    status="duplicate-file",
                    time=_now(),
                    size=len(data),
                    mtime_ns=_trusted_mtime(info.st_mtime_ns),
                    reason=f"same content as {ingested_hashes[digest]}, already ingested",
                )
            )
            continue
        scan.new.append(
            Candidate(Path(entry.path), entry.name, digest, len(data), info.st_mtime_ns)
        )
    return scan


def _utf8_name(name: str) -> bool:
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def read_csv_bytes(data: bytes, source: str, text_columns: list[str] | None = None) -> pd.DataFrame:
    """Parse CSV bytes into a frame; anything unparsable is a ``SchemaError`` naming ``source``.

    ``text_columns`` (identifiers, categories, labels) are read as written: ``007`` stays
    ``"007"`` instead of becoming the number 7.
    """
    if not data.strip():
        raise SchemaError(f"{source}: the file is empty", hint="send a CSV file with a header row")
    if b"\x00" in data[:_SNIFF_BYTES]:
        raise SchemaError(
            f"{source}: is a binary file, not CSV text (it contains NUL bytes)",
            hint="export the data as CSV",
        )
    column_types = {name: pa.string() for name in text_columns or []}
    note = None
    try:
        table = _parse(data, column_types)
    except pa.ArrowInvalid as exc:
        message = str(exc)
        try:
            if "UTF8" in message or "UTF-8" in message:
                # Not UTF-8: Latin-1 decodes every byte, so the values survive as written.
                table = _parse(data, column_types, encoding="latin-1")
                note = "read as Latin-1 (the file is not valid UTF-8)"
            elif "straddling" in message:
                # A row longer than one parse block: parse the file as a single block.
                table = _parse(data, column_types, block_size=len(data) + 1)
            else:
                raise
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as again:
            raise _unreadable(source, again) from again
    except pa.ArrowNotImplementedError as exc:
        raise _unreadable(source, exc) from exc
    names = [str(n).strip() for n in table.column_names]
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise SchemaError(
            f"{source}: column name(s) {', '.join(duplicated)} appear more than once",
            hint="give every column a unique name",
        )
    frame: pd.DataFrame = table.rename_columns(names).to_pandas()
    if frame.empty:
        raise SchemaError(f"{source}: has a header but no data rows")
    if note:
        frame.attrs["note"] = note
    return frame


def _parse(
    data: bytes,
    column_types: dict[str, pa.DataType],
    *,
    encoding: str = "utf8",
    block_size: int | None = None,
) -> pa.Table:
    read_options = pacsv.ReadOptions(encoding=encoding)
    if block_size is not None:
        read_options.block_size = block_size
    return pacsv.read_csv(
        pa.BufferReader(data),
        read_options=read_options,
        parse_options=pacsv.ParseOptions(newlines_in_values=True),
        convert_options=pacsv.ConvertOptions(strings_can_be_null=True, column_types=column_types),
    )


def _unreadable(source: str, exc: Exception) -> SchemaError:
    return SchemaError(
        f"{source}: not a readable CSV file: {exc}",
        hint="fix the file (comma-separated, UTF-8, one header row) and save it again",
    )


def text_columns(settings: Settings, schema: Schema | None) -> list[str]:
    """Columns read as text: identifiers, categorical features and the label."""
    if schema is not None:
        return schema.text_columns
    return [*settings.id_columns, *(settings.categorical_features or []), settings.target]


def _rows(mask: pd.Series) -> str:
    rows = (np.flatnonzero(mask.to_numpy()) + 1).tolist()
    shown = ", ".join(str(r) for r in rows[:_MAX_SHOWN])
    more = f" and {len(rows) - _MAX_SHOWN} more" if len(rows) > _MAX_SHOWN else ""
    return f"row{'s' if len(rows) > 1 else ''} {shown}{more}"


def _clean_text(series: pd.Series) -> pd.Series:
    text = series.astype(pd.StringDtype(na_value=np.nan)).str.strip()
    return text.mask(text == "", np.nan)


def _clean_numeric(series: pd.Series, column: str, source: str) -> pd.Series:
    if pd.api.types.is_bool_dtype(series):
        raise SchemaError(f"{source}: column {column!r} holds true/false values, not numbers")
    if pd.api.types.is_numeric_dtype(series):
        values = series.astype("float64")
    else:
        text = _clean_text(series)
        values = pd.to_numeric(text, errors="coerce").astype("float64")
        bad = text.notna() & values.isna()
        if bad.any():
            examples = ", ".join(repr(v) for v in text[bad].unique()[:3])
            raise SchemaError(
                f"{source}: column {column!r} has values that are not numbers ({examples}) "
                f"at {_rows(bad)}",
                hint="fix those values or leave them blank for missing",
            )
    infinite = np.isinf(values.to_numpy())
    if infinite.any():
        raise SchemaError(
            f"{source}: column {column!r} has infinite values at {_rows(pd.Series(infinite))}",
            hint="replace them with a finite number or leave them blank for missing",
        )
    return values


def _clean_label(series: pd.Series, schema: Schema, source: str) -> pd.Series:
    column = schema.target
    text = _clean_text(series)
    missing = text.isna()
    if missing.any():
        raise SchemaError(
            f"{source}: label column {column!r} is blank at {_rows(missing)}",
            hint="every row needs a label; remove unlabelled rows or fill them in",
        )
    if not schema.label_is_numeric:
        return text
    values = pd.to_numeric(text, errors="coerce")
    bad = values.isna() | (values != np.floor(values)) | (values.abs() > _MAX_LABEL)
    if bad.any():
        examples = ", ".join(repr(v) for v in text[bad].unique()[:3])
        raise SchemaError(
            f"{source}: label column {column!r} has non-integer values ({examples}) "
            f"at {_rows(bad)}",
            hint="labels are integers because positive_label is; use a string positive_label "
            'such as "Yes" for text labels',
        )
    return values.astype("int64")


def clean_dataset(frame: pd.DataFrame, schema: Schema, source: str) -> pd.DataFrame:
    """The one place cleaning rules live: a raw frame in, the schema's typed columns out.

    Columns are matched by name (order and extra columns do not matter); text is trimmed and
    blank text is missing; numeric columns become float64 with blanks as NaN; labels must be
    present and, for an integer ``positive_label``, integers. Anything else is a ``SchemaError``
    naming ``source``, the column and the rows.
    """
    return _clean(frame, schema, source, schema.columns)


def clean_features(frame: pd.DataFrame, schema: Schema, source: str) -> pd.DataFrame:
    """The same rules for unlabelled rows (what a model predicts on): features only."""
    return _clean(frame, schema, source, schema.features)


def _clean(frame: pd.DataFrame, schema: Schema, source: str, columns: list[str]) -> pd.DataFrame:
    frame = frame.rename(columns=lambda c: str(c).strip().lstrip("\ufeff"))
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise SchemaError(
            f"{source}: missing column(s) {', '.join(missing)}; "
            f"found {', '.join(map(str, frame.columns))}",
            hint="the file needs every column of the dataset's schema",
        )
    out: dict[str, pd.Series] = {}
    for column in columns:
        if column in schema.numeric:
            out[column] = _clean_numeric(frame[column], column, source)
        elif column == schema.target:
            out[column] = _clean_label(frame[column], schema, source)
        else:
            out[column] = _clean_text(frame[column])
    return pd.DataFrame(out, index=pd.RangeIndex(len(frame)))[columns]


def row_hashes(frame: pd.DataFrame) -> np.ndarray:
    """One 64-bit hash per row over every column: the deduplication key."""
    return pd.util.hash_pandas_object(frame, index=False).to_numpy(dtype=np.uint64)


def ingest(settings: Settings, progress: Progress | None = None) -> IngestionResult:
    """Ingest the new files of the input folder as one deduplicated batch."""
    dataset = Dataset(settings.output_folder)
    if dataset.schema is not None:
        dataset.schema.check_settings(settings)
    scan = scan_input(settings, dataset)
    result = IngestionResult(records=[*scan.rejected, *scan.duplicates], unchanged=scan.known)
    schema = dataset.schema
    classes = list(dataset.manifest.classes)
    frames: list[pd.DataFrame] = []
    readers: list[FileRecord] = []
    same_pass: dict[str, FileRecord] = {}  # content hash -> the first file of this pass with it
    for index, candidate in enumerate(scan.new):
        if progress:
            progress(candidate.name, index, len(scan.new))
        record = FileRecord(
            name=candidate.name,
            sha256=candidate.sha256,
            status="ingested",
            time=_now(),
            size=candidate.size,
            mtime_ns=_trusted_mtime(candidate.mtime_ns),
        )
        earlier = same_pass.get(candidate.sha256)
        if earlier is not None and earlier.status == "ingested":
            record.status = "duplicate-file"
            record.reason = f"same content as {earlier.name}, ingested in this pass"
            result.records.append(record)
            continue
        same_pass[candidate.sha256] = record
        try:
            data = candidate.path.read_bytes()
            if sha256_bytes(data) != candidate.sha256 or _changed_since(candidate):
                del same_pass[candidate.sha256]
                result.deferred.append(candidate.name)
                continue
            raw = read_csv_bytes(data, candidate.name, text_columns(settings, schema))
            file_schema = schema or infer_schema(settings, raw, candidate.name)
            frame = clean_dataset(raw, file_schema, candidate.name)
            classes = _check_classes(frame[file_schema.target], classes, candidate.name)
            schema = file_schema
            record.note = raw.attrs.get("note")
        except SchemaError as exc:
            record.status = "quarantined"
            record.reason = str(exc)
            result.records.append(record)
            continue
        except FileNotFoundError:
            del same_pass[candidate.sha256]
            result.deferred.append(candidate.name)  # moved away mid-pass: look again next time
            continue
        except OSError as exc:
            record.status = "quarantined"
            record.reason = f"{candidate.name}: cannot be read: {exc.strerror or exc}"
            result.records.append(record)
            continue
        record.rows_read = len(frame)
        frames.append(frame)
        readers.append(record)
    if progress and scan.new:
        progress("", len(scan.new), len(scan.new))

    manifest = Manifest(
        schema=schema,
        batches=list(dataset.batches),
        files=list(dataset.files),
        snapshot=dict(dataset.manifest.snapshot),
        classes=classes,
    )
    if frames and schema is not None:
        combined = pd.concat(frames, ignore_index=True)
        hashes = row_hashes(combined)
        owner = np.repeat(np.arange(len(frames)), [len(f) for f in frames])
        _, first = np.unique(hashes, return_index=True)
        keep = np.zeros(len(hashes), dtype=bool)
        keep[first] = True
        keep &= ~_contains(dataset.row_hashes(), hashes)
        kept_per_file = np.bincount(owner[keep], minlength=len(frames))
        batch_id = _batch_id()
        rows = int(keep.sum())
        for record, kept in zip(readers, kept_per_file, strict=True):
            record.rows_kept = int(kept)
            record.batch = batch_id if rows else None
        if rows:
            dataset.write_batch(batch_id, combined[keep].reset_index(drop=True), hashes[keep])
            result.batch = BatchInfo(
                id=batch_id, created=utc_now(), rows=rows, files=[r.name for r in readers]
            )
            manifest.batches.append(result.batch)
        result.records.extend(readers)
    manifest.files.extend(result.records)
    if result.records:
        dataset.commit(manifest, settings.write_csv_snapshot)
    result.dataset_rows = dataset.rows
    return result


def _contains(sorted_hashes: np.ndarray, hashes: np.ndarray) -> np.ndarray:
    """Which ``hashes`` occur in the sorted array: a binary search each, no re-sort of the
    (large) existing side."""
    if sorted_hashes.size == 0:
        return np.zeros(len(hashes), dtype=bool)
    position = np.searchsorted(sorted_hashes, hashes)
    position[position == sorted_hashes.size] = 0
    return np.asarray(sorted_hashes[position] == hashes)


def _check_classes(labels: pd.Series, known: list[Any], source: str) -> list[Any]:
    """The label values seen so far, including ``labels``; at most two (binary attrition).

    Once the dataset has two label values, a file with any other value is refused.
    """
    found = sorted({_plain(v) for v in pd.unique(labels)}, key=str)
    unknown = [v for v in found if v not in known]
    if unknown and len(known) + len(unknown) > 2:
        shown = ", ".join(repr(v) for v in unknown[:5])
        raise SchemaError(
            f"{source}: label value(s) {shown} are not among the known classes "
            f"{', '.join(repr(v) for v in known) or '(none yet)'}",
            hint="attrition labels are binary; fix the labels or check positive_label",
        )
    return sorted([*known, *unknown], key=str)


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


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
