"""An input file, opened once and hashed as it is read; a large one parsed in blocks.

A file is opened without following links and without blocking (a FIFO or a folder swapped in
is refused on the opened descriptor, never read). A file up to ``WHOLE_FILE_BYTES`` is read
into memory and parsed in one go (``beryl.data.reading``). A larger file is streamed in blocks of
``BLOCK_BYTES`` with the same rules block by block; its rows are held (beyond ``HELD_BYTES``,
in a temporary Arrow file beside the dataset) until the whole file has been checked, so a file
goes in entirely or not at all, and memory is bounded by the block size, not by the file.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import os
import stat
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from beryl._io import TMP_PREFIX
from beryl.config import Settings
from beryl.data.reading import (
    ARROW_ERRORS,
    PY_WHITESPACE,
    check_classes,
    check_text,
    missing_columns,
    plain_header,
    repeated_columns,
    text_columns,
    typed_options,
    unreadable,
    vouched,
)
from beryl.data.schema import Schema, arrow_schema, infer_roles
from beryl.errors import SchemaError

WHOLE_FILE_BYTES = 32 * 2**20  # read into memory and parsed in one go up to this size
# The parse block of a larger file. Arrow's streaming reader reads many blocks ahead, so its
# memory grows with the block size (16 MiB blocks: 0.7 GB; 1 MiB: 0.15 GB), not its speed.
BLOCK_BYTES = 2**20
MAX_BLOCK_BYTES = 64 * 2**20  # a larger file's longest row (or quoted value) is below this
HELD_BYTES = 64 * 2**20  # a larger file's rows held in memory before they go to a spill file
_SNIFF_BYTES = 64 * 1024
_CHUNK = 1 << 20


@dataclass(frozen=True)
class Identity:
    """What ``stat`` says about a file: the same identity means the same content (as git and
    rsync assume), provided its times are older than a write could be."""

    dev: int
    ino: int
    size: int
    mtime_ns: int
    ctime_ns: int

    @classmethod
    def of(cls, info: os.stat_result) -> Identity:
        return cls(info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns)


class NotRegularFileError(OSError):
    """The path is (no longer) a regular file: a link, a folder, a FIFO..."""


class InputFile:
    """A regular file, opened once, whose content is hashed (sha256) as it is read.

    Each read of the content is a pass from the start with its own position (positional reads),
    so a reader that was given up (Arrow's may read ahead on a thread) never disturbs the next
    one; the digest is that of the latest pass. Use as a context manager.
    """

    def __init__(self, path: Path) -> None:
        flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
        try:
            fd = os.open(path, flags)
        except OSError as exc:
            if exc.errno == errno.ELOOP:  # O_NOFOLLOW met a symbolic link
                raise NotRegularFileError(exc.errno, "a symbolic link", str(path)) from exc
            raise
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise NotRegularFileError(errno.EINVAL, "not a regular file", str(path))
        except BaseException:
            os.close(fd)
            raise
        self.path = path
        self.identity = Identity.of(info)
        self.closed = False
        self.error: OSError | None = None  # a read that failed (Arrow may report it otherwise)
        self._fd = fd
        self._pass = _Pass(self)

    def __enter__(self) -> InputFile:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.closed = True
        os.close(self._fd)

    @property
    def size(self) -> int:
        return self.identity.size

    @property
    def digest(self) -> str:
        """The hex sha256 of what the latest pass read."""
        return self._pass.hash.hexdigest()

    def pread(self, buffer: Any, position: int) -> int:
        if self.closed:
            return 0  # a reader given up, still reading ahead after the file was closed
        try:
            return os.preadv(self._fd, [buffer], position)
        except OSError as exc:
            self.error = exc
            raise

    def read_all(self) -> bytes:
        """The whole content, hashed; a file that grew is read as it is (``settled`` says so)."""
        self._pass = _Pass(self)
        chunks = []
        buffer = bytearray(_CHUNK)
        while count := self._pass.readinto(buffer):
            chunks.append(bytes(buffer[:count]))
        return b"".join(chunks)

    def drain(self) -> None:
        """Read the latest pass on to the end, so that the digest covers the whole file."""
        buffer = bytearray(_CHUNK)
        while self._pass.readinto(buffer):
            pass

    def head(self, size: int = _SNIFF_BYTES) -> bytes:
        """The first ``size`` bytes (outside any pass)."""
        buffer = bytearray(min(size, self.size))
        count = self.pread(buffer, 0) if buffer else 0
        return bytes(buffer[:count])

    def stream(self) -> pa.NativeFile:
        """A new pass over the content, for Arrow's streaming reader (hashed as Arrow reads)."""
        self._pass = _Pass(self)
        return pa.PythonFile(self._pass, mode="r")

    def settled(self) -> bool:
        """True when the latest pass read the whole file and the file is still as it was when
        it was opened: the same size and times, and still the file at its path."""
        if self._pass.position != self.identity.size:
            return False
        try:
            now = Identity.of(os.fstat(self._fd))
            there = os.lstat(self.path)
        except OSError:
            return False
        return now == self.identity and (there.st_dev, there.st_ino) == (now.dev, now.ino)


class _Pass(io.RawIOBase):
    """One read of an ``InputFile`` from its start: a file object of its own, for Arrow's
    ``PythonFile``, hashing what it reads."""

    def __init__(self, source: InputFile) -> None:
        self._source = source
        self.position = 0
        self.hash = hashlib.sha256()

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        count = self._source.pread(buffer, self.position)
        if count:
            self.hash.update(memoryview(buffer)[:count])
            self.position += count
        return count


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
        with pacsv.open_csv(
            source.stream(),
            read_options=pacsv.ReadOptions(block_size=BLOCK_BYTES),
            parse_options=pacsv.ParseOptions(newlines_in_values=True),
            convert_options=typed_options(schema, types),
        ) as reader:
            for batch in reader:
                table = pa.Table.from_batches([batch])
                if not vouched(table, schema, types):
                    held.reset()
                    return None
                labels.append(pc.unique(table[schema.target]))
                held.add(table)
    except ARROW_ERRORS:
        _raise_read_error(source)
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

    note = _text_blocks(source, name, schema.columns, take, restart)
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

    names = _TextNames()
    _text_blocks(source, name, None, take, numeric.clear, names)
    return infer_roles(settings, names.names, lambda c: numeric.get(c, True), name)


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


class _TextNames:
    """The column names a text pass found (after trimming)."""

    def __init__(self) -> None:
        self.names: list[str] = []


def _text_blocks(
    source: InputFile,
    name: str,
    wanted: list[str] | None,
    take: Any,
    restart: Any,
    names: _TextNames | None = None,
) -> str | None:
    """Feed ``take(batch, first_row)`` each block of the file as text columns (names trimmed as
    the careful reader trims them), only the ``wanted`` ones when given.

    Decides as ``read_csv_bytes`` does: binary content is refused, a file that is not UTF-8 is
    read again as Latin-1 (the returned note says so), a row longer than a block makes the
    blocks larger (up to ``MAX_BLOCK_BYTES``), any other parse error refuses the file.
    """
    head = source.head()
    check_text(head, name, whole=len(head) == source.size)
    encoding, block, note = "utf8", BLOCK_BYTES, None
    while True:
        restart()
        try:
            _text_pass(source, name, wanted, take, encoding, block, names)
            return note
        except pa.ArrowInvalid as exc:
            _raise_read_error(source)
            message = str(exc)
            if encoding == "utf8" and ("UTF8" in message or "UTF-8" in message):
                encoding, note = "latin-1", "read as Latin-1 (the file is not valid UTF-8)"
                continue
            # a row (or the header) longer than a block: make the blocks larger
            longer = "straddling" in message or "cannot infer number of columns" in message
            if longer and block < MAX_BLOCK_BYTES:
                block *= 4
                continue
            if longer:
                raise SchemaError(
                    f"{name}: a row is longer than {MAX_BLOCK_BYTES >> 20} MiB, the most a file "
                    f"larger than {WHOLE_FILE_BYTES >> 20} MiB may have",
                    hint="check the file for an unterminated quote, or split the long values",
                ) from exc
            raise unreadable(name, exc) from exc
        except (pa.ArrowNotImplementedError, pa.ArrowKeyError) as exc:
            _raise_read_error(source)
            raise unreadable(name, exc) from exc


def _text_pass(
    source: InputFile,
    name: str,
    wanted: list[str] | None,
    take: Any,
    encoding: str,
    block: int,
    names: _TextNames | None,
) -> None:
    read_options = pacsv.ReadOptions(block_size=block, encoding=encoding)
    parse_options = pacsv.ParseOptions(newlines_in_values=True)
    # A first reader learns the column names from the header; the second reads them all as text.
    with pacsv.open_csv(
        source.stream(), read_options=read_options, parse_options=parse_options
    ) as first:
        header = first.schema.names
    trimmed = [n.strip() for n in header]
    repeated_columns(trimmed, name)
    renamed = [n.lstrip("\ufeff") for n in trimmed]
    if names is not None:
        names.names = trimmed
    # Columns missing: read on anyway, as the careful reader parses a whole file before it
    # looks at its columns (a file that is not CSV at all says so, not "missing columns").
    absent = wanted is not None and any(c not in renamed for c in wanted)
    keep = [r for r, c in zip(header, renamed, strict=True) if absent or not wanted or c in wanted]
    rename = dict(zip(header, renamed, strict=True))
    with pacsv.open_csv(
        source.stream(),
        read_options=read_options,
        parse_options=parse_options,
        convert_options=pacsv.ConvertOptions(
            column_types={raw: pa.large_string() for raw in header},
            include_columns=keep,
            strings_can_be_null=True,
        ),
    ) as reader:
        rows = 0
        for batch in reader:
            if not absent:
                take(batch.rename_columns([rename[n] for n in batch.schema.names]), rows + 1)
            rows += batch.num_rows
    if absent and wanted is not None:
        missing_columns(renamed, wanted, name)


def _raise_read_error(source: InputFile) -> None:
    """Re-raise a read that failed under Arrow (which may report it as a parse error)."""
    if source.error is not None:
        raise source.error


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
