"""The careful path's rules: a raw frame to the schema's typed columns, with errors that name
file, column and rows.

Every file the fast Arrow path in ``beryl.data.reading`` cannot vouch for comes here once parsed
(``beryl.data.csvfiles.read_csv_bytes``), as do uploads to the API and test-data files. The
cleaning rules live in one place (``clean_dataset``); pandas is imported only by this module, so
commands that never read an odd file never load it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pyarrow as pa

# TooManyRowsError and read_csv_bytes: the parser's, imported from here by callers that predate
# beryl.data.csvfiles (the API's prediction route, model scoring).
from beryl.data.csvfiles import TooManyRowsError as TooManyRowsError
from beryl.data.csvfiles import missing_columns
from beryl.data.csvfiles import read_csv_bytes as read_csv_bytes
from beryl.data.schema import MAX_EXACT_LABEL, Schema, arrow_schema
from beryl.errors import SchemaError

_MAX_SHOWN = 5


class ColumnTypeError(SchemaError):
    """Values that do not fit a column's type in the schema (text in a numeric column): the
    file may be right and the type wrong, so ingestion judges it again after a re-type."""


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
