"""The careful reading path: CSV bytes to a typed frame, with errors that name file, column, rows.

Every file the fast Arrow path in ``beryl.data.ingestion`` cannot vouch for comes here, as do
uploads to the API and test-data files. The cleaning rules live in one place
(``clean_dataset``); pandas is imported only by this module, so commands that never read an odd
file never load it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv

from beryl.data.reading import check_text, missing_columns, repeated_columns, unreadable
from beryl.data.schema import MAX_EXACT_LABEL, Schema, arrow_schema
from beryl.errors import DataError, SchemaError

_MAX_SHOWN = 5


class TooManyRowsError(DataError):
    """More data rows than the reader was allowed to take (found while parsing, not after)."""


class ColumnTypeError(SchemaError):
    """Values that do not fit a column's type in the schema (text in a numeric column): the
    file may be right and the type wrong, so ingestion judges it again after a re-type."""


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
    """
    check_text(data, source)
    column_types = {name: pa.string() for name in text_columns or []}
    note = None
    try:
        table = _parse(data, column_types, max_rows=max_rows)
    except pa.ArrowInvalid as exc:
        message = str(exc)
        try:
            if "UTF8" in message or "UTF-8" in message:
                # Not UTF-8: Latin-1 decodes every byte, so the values survive as written.
                table = _parse(data, column_types, encoding="latin-1", max_rows=max_rows)
                note = "read as Latin-1 (the file is not valid UTF-8)"
            elif "straddling" in message:
                # A row longer than one parse block: parse the file as a single block.
                table = _parse(data, column_types, block_size=len(data) + 1, max_rows=max_rows)
            else:
                raise
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as again:
            raise unreadable(source, again) from again
    except pa.ArrowNotImplementedError as exc:
        raise unreadable(source, exc) from exc
    names = [str(n).strip() for n in table.column_names]
    repeated_columns(names, source)
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
    max_rows: int | None = None,
) -> pa.Table:
    read_options = pacsv.ReadOptions(encoding=encoding)
    if block_size is not None:
        read_options.block_size = block_size
    options = {
        "read_options": read_options,
        "parse_options": pacsv.ParseOptions(newlines_in_values=True),
        "convert_options": pacsv.ConvertOptions(
            strings_can_be_null=True, column_types=column_types
        ),
    }
    if max_rows is None:
        return pacsv.read_csv(pa.BufferReader(data), **options)
    # Block by block (types are inferred from the first block either way), counting rows.
    reader = pacsv.open_csv(pa.BufferReader(data), **options)
    batches, rows = [], 0
    for batch in reader:
        rows += batch.num_rows
        if rows > max_rows:
            raise TooManyRowsError(f"more than {max_rows} rows")
        batches.append(batch)
    return pa.Table.from_batches(batches, schema=reader.schema)


def _rows(mask: pd.Series, first_row: int = 1) -> str:
    rows = (np.flatnonzero(mask.to_numpy()) + first_row).tolist()
    shown = ", ".join(str(r) for r in rows[:_MAX_SHOWN])
    more = f" and {len(rows) - _MAX_SHOWN} more" if len(rows) > _MAX_SHOWN else ""
    return f"row{'s' if len(rows) > 1 else ''} {shown}{more}"


def _clean_text(series: pd.Series) -> pd.Series:
    text = series.astype(pd.StringDtype(na_value=np.nan)).str.strip()
    return text.mask(text == "", np.nan)


# What Arrow's CSV reader takes for true/false (a column of only these is read as booleans).
_BOOLEANS = frozenset({"true", "True", "TRUE", "false", "False", "FALSE"})


def _clean_numeric(series: pd.Series, column: str, source: str, context: _Context) -> pd.Series:
    if pd.api.types.is_bool_dtype(series):
        raise ColumnTypeError(f"{source}: column {column!r} holds true/false values, not numbers")
    if pd.api.types.is_numeric_dtype(series):
        values = series.astype("float64")
    else:
        text = _clean_text(series)
        values = pd.to_numeric(text, errors="coerce").astype("float64")
        bad = text.notna() & values.isna()
        if bad.any():
            given = text[text.notna()]
            if given.isin(_BOOLEANS).all():  # read as text (a block of a file read in blocks)
                raise ColumnTypeError(
                    f"{source}: column {column!r} holds true/false values, not numbers"
                )
            raise _not_numbers(text[bad].unique()[:3], column, source, context, bad)
    infinite = np.isinf(values.to_numpy())
    if infinite.any():
        rows = _rows(pd.Series(infinite), context.first_row)
        raise SchemaError(
            f"{source}: column {column!r} has infinite values at {rows}",
            hint="replace them with a finite number or leave them blank for missing",
        )
    return values


def _not_numbers(
    found: np.ndarray, column: str, source: str, context: _Context, bad: pd.Series
) -> ColumnTypeError:
    """Text in a numeric column. For a file being ingested, say where the column's type came
    from and how to change it: the dataset's types are fixed, so a column inferred as numeric
    that holds categories needs its stored data re-typed (``beryl dataset retype``)."""
    examples = ", ".join(repr(v) for v in found)
    rows = _rows(bad, context.first_row)
    origin = context.origin.get(column) if context.ingesting else None
    if origin is None:
        return ColumnTypeError(
            f"{source}: column {column!r} has values that are not numbers ({examples}) at {rows}",
            hint="fix those values or leave them blank for missing",
        )
    instead = " instead of numeric_features" if "numeric_features" in origin else ""
    return ColumnTypeError(
        f"{source}: column {column!r} was {origin}; this file has text in it ({examples}) "
        f"at {rows}",
        hint=f"if {column!r} holds categories, list it in categorical_features{instead} in "
        f"config.json and re-type the stored data with `beryl dataset retype {column} --as "
        "categorical`, then ingest again; if the text is a mistake, fix those values or leave "
        "them blank for missing",
    )


def _clean_label(series: pd.Series, schema: Schema, source: str, context: _Context) -> pd.Series:
    column = schema.target
    text = _clean_text(series)
    missing = text.isna()
    if missing.any():
        raise SchemaError(
            f"{source}: label column {column!r} is blank at {_rows(missing, context.first_row)}",
            hint="every row needs a label; remove unlabelled rows or fill them in",
        )
    if not schema.label_is_numeric:
        return text
    values = pd.to_numeric(text, errors="coerce")
    bad = values.isna() | (values != np.floor(values)) | (values.abs() > MAX_EXACT_LABEL)
    if bad.any():
        examples = ", ".join(repr(v) for v in text[bad].unique()[:3])
        raise SchemaError(
            f"{source}: label column {column!r} has non-integer values ({examples}) "
            f"at {_rows(bad, context.first_row)}",
            hint="labels are integers because positive_label is; use a string positive_label "
            'such as "Yes" for text labels',
        )
    return values.astype("int64")


@dataclass(frozen=True)
class _Context:
    """How errors are worded: the row number of the frame's first row, and for a file being
    ingested, where each column's type came from."""

    first_row: int = 1
    ingesting: bool = False
    origin: dict[str, str] = field(default_factory=dict)


def clean_dataset(
    frame: pd.DataFrame,
    schema: Schema,
    source: str,
    *,
    first_row: int = 1,
    ingesting: bool = False,
) -> pd.DataFrame:
    """The one place cleaning rules live: a raw frame in, the schema's typed columns out.

    Columns are matched by name (order and extra columns do not matter); text is trimmed and
    blank text is missing; numeric columns become float64 with blanks as NaN; labels must be
    present and, for an integer ``positive_label``, integers. Anything else is a ``SchemaError``
    naming ``source``, the column and the rows (counted from ``first_row``, for a frame that is
    a block of a longer file). ``ingesting``: text in a numeric column is explained by where
    the dataset's type for it came from (``schema.origin``) and how to change it.
    """
    context = _Context(first_row, ingesting, schema.origin)
    return _clean(frame, schema, source, schema.columns, context)


def clean_features(frame: pd.DataFrame, schema: Schema, source: str) -> pd.DataFrame:
    """The same rules for unlabelled rows (what a model predicts on): features only."""
    return _clean(frame, schema, source, schema.features, _Context())


def _clean(
    frame: pd.DataFrame, schema: Schema, source: str, columns: list[str], context: _Context
) -> pd.DataFrame:
    frame = frame.rename(columns=lambda c: str(c).strip().lstrip("\ufeff"))
    missing_columns([str(c) for c in frame.columns], columns, source)
    out: dict[str, pd.Series] = {}
    for column in columns:
        if column in schema.numeric:
            out[column] = _clean_numeric(frame[column], column, source, context)
        elif column == schema.target:
            out[column] = _clean_label(frame[column], schema, source, context)
        else:
            out[column] = _clean_text(frame[column])
    return pd.DataFrame(out, index=pd.RangeIndex(len(frame)))[columns]


def parse_numbers(
    values: pa.ChunkedArray | pa.Array, column: str, source: str, *, first_row: int = 1
) -> pa.Array:
    """Text as numbers by the careful reader's rules (trimmed, blank is missing, what is not a
    finite number refused naming ``source``, the column and the rows from ``first_row``)."""
    series = pd.Series(values.to_pandas(), dtype=object)
    numbers = _clean_numeric(series, column, source, _Context(first_row))
    return pa.array(numbers.to_numpy(dtype=np.float64), pa.float64(), from_pandas=True)


def to_arrow(frame: pd.DataFrame, schema: Schema) -> pa.Table:
    table = pa.Table.from_pandas(frame, schema=arrow_schema(schema), preserve_index=False)
    return table.replace_schema_metadata(None)
