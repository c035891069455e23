"""Reading a CSV file's bytes into the dataset's types: the rules, for a whole file.

A well-formed file is parsed by Arrow straight into the dataset's types when Arrow can vouch
for the result (``vouched``); anything else takes the careful path (``read_csv_bytes`` and
``clean_dataset``), which gives the same result or says what is wrong. ``beryl.data.blocks``
applies the same rules to a large file block by block; the parsing itself is
``beryl.data.csvfiles``'.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from beryl.config import Settings
from beryl.data.csvfiles import ARROW_ERRORS, header_names, parse, plain_header, read_csv_bytes
from beryl.data.schema import MAX_EXACT_LABEL, Schema, arrow_schema, infer_roles, infer_schema
from beryl.errors import SchemaError


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
    from beryl.data.cleaning import clean_dataset, to_arrow

    raw = read_csv_bytes(data, source, schema.text_columns)
    frame = clean_dataset(raw, schema, source, ingesting=True)
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
    if not plain_header(data, schema):
        return None
    types = arrow_schema(schema)
    # Only a quoted value can hold a line break; without quotes after the header, Arrow may split
    # the file at any line end, which parses faster.
    quoted = data.find(b'"', data.find(b"\n") + 1) >= 0
    try:
        table = parse(data, column_types=types, include_columns=schema.columns, quoted=quoted)
    except ARROW_ERRORS:
        return None
    if table.num_rows == 0 or not vouched(table, schema, types):
        return None
    return table


def vouched(table: pa.Table, schema: Schema, types: pa.Schema) -> bool:
    """Whether Arrow's direct parse of these rows is what the careful path gives for them."""
    if table.schema != types:
        return False
    if table.num_rows == 0:
        return True
    for column in schema.numeric:
        if pc.any(pc.is_inf(table[column])).as_py():
            return False
    label = table[schema.target]
    if label.null_count:
        return False
    if schema.label_is_numeric and pc.max(pc.abs(label)).as_py() > MAX_EXACT_LABEL:
        return False
    return not any(
        pa.types.is_large_string(kind.type) and _padded(table[kind.name]) for kind in types
    )


def first_schema(settings: Settings, data: bytes, source: str) -> Schema:
    """The dataset's schema from its first file: the config's roles, and for features it does
    not list, numeric when every value is a number.

    Arrow's type inference decides when it finds numbers (or nothing) in every unlisted column;
    a text column could still hold numbers the careful reader accepts (padded, say), so then the
    careful path decides.
    """
    reserved = set(text_columns(settings, None))
    names = header_names(data)
    table = None
    if names is not None and len(set(names)) == len(names):
        try:
            table = parse(data, column_types={c: pa.string() for c in reserved if c in names})
        except ARROW_ERRORS:
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
    raw = read_csv_bytes(data, source, text_columns(settings, None))
    return infer_schema(settings, raw, source)


def check_classes(labels: pa.ChunkedArray, known: list[Any], source: str) -> list[Any]:
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
