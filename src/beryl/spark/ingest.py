"""Ingestion on Spark: Beryl's own parser run inside Spark tasks, rows deduplicated by Beryl's
row hash in Spark, the batch written and committed by the driver as on one machine.

A task reads one file the way ``beryl.data.ingestion`` does: opened once and hashed as it is
read, a file up to ``WHOLE_FILE_BYTES`` parsed whole by ``read_clean`` (the dataset's first file
typed by ``first_schema``), a larger one in blocks by ``read_blocks``. It emits three kinds of
rows: the file's ``Outcome``; its rows as Arrow IPC chunks in the dataset's own types (they
never become Spark values, so nothing is converted); and one ``(file, row, hash)`` per row,
hashed by ``row_hashes``. The driver hands the outcomes, in the files' order, to the same
``IngestionPass`` the local path uses, so each file is ingested, quarantined with the same
reason, a duplicate or deferred exactly as it would be locally. An outcome read under a schema
or classes the pass has since moved past is read again under the pass's own (a dataset's first
ingestion of files whose types differ reads the later ones twice).

Deduplication is a Spark plan: the accepted files' row hashes, less every hash stored in the
dataset (each batch's ``<batch>.hashes.npy``, read by the executors), keep their first
occurrence in (file, row) order, as locally. The executors filter the chunks down to the kept
rows, and the driver streams them in that order, a partition at a time, into the batch writer;
``beryl.data.ingestion`` then commits the batch, so crash safety is the local path's.
"""

from __future__ import annotations

import contextlib
import functools
import pickle
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from beryl.config import Settings, SparkSettings
from beryl.data._batchfiles import BatchWriter
from beryl.data.blocks import read_blocks
from beryl.data.inputfile import WHOLE_FILE_BYTES, InputFile
from beryl.data.manifest import FileRecord
from beryl.data.reading import check_classes, first_schema, read_clean
from beryl.data.rowhash import row_hashes
from beryl.data.scan import Candidate
from beryl.data.schema import Schema
from beryl.errors import SchemaError, StateError
from beryl.spark.session import failures, quiet, session

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

    from beryl.data.dataset import Dataset
    from beryl.data.ingestion import IngestionPass, Progress

CHUNK_ROWS = 32_768  # rows per Arrow IPC chunk a task emits: a Spark bitmap's bucket
_COLLECT_BYTES = 256 * 2**20  # new files up to this size come back in one job, else streamed
_DRAIN_BYTES = 128 * 2**20  # rows handed to the batch writer before waiting for its writes
_OUTCOME, _CHUNK, _HASH = 0, 1, 2
_READ = "_kind byte, _file int, _chunk int, _row long, _hash long, _blob binary, _sha string"
_KEPT = "_file int, _chunk int, _blob binary, _hashes binary, _sha string"
_READ_TYPES = pa.schema(
    [
        ("_kind", pa.int8()),
        ("_file", pa.int32()),
        ("_chunk", pa.int32()),
        ("_row", pa.int64()),
        ("_hash", pa.int64()),
        ("_blob", pa.binary()),
        ("_sha", pa.string()),
    ]
)


@dataclass
class Outcome:
    """What a task found in one file, in the terms ``IngestionPass`` judges it by."""

    index: int
    schema_given: Schema | None  # what it was read under (None: typed by its own content)
    classes_given: list[Any] | None = None  # a large file's blocks were checked against these
    error: OSError | None = None  # it could not be opened or read
    moved: bool = False  # not the file that was listed: changed since
    withheld: bool = False  # content the dataset already knows: not parsed, no rows
    digest: str = ""
    stayed: bool = False
    schema: Schema | None = None
    refusal: SchemaError | None = None
    labels: list[Any] = field(default_factory=list)
    rows: int = 0
    note: str | None = None

    def settled(self) -> bool:
        return self.stayed

    def current(self, schema: Schema | None, classes: list[Any]) -> bool:
        """Whether judging this outcome under the pass's ``schema`` and ``classes`` gives what
        reading the file under them would."""
        if self.error is not None or self.moved or self.withheld or not self.stayed:
            return True  # decided before any parse
        if self.classes_given is not None and self.classes_given != classes:
            return False
        if self.schema_given == schema:
            return True
        # Typed by its own content, accepted: the same rows as under a schema of the same types.
        return (
            self.schema_given is None
            and schema is not None
            and self.refusal is None
            and self.schema is not None
            and self.schema.key() == schema.key()
        )


class SparkReader:
    """The workspace's ``FileReader`` with ``engine: "spark"``: see the module docstring."""

    def __init__(self, settings: SparkSettings) -> None:
        self.settings = settings

    def read(
        self,
        run: IngestionPass,
        candidates: list[Candidate],
        writer: BatchWriter,
        progress: Progress | None,
    ) -> list[FileRecord]:
        return read_on_spark(run, candidates, writer, progress, self.settings)


def read_on_spark(
    run: IngestionPass,
    candidates: list[Candidate],
    writer: BatchWriter,
    progress: Progress | None = None,
    settings: SparkSettings | None = None,
) -> list[FileRecord]:
    """Read ``candidates`` on Spark and hand their outcomes to ``run``, then write the new
    rows of the accepted files to ``writer``; returns the accepted files' records."""
    from pyspark import StorageLevel

    spark = session(settings or run.settings.spark)
    jobs: list[DataFrame] = []
    accepted: list[tuple[int, FileRecord, int]] = []  # file index, record, job
    hint = "check the cluster (spark.master in config.json); nothing was committed"
    try:
        with quiet(), failures("ingesting", hint):
            start = 0
            while start < len(candidates):
                # On disk, serialized: cached in the JVM's heap, 100M rows' chunks and hashes
                # stalled it in garbage collection.
                job = _read_job(spark, run, candidates, start).persist(StorageLevel.DISK_ONLY)
                jobs.append(job)
                outcomes, first = _outcomes(job), start
                for index in range(first, len(candidates)):
                    outcome = outcomes[index]
                    if index > first and not outcome.current(run.schema, run.classes):
                        break  # read again under what the pass holds now
                    if progress:
                        progress(candidates[index].name, index, len(candidates))
                    record = _judge(run, candidates[index], outcome)
                    if record is not None:
                        accepted.append((index, record, len(jobs) - 1))
                    start = index + 1
            if accepted:
                sizes = {index: candidates[index].size for index, _, _ in accepted}
                _write_new_rows(spark, run.dataset, jobs, accepted, writer, sizes)
    finally:
        for job in jobs:
            with contextlib.suppress(Exception), quiet():  # a session gone has nothing cached
                job.unpersist()
    return [record for _, record, _ in accepted]


def _judge(run: IngestionPass, candidate: Candidate, outcome: Outcome) -> FileRecord | None:
    """What ``IngestionPass.take`` decides for this file, from the task's outcome."""
    if outcome.error is not None:
        run.not_read(candidate, outcome.error)
        return None
    if outcome.moved:
        run.result.deferred.append(candidate.name)  # changed since the listing
        return None
    record = run.judge(candidate, outcome)
    if record is None:
        return None
    if outcome.refusal is not None:
        run.refuse(record, outcome.refusal)
        return None
    schema = run.schema or outcome.schema
    assert schema is not None
    whole = outcome.classes_given is None
    if whole:
        record.note = outcome.note  # a whole file's note is kept even if its labels are refused
    try:
        labels = pc.unique(pa.chunked_array([pa.array(outcome.labels)]))
        classes = check_classes(pa.chunked_array([labels]), run.classes, candidate.name)
    except SchemaError as exc:
        run.refuse(record, exc)
        return None
    if not whole:
        record.note = outcome.note
    run.accept(record, schema, classes, outcome.rows)
    return record


def _read_job(
    spark: SparkSession, run: IngestionPass, candidates: list[Candidate], start: int
) -> DataFrame:
    """A DataFrame of what reading ``candidates[start:]`` finds, one file per task."""
    known = _Known(frozenset(run.known.ingested), frozenset(run.known.by_name_hash))
    read = functools.partial(
        _read_files, candidates, run.settings, run.schema, list(run.classes), known
    )
    files = spark.range(start, len(candidates), numPartitions=len(candidates) - start)
    return files.mapInArrow(read, _READ)


def _outcomes(job: DataFrame) -> dict[int, Outcome]:
    rows = job.where(f"_kind = {_OUTCOME}").select("_blob").collect()
    outcomes = [pickle.loads(row["_blob"]) for row in rows]
    return {o.index: o for o in outcomes}


def _write_new_rows(
    spark: SparkSession,
    dataset: Dataset,
    jobs: list[DataFrame],
    accepted: list[tuple[int, FileRecord, int]],
    writer: BatchWriter,
    sizes: dict[int, int],
) -> None:
    """Keep each accepted row whose hash is new to the dataset and to the rows before it, and
    write the kept rows to ``writer`` in (file, row) order.

    Spark finds the first occurrence of each new hash and gathers them as one bitmap per chunk
    of ``CHUNK_ROWS`` rows (4 KiB); the tasks that filter the chunks get the bitmaps with their
    code, and their output, one file per partition in file order, streams to the driver.
    """
    from pyspark.sql import functions as F

    hashes, chunks = [], []
    for number, job in enumerate(jobs):
        files = [index for index, _, used in accepted if used == number]
        if files:
            mine = job.where(F.col("_file").isin(files))
            hashes.append(mine.where(f"_kind = {_HASH}").select("_file", "_row", "_hash"))
            chunks.append(mine.where(f"_kind = {_CHUNK}"))
    new = functools.reduce(lambda a, b: a.unionByName(b), hashes)
    stored = _stored_hashes(spark, dataset)
    if stored is not None:
        new = new.join(stored, "_hash", "left_anti")
    first = new.groupBy("_hash").agg(F.min(F.struct("_file", "_row")).alias("_first"))
    kept = (
        first.select("_first.*")
        .groupBy("_file", (F.col("_row") / CHUNK_ROWS).cast("int").alias("_chunk"))
        .agg(F.bitmap_construct_agg(F.bitmap_bit_position(F.col("_row") + 1)).alias("_bits"))
        .collect()
    )
    masks = {(row["_file"], row["_chunk"]): bytes(row["_bits"]) for row in kept}
    rows = functools.reduce(lambda a, b: a.union(b), chunks)  # files in order, jobs in order
    filtered = rows.mapInArrow(functools.partial(_keep_rows, masks), _KEPT)
    records = {index: record for index, record, _ in accepted}
    streamed = sum(sizes[index] for index in records) > _COLLECT_BYTES
    held = 0
    # Streamed one partition at a time: with prefetching, at 100M rows the result of a task
    # waiting for the driver was lost from the block manager (TaskResultLost).
    for row in (
        filtered.toLocalIterator(prefetchPartitions=False) if streamed else filtered.collect()
    ):
        record = records[row["_file"]]
        if row["_sha"] != record.sha256:
            raise StateError(
                f"{record.name} changed while Spark read it",
                hint="run the ingestion again: nothing was committed",
            )
        table = pa.ipc.open_stream(row["_blob"]).read_all()
        record.rows_kept += table.num_rows
        writer.append(table, np.frombuffer(row["_hashes"], dtype=np.uint64))
        held += table.nbytes
        if held >= _DRAIN_BYTES:
            writer.drain()  # bounds what waits in memory to be written
            held = 0


def _stored_hashes(spark: SparkSession, dataset: Dataset) -> DataFrame | None:
    """Every row hash in the dataset, read by the executors from the batches' hash indexes."""
    paths = [str(dataset.hashes_path(batch.id)) for batch in dataset.batches]
    if not paths:
        return None
    batches = spark.range(len(paths), numPartitions=min(len(paths), 64))
    return batches.mapInArrow(functools.partial(_read_hashes, paths), "_hash long")


# -- what runs in the Spark tasks ------------------------------------------------------------------


@dataclass(frozen=True)
class _Known:
    """Contents the pass decides on without their rows: ingested ones (a renamed copy is a
    duplicate) and (name, content) pairs on record (unchanged)."""

    ingested: frozenset[str]
    recorded: frozenset[tuple[str, str]]

    def decided(self, name: str, digest: str) -> bool:
        return digest in self.ingested or (name, digest) in self.recorded


def _nothing() -> None:
    pass


def _read_files(
    candidates: list[Candidate],
    settings: Settings,
    schema: Schema | None,
    classes: list[Any],
    known: _Known,
    batches: Iterator[pa.RecordBatch],
) -> Iterator[pa.RecordBatch]:
    for batch in batches:
        for index in batch.column(0).to_pylist():
            yield from _read_file(index, candidates[index], settings, schema, classes, known)


def _read_file(
    index: int,
    candidate: Candidate,
    settings: Settings,
    schema: Schema | None,
    classes: list[Any],
    known: _Known,
) -> Iterator[pa.RecordBatch]:
    """One file read as ``IngestionPass.take`` reads it: its outcome, then its rows."""
    outcome = Outcome(index, schema)
    tables: Iterator[pa.Table] = iter(())
    close: Callable[[], None] = _nothing
    try:
        try:
            source = InputFile(candidate.path)
        except OSError as exc:  # moved away, swapped for a folder, unreadable
            outcome.error = exc
        else:
            with source:
                if source.identity != candidate.identity:
                    outcome.moved = True
                else:
                    try:
                        if source.size <= WHOLE_FILE_BYTES:
                            tables = _read_whole(outcome, source, candidate.name, settings, known)
                        else:
                            tables, close = _read_in_blocks(
                                outcome, source, candidate.name, settings, classes, known
                            )
                    except OSError as exc:  # a read failed
                        outcome.error = exc
        yield _outcome_batch(outcome)
        if outcome.error is None and outcome.refusal is None and outcome.schema is not None:
            yield from _row_batches(index, outcome.digest, tables)
    finally:
        close()


def _read_whole(
    outcome: Outcome, source: InputFile, name: str, settings: Settings, known: _Known
) -> Iterator[pa.Table]:
    data = source.read_all()
    outcome.digest, outcome.stayed = source.digest, source.settled()
    if not outcome.stayed or known.decided(name, outcome.digest):
        outcome.withheld = outcome.stayed
        return iter(())
    try:
        schema = outcome.schema_given or first_schema(settings, data, name)
        table, note = read_clean(data, schema, name)
    except SchemaError as exc:
        outcome.refusal = exc
        return iter(())
    del data
    outcome.schema, outcome.note, outcome.rows = schema, note, table.num_rows
    outcome.labels = pc.unique(table[schema.target]).to_pylist()
    return iter((table,))


def _read_in_blocks(
    outcome: Outcome,
    source: InputFile,
    name: str,
    settings: Settings,
    classes: list[Any],
    known: _Known,
) -> tuple[Iterator[pa.Table], Callable[[], None]]:
    outcome.classes_given = classes
    try:
        blocks = read_blocks(
            source, settings, outcome.schema_given, classes, name, settings.output_folder
        )
    except SchemaError as exc:  # the whole file was hashed first
        outcome.refusal = exc
        outcome.digest, outcome.stayed = source.digest, source.settled()
        return iter(()), _nothing
    outcome.digest, outcome.stayed = source.digest, source.settled()
    if not outcome.stayed or known.decided(name, outcome.digest):
        outcome.withheld = outcome.stayed
        blocks.held.close()
        return iter(()), _nothing
    outcome.schema, outcome.note, outcome.rows = blocks.schema, blocks.note, blocks.rows
    outcome.labels = list(blocks.classes)
    return iter(blocks.held), blocks.held.close


def _row_batches(index: int, digest: str, tables: Iterator[pa.Table]) -> Iterator[pa.RecordBatch]:
    """A file's rows as IPC pieces that never cross a multiple of ``CHUNK_ROWS`` of its rows,
    each followed by the hash of each of its rows."""
    first = 0
    for table in tables:
        offset = 0
        while offset < table.num_rows:
            count = min(table.num_rows - offset, CHUNK_ROWS - first % CHUNK_ROWS)
            piece = table.slice(offset, count)
            yield _batch(
                kind=[_CHUNK], file=[index], chunk=[first // CHUNK_ROWS], row=[first],
                blob=[_ipc(piece)], sha=[digest],
            )  # fmt: skip
            yield _batch(
                kind=np.full(count, _HASH, np.int8),
                file=np.full(count, index, np.int32),
                row=np.arange(first, first + count, dtype=np.int64),
                hash=row_hashes(piece).view(np.int64),
            )
            offset, first = offset + count, first + count


def _outcome_batch(outcome: Outcome) -> pa.RecordBatch:
    blob = pickle.dumps(outcome, protocol=pickle.HIGHEST_PROTOCOL)
    return _batch(kind=[_OUTCOME], file=[outcome.index], blob=[blob])


def _batch(**columns: Any) -> pa.RecordBatch:
    """A record batch of ``_READ``'s columns: those given, the others missing."""
    length = len(next(iter(columns.values())))
    arrays = [
        pa.array(columns[f.name[1:]], f.type) if f.name[1:] in columns else pa.nulls(length, f.type)
        for f in _READ_TYPES
    ]
    return pa.RecordBatch.from_arrays(arrays, schema=_READ_TYPES)


def _ipc(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as stream:
        stream.write_table(table)
    return bytes(sink.getvalue())


def _keep_rows(
    masks: dict[tuple[int, int], bytes], batches: Iterator[pa.RecordBatch]
) -> Iterator[pa.RecordBatch]:
    """Each piece cut down to its kept rows (by its chunk's bitmap), with their hashes."""
    for batch in batches:
        data = batch.select(["_file", "_chunk", "_row", "_sha"]).to_pydict()
        blobs = batch.column("_blob")
        for i, (file, chunk, first, sha) in enumerate(
            zip(data["_file"], data["_chunk"], data["_row"], data["_sha"], strict=True)
        ):
            bits = masks.get((file, chunk))
            if bits is None:
                continue  # nothing new in this chunk
            table = pa.ipc.open_stream(blobs[i].as_buffer()).read_all()
            mask = np.unpackbits(np.frombuffer(bits, np.uint8), bitorder="little").astype(bool)
            start = first % CHUNK_ROWS
            kept = table.filter(pa.array(mask[start : start + table.num_rows]))
            if kept.num_rows:
                columns = {
                    "_file": [file],
                    "_chunk": [chunk],
                    "_blob": [_ipc(kept)],
                    "_hashes": [row_hashes(kept).tobytes()],
                    "_sha": [sha],
                }
                yield pa.RecordBatch.from_pydict(columns, schema=_KEPT_TYPES)


_KEPT_TYPES = pa.schema(
    [
        ("_file", pa.int32()),
        ("_chunk", pa.int32()),
        ("_blob", pa.binary()),
        ("_hashes", pa.binary()),
        ("_sha", pa.string()),
    ]
)


def _read_hashes(paths: list[str], batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    for batch in batches:
        for index in batch.column(0).to_pylist():
            hashes = np.load(paths[index], mmap_mode="r", allow_pickle=False)
            for start in range(0, len(hashes), 2**20):
                part = np.ascontiguousarray(hashes[start : start + 2**20]).view(np.int64)
                yield pa.RecordBatch.from_arrays([pa.array(part)], names=["_hash"])
