"""The one CSV reader: which files a path names, and how their text is parsed.

Every module that reads CSV text parses it here, with Arrow's CSV reader:

- ``csv_files`` lists a workspace's CSV files (a file, or the regular ``*.csv`` of a folder) and
  ``read_labelled`` reads the test data (cleaned, with a content hash);
- ``read_csv_bytes`` is the careful parse of a whole file or body (every failure a
  ``SchemaError`` naming the source; not UTF-8 is read as Latin-1, a row longer than a block
  is parsed in one block), and ``text_blocks`` the same parse of a large file, block by block;
- ``parse`` and ``open_stream`` are the direct parses the fast paths use (errors are Arrow's);
- ``stream_rows`` streams a file to score (``beryl predict``) in typed blocks.

The cleaning rules (what a value means) live in ``beryl.data.cleaning``; the ingestion rules
(when the fast parse may be trusted) in ``beryl.data.reading`` and ``beryl.data.blocks``.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Protocol, TypeAlias

import pyarrow as pa
import pyarrow.csv as pacsv

from beryl.errors import DataError, EmptyDatasetError, SchemaError

if TYPE_CHECKING:
    import pandas as pd

    from beryl.data.schema import Schema

ARROW_ERRORS = (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowKeyError)
LATIN1_NOTE = "read as Latin-1 (the file is not valid UTF-8)"
STREAM_BLOCK_BYTES = 16 << 20  # the parse block of ``stream_rows``
_SNIFF_BYTES = 64 * 1024

# what a parse reads each column as: names to types, or an Arrow schema
ColumnTypes: TypeAlias = "dict[str, pa.DataType] | pa.Schema"


# -- which files ----------------------------------------------------------------------------------
def csv_files(path: Path) -> list[Path]:
    """The CSV files a path names: the file itself, or the regular ``*.csv`` files of a folder."""
    if path.is_file():
        return [path]
    if path.is_dir():
        return sorted(
            p
            for p in path.iterdir()
            if p.suffix.lower() == ".csv" and p.is_file() and not p.is_symlink()
        )
    raise DataError(f"{path} does not exist", hint="fix test_data_path in config.json")


def read_labelled(path: Path, schema: Schema) -> tuple[pd.DataFrame, str]:
    """Read and clean labelled CSV data (a file or a folder); returns it with the sha256 of the
    files' bytes, in order."""
    import pandas as pd

    from beryl.data.cleaning import clean_dataset

    files = csv_files(path)
    if not files:
        raise EmptyDatasetError(f"no CSV files in {path}", hint="put labelled test data there")
    digest = hashlib.sha256()
    frames = []
    for file in files:
        data = file.read_bytes()
        digest.update(data)
        raw = read_csv_bytes(data, str(file), schema.text_columns)
        frames.append(clean_dataset(raw, schema, str(file)))
    return pd.concat(frames, ignore_index=True), digest.hexdigest()


# -- checks on CSV text ---------------------------------------------------------------------------
def check_text(data: bytes, source: str, *, whole: bool = True) -> None:
    """Refuse what cannot be CSV text: an empty file (``whole``: ``data`` is all of it), or
    one with NUL bytes near its start (binary, or UTF-16)."""
    if whole and not data.strip():
        raise SchemaError(f"{source}: the file is empty", hint="send a CSV file with a header row")
    if b"\x00" in data[:_SNIFF_BYTES]:
        raise SchemaError(
            f"{source}: is a binary file, not CSV text (it contains NUL bytes)",
            hint="export the data as CSV",
        )


def header_names(data: bytes) -> list[str] | None:
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


def plain_header(data: bytes, schema: Schema) -> bool:
    """Whether the text starts with a plain header naming every column of ``schema`` once."""
    names = header_names(data)
    return not (names is None or len(set(names)) != len(names) or set(schema.columns) - set(names))


def repeated_columns(names: list[str], source: str) -> None:
    """Refuse a header that names a column more than once (after trimming)."""
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise SchemaError(
            f"{source}: column name(s) {', '.join(duplicated)} appear more than once",
            hint="give every column a unique name",
        )


def missing_columns(names: list[str], columns: list[str], source: str) -> None:
    """Refuse a file whose columns ``names`` lack some of ``columns``."""
    missing = [c for c in columns if c not in names]
    if missing:
        raise SchemaError(
            f"{source}: missing column(s) {', '.join(missing)}; found {', '.join(names)}",
            hint="the file needs every column of the dataset's schema",
        )


def unreadable(source: str, exc: Exception) -> SchemaError:
    """A file Arrow cannot parse as CSV (``exc`` says where)."""
    return SchemaError(
        f"{source}: not a readable CSV file: {exc}",
        hint="fix the file (comma-separated, UTF-8, one header row) and save it again",
    )


# -- parsing --------------------------------------------------------------------------------------
def parse(
    data: bytes,
    *,
    column_types: ColumnTypes | None = None,
    include_columns: list[str] | None = None,
    quoted: bool = True,
    encoding: str = "utf8",
    block_size: int | None = None,
) -> pa.Table:
    """Parse CSV bytes in one go (on all cores); errors are Arrow's (``ARROW_ERRORS``).

    ``quoted=False`` promises no quoted value holds a line break, which lets Arrow split the
    text at any line end. Blank values of ``column_types``' text columns are missing.
    """
    read_options = pacsv.ReadOptions(encoding=encoding)
    if block_size is not None:
        read_options.block_size = block_size
    return pacsv.read_csv(
        pa.BufferReader(data),
        read_options=read_options,
        parse_options=pacsv.ParseOptions(newlines_in_values=quoted),
        convert_options=_convert(column_types, include_columns),
    )


def open_stream(
    source: pa.NativeFile | str,
    *,
    block_size: int,
    column_types: ColumnTypes | None = None,
    include_columns: list[str] | None = None,
    encoding: str = "utf8",
) -> pacsv.CSVStreamingReader:
    """Parse CSV text a block of ``block_size`` bytes at a time (types are inferred from the
    first block); errors are Arrow's, on opening or while reading."""
    return pacsv.open_csv(
        source,
        read_options=pacsv.ReadOptions(block_size=block_size, encoding=encoding),
        parse_options=pacsv.ParseOptions(newlines_in_values=True),
        convert_options=_convert(column_types, include_columns),
    )


def _convert(
    column_types: ColumnTypes | None, include_columns: list[str] | None
) -> pacsv.ConvertOptions:
    return pacsv.ConvertOptions(
        column_types=column_types if column_types is not None else {},
        include_columns=include_columns or [],
        strings_can_be_null=True,
    )


@dataclass(frozen=True)
class _Attempt:
    """One way of parsing a text: its encoding, its block size (None: Arrow's), and the note
    that says how it was read."""

    encoding: str = "utf8"
    block_size: int | None = None
    note: str | None = None

    def after(self, exc: pa.ArrowInvalid, larger: int | None) -> _Attempt | None:
        """The next way to parse after ``exc``: as Latin-1 when the text is not UTF-8 (Latin-1
        decodes every byte, so the values survive as written), in blocks of ``larger`` bytes
        when a row is longer than a block; None when there is none."""
        message = str(exc)
        if self.encoding == "utf8" and ("UTF8" in message or "UTF-8" in message):
            return dataclasses.replace(self, encoding="latin-1", note=LATIN1_NOTE)
        if larger is not None and _row_too_long(message):
            return dataclasses.replace(self, block_size=larger)
        return None


def _row_too_long(message: str) -> bool:
    """Whether Arrow's error says a row (or the header) is longer than its parse block."""
    return "straddling" in message or "cannot infer number of columns" in message


class TooManyRowsError(DataError):
    """More data rows than the reader was allowed to take (found while parsing, not after)."""


def read_csv_bytes(
    data: bytes,
    source: str,
    text_columns: list[str] | None = None,
    *,
    max_rows: int | None = None,
) -> pd.DataFrame:
    """Parse CSV bytes into a frame; anything unparsable is a ``SchemaError`` naming ``source``.

    ``text_columns`` (identifiers, categories, labels) are read as written: ``007`` stays
    ``"007"`` instead of becoming the number 7. With ``max_rows``, parsing stops at the block
    that passes it (``TooManyRowsError``), so a huge body costs one block, not its whole size.
    A frame read as Latin-1 says so in ``frame.attrs["note"]``.
    """
    check_text(data, source)
    column_types = {name: pa.string() for name in text_columns or []}
    attempt = _Attempt()
    while True:
        try:
            table = _parse_counted(data, column_types, attempt, max_rows)
            break
        except pa.ArrowInvalid as exc:
            # a row longer than one parse block: parse the text as a single block
            larger = len(data) + 1 if attempt.block_size is None else None
            again = attempt.after(exc, larger)
            if again is None:
                raise unreadable(source, exc) from exc
            attempt = again
        except pa.ArrowNotImplementedError as exc:
            raise unreadable(source, exc) from exc
    names = [str(n).strip() for n in table.column_names]
    repeated_columns(names, source)
    frame: pd.DataFrame = table.rename_columns(names).to_pandas()
    if frame.empty:
        raise SchemaError(f"{source}: has a header but no data rows")
    if attempt.note:
        frame.attrs["note"] = attempt.note
    return frame


def _parse_counted(
    data: bytes, column_types: dict[str, pa.DataType], attempt: _Attempt, max_rows: int | None
) -> pa.Table:
    if max_rows is None:
        return parse(
            data,
            column_types=column_types,
            encoding=attempt.encoding,
            block_size=attempt.block_size,
        )
    # Block by block (types are inferred from the first block either way), counting rows.
    reader = open_stream(
        pa.BufferReader(data),
        block_size=attempt.block_size or pacsv.ReadOptions().block_size,
        column_types=column_types,
        encoding=attempt.encoding,
    )
    batches, rows = [], 0
    for batch in reader:
        rows += batch.num_rows
        if rows > max_rows:
            raise TooManyRowsError(f"more than {max_rows} rows")
        batches.append(batch)
    return pa.Table.from_batches(batches, schema=reader.schema)


class Source(Protocol):
    """A file read in passes from its start (``beryl.data.inputfile.InputFile``)."""

    @property
    def size(self) -> int: ...

    def head(self, size: int = ...) -> bytes:
        """The first bytes of the file."""

    def stream(self) -> pa.NativeFile:
        """A new pass over the file, for Arrow."""

    def raise_read_error(self) -> None:
        """Raise the ``OSError`` a read met (Arrow may report it as a parse error)."""


Take = Callable[[pa.RecordBatch, int], None]


def text_blocks(
    source: Source,
    name: str,
    wanted: list[str] | None,
    take: Take,
    restart: Callable[[], None],
    *,
    block_size: int,
    max_block_size: int,
) -> tuple[list[str], str | None]:
    """The careful parse of ``read_csv_bytes``, a block at a time: feed ``take(batch,
    first_row)`` each block as text columns (names trimmed as the careful reader trims them,
    only the ``wanted`` ones when given). Returns the trimmed header and the note on how the
    file was read.

    Decides as ``read_csv_bytes`` does: binary content is refused, a file that is not UTF-8 is
    read again as Latin-1, a row longer than a block makes the blocks larger (four times, up
    to ``max_block_size``), any other parse error refuses the file. Before each pass,
    ``restart()`` drops what an earlier pass took.
    """
    head = source.head()
    check_text(head, name, whole=len(head) == source.size)
    attempt = _Attempt(block_size=block_size)
    while True:
        restart()
        block = attempt.block_size or block_size
        try:
            return _text_pass(source, name, wanted, take, attempt.encoding, block), attempt.note
        except pa.ArrowInvalid as exc:
            source.raise_read_error()
            again = attempt.after(exc, block * 4 if block < max_block_size else None)
            if again is not None:
                attempt = again
                continue
            if _row_too_long(str(exc)):
                raise SchemaError(
                    f"{name}: a row is longer than {max_block_size >> 20} MiB, the most a file "
                    "read in blocks may have",
                    hint="check the file for an unterminated quote, or split the long values",
                ) from exc
            raise unreadable(name, exc) from exc
        except (pa.ArrowNotImplementedError, pa.ArrowKeyError) as exc:
            source.raise_read_error()
            raise unreadable(name, exc) from exc


def _text_pass(
    source: Source, name: str, wanted: list[str] | None, take: Take, encoding: str, block: int
) -> list[str]:
    # A first reader learns the column names from the header; the second reads them all as text.
    with open_stream(source.stream(), block_size=block, encoding=encoding) as first:
        header = first.schema.names
    trimmed = [n.strip() for n in header]
    repeated_columns(trimmed, name)
    renamed = [n.lstrip("\ufeff") for n in trimmed]
    # Columns missing: read on anyway, as the careful reader parses a whole file before it
    # looks at its columns (a file that is not CSV at all says so, not "missing columns").
    absent = wanted is not None and any(c not in renamed for c in wanted)
    keep = [r for r, c in zip(header, renamed, strict=True) if absent or not wanted or c in wanted]
    rename = dict(zip(header, renamed, strict=True))
    with open_stream(
        source.stream(),
        block_size=block,
        column_types={raw: pa.large_string() for raw in header},
        include_columns=keep,
        encoding=encoding,
    ) as reader:
        rows = 0
        for batch in reader:
            if not absent:
                take(batch.rename_columns([rename[n] for n in batch.schema.names]), rows + 1)
            rows += batch.num_rows
    if absent and wanted is not None:
        missing_columns(renamed, wanted, name)
    return trimmed


# -- a file to score ------------------------------------------------------------------------------
def stream_rows(path: Path, schema: Schema, *, block_bytes: int = STREAM_BLOCK_BYTES) -> CsvStream:
    """Open a CSV file of rows to score, to read a block of about ``block_bytes`` at a time, so
    memory stays bounded whatever the file's size.

    The schema's text columns (identifiers, categories, the label) are read as text and its
    numeric columns as float64; other columns come as Arrow infers them. A file that cannot be
    opened or parsed is a ``SchemaError`` naming it, and, for a value that is not a number,
    the column and the rows::

        with stream_rows(Path("customers.csv"), schema) as stream:
            for batch in stream:  # pyarrow.RecordBatch, columns named as in the file
                ...
    """
    column_types = {c: pa.string() for c in schema.text_columns}
    column_types |= {c: pa.float64() for c in schema.numeric}
    try:
        reader = open_stream(str(path), block_size=block_bytes, column_types=column_types)
    except pa.ArrowInvalid as exc:  # the first block is parsed as the file is opened
        raise not_a_number(path, exc) or unreadable(path.name, exc) from exc
    except OSError as exc:
        raise unreadable(path.name, exc) from exc
    return CsvStream(path, reader)


def not_a_number(path: Path, exc: Exception) -> SchemaError | None:
    """Arrow's "In CSV column #1: ... invalid value 'x'" as the file's line and column name (the
    first line holding that value there, found by reading the file again; the header is line
    1); None for another error."""
    found = re.search(r"column #(\d+): .*?invalid value '([^']*)'", str(exc))
    if not found:
        return None
    index, value = int(found.group(1)), found.group(2)
    with path.open(encoding="utf-8", errors="replace", newline="") as handle:
        rows = csv.reader(handle)
        names = next(rows, [])
        row = next((n for n, r in enumerate(rows, 2) if len(r) > index and r[index] == value), 0)
    column = names[index] if index < len(names) else f"#{index + 1}"
    where = f"line {row}" if row else "a line"
    return SchemaError(
        f"{path.name} {where}: column {column!r} has a value that is not a number ({value!r})",
        hint="fix that value or leave it blank for missing",
    )


class CsvStream:
    """The blocks of a CSV file being read (``stream_rows``); use as a context manager."""

    def __init__(self, path: Path, reader: pacsv.CSVStreamingReader) -> None:
        self.path = path
        self.rows = 0  # data rows read so far
        self._reader = reader

    @property
    def names(self) -> list[str]:
        """The file's column names, as its header has them."""
        return list(self._reader.schema.names)

    def __iter__(self) -> Iterator[pa.RecordBatch]:
        try:
            for batch in self._reader:
                self.rows += batch.num_rows
                yield batch
        except pa.ArrowInvalid as exc:
            raise not_a_number(self.path, exc) or SchemaError(
                f"{self.path.name}: not a readable CSV file after row {self.rows}: {exc}",
                hint="fix the file (comma-separated, UTF-8, one header row) and try again",
            ) from exc

    def close(self) -> None:
        self._reader.close()

    def __enter__(self) -> CsvStream:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.close()
