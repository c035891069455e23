"""Ingestion: read the new CSV files of the input folder and append one deduplicated batch.

Which files are new is the scan's to say (``beryl.data.scan``): a renamed copy of an ingested
file is recorded as ``duplicate-file``, a changed file is read again and adds only its new rows,
a file whose identity matches its record is not read at all.

Every fault of a file ends in one of three ways, never in a failed pass: ingested; recorded as
``quarantined`` with a reason naming the file and what to do (left where it is, tried again
when it changes, or when the dataset's types change for a file refused for a column's type);
or deferred to the next pass (it vanished, or changed while it was read).

The workspace's ``reader`` (``engine: "spark"``: Spark tasks, ``beryl.spark.ingest``) may read
and deduplicate the files elsewhere; it hands each file's outcome back to the same
``IngestionPass``, and the batch is written and committed here either way.

The readers and the deduplicator (Arrow's CSV reader and kernels) are imported when there is a
file to read: an ingestion with nothing new, every few minutes on a schedule, only lists the
input folder.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from beryl._io import utc_now
from beryl.config import Settings
from beryl.data.dataset import Dataset
from beryl.data.inputfile import WHOLE_FILE_BYTES, InputFile
from beryl.data.manifest import BatchInfo, FileRecord, Manifest
from beryl.data.scan import Candidate, Known, Scan, scan_input, unread
from beryl.data.schema import Schema
from beryl.errors import SchemaError
from beryl.workspace import Workspace

if TYPE_CHECKING:
    from beryl.data._batchfiles import BatchWriter
    from beryl.data.deduplication import Deduplicator

Progress = Callable[[str, int, int], None]


class ReadFile(Protocol):
    """What judging a file needs of its read: the content's hash and whether it stayed put."""

    @property
    def digest(self) -> str: ...

    def settled(self) -> bool: ...


class FileReader(Protocol):
    """Reads new files somewhere other than this process (``Workspace.reader``)."""

    def read(
        self,
        run: IngestionPass,
        candidates: list[Candidate],
        writer: BatchWriter,
        progress: Progress | None,
    ) -> list[FileRecord]:
        """Hand each candidate's outcome, in order, to ``run``'s ``judge``, ``refuse``,
        ``accept`` and ``not_read``; write the new rows of the accepted files to ``writer``;
        return their records."""


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


def ingest(workspace: Workspace | Settings, progress: Progress | None = None) -> IngestionResult:
    """Ingest the new files of the input folder as one deduplicated batch (call under the
    workspace lock).

    Files are read one at a time (a large one in blocks) and their new rows written out a
    group at a time, so memory holds a bounded amount of data, not the files nor the batch.
    ``progress(name, index, count)`` is called before each file, and once at the end.
    """
    workspace = Workspace.of(workspace)
    settings, dataset = workspace.settings, workspace.dataset
    if dataset.schema is not None:
        dataset.schema.check_settings(settings)
    scan = scan_input(workspace, read_new=False)
    run = IngestionPass(settings, dataset, scan)
    batch_id = dataset.new_batch_id()
    if scan.new:
        dataset.upgrade_hashes()
    stored = dataset.hash_runs() if scan.new else []  # the dataset's row hashes, mapped
    with dataset.batch_writer(batch_id, settings.write_csv_snapshot, settings.id_columns) as writer:
        reader = workspace.reader if scan.new else None
        if reader is not None:
            readers = reader.read(run, scan.new, writer, progress)
        elif scan.new:
            from beryl.data.deduplication import Deduplicator

            run.deduplicate = Deduplicator(stored, writer)
            for index, candidate in enumerate(scan.new):
                if progress:
                    progress(candidate.name, index, len(scan.new))
                run.take(candidate)
            run.deduplicate.flush()
            readers = run.deduplicate.records
        else:
            readers = []
        if progress and scan.new:
            progress("", len(scan.new), len(scan.new))

    result = run.result
    manifest = Manifest(
        schema=dataset.schema or run.schema,
        batches=list(dataset.batches),
        files=run.files,
        snapshot=dataset.manifest.snapshot,
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


class IngestionPass:
    """One ingestion's reading of its candidates: each ends ingested (handed to the
    deduplicator), recorded (quarantined, duplicate-file), unchanged or deferred.

    ``take`` reads a candidate here; an engine that reads elsewhere hands each outcome to
    ``judge``, ``refuse``, ``accept`` and ``not_read`` in the candidates' order."""

    deduplicate: Deduplicator

    def __init__(self, settings: Settings, dataset: Dataset, scan: Scan) -> None:
        self.settings = settings
        self.dataset = dataset
        self.known = Known(dataset)
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
        except OSError as exc:  # moved away mid-pass, swapped for a folder, unreadable
            self.not_read(candidate, exc)
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
                self.not_read(candidate, exc)

    def _whole(self, candidate: Candidate, source: InputFile) -> None:
        from beryl.data.reading import check_classes, first_schema, read_clean

        data = source.read_all()
        record = self.judge(candidate, source)
        if record is None:
            return
        schema = self.schema
        try:
            schema = schema or first_schema(self.settings, data, candidate.name)
            table, record.note = read_clean(data, schema, candidate.name)
            del data
            classes = check_classes(table[schema.target], self.classes, candidate.name)
        except SchemaError as exc:
            self.refuse(record, exc)
            return
        self.accept(record, schema, classes, table.num_rows)
        self.deduplicate.add(record, table)

    def _in_blocks(self, candidate: Candidate, source: InputFile) -> None:
        from beryl.data.blocks import read_blocks

        folder = self.settings.output_folder
        error: SchemaError | None = None
        try:
            blocks = read_blocks(
                source, self.settings, self.schema, self.classes, candidate.name, folder
            )
        except SchemaError as exc:
            blocks, error = None, exc
        try:
            record = self.judge(candidate, source)
            if record is None:
                return
            if blocks is None:
                assert error is not None
                self.refuse(record, error)
                return
            record.note = blocks.note
            self.accept(record, blocks.schema, blocks.classes, blocks.rows)
            for table in blocks.held:
                self.deduplicate.add(record, table)
        finally:
            if blocks is not None:
                blocks.held.close()

    def judge(self, candidate: Candidate, source: ReadFile) -> FileRecord | None:
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

    def accept(self, record: FileRecord, schema: Schema, classes: list[object], rows: int) -> None:
        self.schema = schema
        self.classes = classes
        record.rows_read = rows

    def refuse(self, record: FileRecord, exc: SchemaError) -> None:
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

    def not_read(self, candidate: Candidate, exc: OSError) -> None:
        record = unread(candidate, exc)
        if record is None:
            self.result.deferred.append(candidate.name)
        elif self.known.recorded(record):
            self.result.unchanged.append(candidate.name)
        else:
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
