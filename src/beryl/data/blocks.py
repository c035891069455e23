"""A large input file read block by block, with the rules ``beryl.data.reading`` applies to a
whole one.

A file over ``beryl.data.inputfile.WHOLE_FILE_BYTES`` is streamed in blocks of ``BLOCK_BYTES``:
Arrow's streaming parse into the dataset's types is kept when every block passes the checks that
let the fast path vouch for a whole file; otherwise the careful parse
(``beryl.data.csvfiles.text_blocks``) reads every column as text and each block is cleaned by
``clean_dataset``. The rows are held (beyond ``HELD_BYTES``, in a temporary Arrow file beside
the dataset) until the whole file has been checked, so a file goes in entirely or not at all,
and memory is bounded by the block size, not by the file.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from beryl._io import TMP_PREFIX
from beryl.config import Settings
from beryl.data.csvfiles import ARROW_ERRORS, Take, open_stream, plain_header, text_blocks
from beryl.data.inputfile import InputFile
from beryl.data.reading import PY_WHITESPACE, check_classes, text_columns, vouched
from beryl.data.schema import Schema, arrow_schema, infer_roles
from beryl.errors import SchemaError

# The parse block of a larger file. Arrow's streaming reader reads many blocks ahead, so its
# memory grows with the block size (16 MiB blocks: 0.7 GB; 1 MiB: 0.15 GB), not its speed.
BLOCK_BYTES = 2**20
MAX_BLOCK_BYTES = 64 * 2**20  # a larger file's longest row (or quoted value) is below this
HELD_BYTES = 64 * 2**20  # a larger file's rows held in memory before they go to a spill file


@dataclass
class Blocks:
    """A large file's rows, checked and cleaned, held until the caller takes them."""

    schema: Schema
    held: Held
    rows: int
    classes: list[Any]
    note: str | None


def read_blocks(
    source: InputFile,
    settings: Settings,
    schema: Schema | None,
    classes: list[Any],
    name: str,
    spill_folder: Path,
) -> Blocks:
    """Read a large file block by block with the rules ``read_clean`` applies to a whole one.

    Arrow's streaming parse into the dataset's types is kept when every block passes the
    checks that let the fast path vouch for a whole file; otherwise the file is read again
    the careful way, every column as text, each block cleaned by ``clean_dataset``. Without a
    schema yet (the dataset's first file) one pass over the whole file infers it first.
    A refusal is a ``SchemaError`` raised once the whole file has been hashed.
    """
    held = Held(spill_folder)
    try:
        try:
            chosen = schema or _infer_in_blocks(source, settings, name)
            note = None
            labels = _typed_blocks(source, chosen, held)
            if labels is None:
                labels, note = _careful_blocks(source, chosen, name, held)
            labels = pa.chunked_array(labels, arrow_schema(chosen).field(chosen.target).type)
            found = check_classes(labels, classes, name)
        except SchemaError:
            source.drain()  # the refusal is recorded with the whole file's hash
            raise
    except BaseException:
        held.close()
        raise
    return Blocks(chosen, held, held.rows, found, note)


def _typed_blocks(source: InputFile, schema: Schema, held: Held) -> list[pa.Array] | None:
    """Stream the file straight into the dataset's types; None when a block needs a closer
    look (then nothing is held). Returns each block's distinct labels."""
    if not plain_header(source.head(), schema):
        return None
    types = arrow_schema(schema)
    labels = []
    try:
        with open_stream(
            source.stream(),
            block_size=BLOCK_BYTES,
            column_types=types,
            include_columns=schema.columns,
        ) as reader:
            for batch in reader:
                table = pa.Table.from_batches([batch])
                if not vouched(table, schema, types):
                    held.reset()
                    return None
                labels.append(pc.unique(table[schema.target]))
                held.add(table)
    except ARROW_ERRORS:
        source.raise_read_error()
        held.reset()
        return None
    if held.rows == 0:
        return None
    return labels


def _careful_blocks(
    source: InputFile, schema: Schema, name: str, held: Held
) -> tuple[list[pa.Array], str | None]:
    """The careful path, block by block: every column read as text, then cleaned."""
    from beryl.data.cleaning import clean_dataset, to_arrow

    labels: list[pa.Array] = []
    numeric = set(schema.numeric)

    def take(batch: pa.RecordBatch, first_row: int) -> None:
        columns = {}
        for field, column in zip(batch.schema, batch.columns, strict=True):
            numbers = _as_numbers(column) if field.name in numeric else None
            columns[field.name] = column if numbers is None else numbers
        frame = pa.table(columns).to_pandas()
        cleaned = clean_dataset(frame, schema, name, first_row=first_row, ingesting=True)
        table = to_arrow(cleaned, schema)
        labels.append(pc.unique(table[schema.target]))
        held.add(table)

    def restart() -> None:
        held.reset()
        labels.clear()

    _, note = _text_blocks(source, name, schema.columns, take, restart)
    if held.rows == 0:
        raise SchemaError(f"{name}: has a header but no data rows")
    return labels, note


def _infer_in_blocks(source: InputFile, settings: Settings, name: str) -> Schema:
    """The first file's schema, as ``first_schema`` infers it, from one pass over its blocks."""
    from beryl.data.schema import looks_numeric

    reserved = set(text_columns(settings, None))
    numeric: dict[str, bool] = {}

    def take(batch: pa.RecordBatch, first_row: int) -> None:
        for field, column in zip(batch.schema, batch.columns, strict=True):
            if field.name not in reserved and numeric.setdefault(field.name, True):
                numeric[field.name] = _as_numbers(column) is not None or looks_numeric(
                    column.to_pandas()
                )

    names, _ = _text_blocks(source, name, None, take, numeric.clear)
    return infer_roles(settings, names, lambda c: numeric.get(c, True), name)


def _as_numbers(text: pa.Array) -> pa.Array | None:
    """Text as the numbers the careful reader makes of it (trimmed, blank is missing), when
    Arrow's cast gives exactly those; None leaves the column to the careful reader."""
    trimmed = pc.utf8_trim(text, characters=PY_WHITESPACE)
    blank = pc.equal(trimmed, pa.scalar("", trimmed.type))
    values = pc.if_else(blank, pa.scalar(None, trimmed.type), trimmed)
    try:
        numbers = pc.cast(values, pa.float64())
    except ARROW_ERRORS:
        return None
    if pc.any(pc.is_nan(numbers)).as_py():  # "nan" is not a number to the careful reader
        return None
    return numbers


def _text_blocks(
    source: InputFile,
    name: str,
    wanted: list[str] | None,
    take: Take,
    restart: Callable[[], None],
) -> tuple[list[str], str | None]:
    return text_blocks(
        source, name, wanted, take, restart, block_size=BLOCK_BYTES, max_block_size=MAX_BLOCK_BYTES
    )


class Held:
    """A file's rows until the whole file has been checked: in memory up to ``HELD_BYTES``,
    then in a temporary Arrow stream file in ``folder`` (removed by ``close``, and by the
    dataset's repair after a crash, as every temporary file)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.rows = 0
        self._tables: list[pa.Table] = []
        self._bytes = 0
        self._path: Path | None = None
        self._sink: pa.NativeFile | None = None
        self._writer: pa.ipc.RecordBatchStreamWriter | None = None

    def add(self, table: pa.Table) -> None:
        table = table.replace_schema_metadata(None)
        self.rows += table.num_rows
        if self._writer is None and self._bytes + table.nbytes <= HELD_BYTES:
            self._tables.append(table)
            self._bytes += table.nbytes
            return
        if self._writer is None:
            self.folder.mkdir(parents=True, exist_ok=True)
            fd, name = tempfile.mkstemp(prefix=TMP_PREFIX, suffix=".arrows", dir=self.folder)
            os.close(fd)
            self._path = Path(name)
            self._sink = pa.OSFile(name, "wb")
            self._writer = pa.ipc.new_stream(self._sink, table.schema)
            for earlier in self._tables:
                self._writer.write_table(earlier)
            self._tables, self._bytes = [], 0
        self._writer.write_table(table)

    def __iter__(self) -> Iterator[pa.Table]:
        """The rows in order, a block at a time (each read back from disk as it is taken)."""
        while self._tables:
            yield self._tables.pop(0)
        if self._writer is None or self._path is None:
            return
        self._close_writer()
        with pa.OSFile(str(self._path), "rb") as handle:
            for batch in pa.ipc.open_stream(handle):
                yield pa.Table.from_batches([batch])

    def reset(self) -> None:
        """Forget every row held so far."""
        self.close()
        self.rows = 0

    def close(self) -> None:
        self._tables, self._bytes = [], 0
        self._close_writer()
        if self._path is not None:
            with contextlib.suppress(OSError):
                self._path.unlink()
            self._path = None

    def _close_writer(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if self._sink is not None:
            self._sink.close()
            self._sink = None
