"""Re-typing a feature of the stored dataset: numeric to categorical, or categorical to numeric.

A dataset's types are fixed by its first file (or the config's feature lists); a column inferred
as numeric that really holds categories makes every later file with text in it a quarantined
one. ``retype`` converts the column in every batch, as the careful reader would have read it::

    retype(workspace, "plan", "categorical")  # 7.0 -> "7", 2.5 -> "2.5", missing stays missing
    retype(workspace, "plan", "numeric")  # " 7" -> 7.0; "gold" refuses, naming batch and rows

Crash-safe: the converted rows go to new batches under new ids (a published batch is never
changed), with their row hashes computed again, and one new manifest naming them and the new
schema is published atomically (``Dataset.commit``). Until then readers see the dataset as it
was, and a failure removes the new files; once it is published the old batch files are named by
nothing, and the repair moves them aside. Models trained before keep their own schema; the next
training uses the new types. Call only while holding the workspace lock.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from beryl.config import Settings
from beryl.data import rowhash
from beryl.data.dataset import Dataset
from beryl.data.manifest import BatchInfo, Manifest
from beryl.data.repair import repair
from beryl.data.schema import Schema, arrow_schema
from beryl.errors import EmptyDatasetError, SchemaError
from beryl.workspace import Workspace

Kind = Literal["categorical", "numeric"]
KINDS: tuple[Kind, ...] = ("categorical", "numeric")


@dataclass
class RetypeResult:
    """What a re-type did."""

    column: str
    kind: Kind
    changed: bool
    schema: Schema
    batches: dict[str, str] = field(default_factory=dict)  # old batch id -> new batch id
    rows: int = 0
    merged: int = 0  # rows equal to an earlier one once converted, kept once


def retype(workspace: Workspace | Settings, column: str, kind: Kind) -> RetypeResult:
    """Re-type ``column`` of the stored dataset as ``kind`` ("categorical" or "numeric").

    The config must agree with the new types first: ``numeric_features`` and
    ``categorical_features`` in config.json either absent, or listing the column as ``kind``.
    A value that is not a number refuses a re-type to numeric, naming the batch and the rows,
    and nothing changes.
    """
    if kind not in KINDS:
        raise SchemaError(f"cannot re-type as {kind!r}", hint="use categorical or numeric")
    workspace = Workspace.of(workspace)
    settings, dataset = workspace.settings, workspace.dataset
    schema = dataset.schema
    if schema is None or not dataset.batches:
        raise EmptyDatasetError(
            f"no data has been ingested into {settings.output_folder} yet: nothing to re-type",
            hint="declare the column in categorical_features or numeric_features in config.json "
            "before the first ingestion instead",
        )
    _check_column(schema, column)
    retyped = _retyped_schema(schema, settings, column, kind)
    if column in (schema.categorical if kind == "categorical" else schema.numeric):
        return RetypeResult(column, kind, changed=False, schema=schema)

    mapping: dict[str, str] = {}
    written: list[str] = []
    batches: list[BatchInfo] = []
    seen: list[np.ndarray] = []  # sorted hashes of the rows kept so far
    merged = 0
    try:
        for batch in dataset.batches:
            new_id = dataset.new_batch_id(written)
            written.append(new_id)
            rows, dropped = _rewrite(dataset, batch.id, new_id, retyped, column, kind, seen)
            merged += dropped
            if rows:
                mapping[batch.id] = new_id
                batches.append(BatchInfo(new_id, batch.created, rows, list(batch.files)))
        files = [
            dataclasses.replace(r, batch=mapping.get(r.batch)) if r.batch else r
            for r in dataset.files
        ]
        manifest = Manifest(
            schema=retyped,
            batches=batches,
            files=files,
            snapshot=dataset.manifest.snapshot,
            classes=list(dataset.manifest.classes),
            row_hash=rowhash.VERSION,
        )
        dataset.commit(manifest, settings.write_csv_snapshot)
    except BaseException:
        dataset.discard_unpublished(written)
        raise
    # The old batches at once into the recovery folder: a manifest rebuilt from the batches'
    # own records must never find the rows twice.
    repair(dataset, settings.write_csv_snapshot)
    rows = sum(b.rows for b in batches)
    return RetypeResult(column, kind, True, retyped, mapping, rows, merged)


def _check_column(schema: Schema, column: str) -> None:
    if column in schema.features:
        return
    if column == schema.target:
        raise SchemaError(f"{column!r} is the label column; only features can be re-typed")
    if column in schema.id_columns:
        raise SchemaError(
            f"{column!r} is an identifier column (kept as text); only features can be re-typed"
        )
    raise SchemaError(
        f"the dataset has no feature column {column!r}; its features are "
        + ", ".join(schema.features),
        hint="check the column's name (as in the files' header)",
    )


def _retyped_schema(schema: Schema, settings: Settings, column: str, kind: Kind) -> Schema:
    """The schema with ``column`` as ``kind``, its feature lists in the config's order when the
    config lists them; a config that does not agree with it is refused, saying what to write."""
    other: Kind = "numeric" if kind == "categorical" else "categorical"
    lists = {
        "numeric": [c for c in schema.numeric if c != column],
        "categorical": [c for c in schema.categorical if c != column],
    }
    lists[kind].append(column)
    problems = []
    for name in KINDS:
        listed = settings.numeric_features if name == "numeric" else settings.categorical_features
        if listed is None:
            continue
        if sorted(listed) != sorted(lists[name]):
            problems.append(f"{name}_features in config.json is {listed}, not {lists[name]}")
        else:
            lists[name] = list(listed)
    if problems:
        raise SchemaError(
            f"cannot re-type {column!r} as {kind}: " + "; ".join(problems),
            hint=f"list {column!r} in {kind}_features (not in {other}_features) in config.json, "
            "or leave both lists out, then run the command again",
        )
    today = datetime.now(UTC).date().isoformat()
    origin = dict(schema.origin)
    origin[column] = f"re-typed as {kind} with `beryl dataset retype` on {today}"
    retyped = Schema(
        schema.target,
        schema.positive_label,
        list(schema.id_columns),
        lists["numeric"],
        lists["categorical"],
        origin,
    )
    retyped.check_settings(settings)  # target, label and identifiers must agree as well
    return retyped


def _rewrite(
    dataset: Dataset,
    old_id: str,
    new_id: str,
    schema: Schema,
    column: str,
    kind: Kind,
    seen: list[np.ndarray],
) -> tuple[int, int]:
    """Write batch ``new_id``: batch ``old_id`` with ``column`` converted, a row group at a
    time, without rows equal to one kept before. Returns the rows written and dropped."""
    types = arrow_schema(schema)
    dropped = 0
    first_row = 1
    with dataset.batch_writer(new_id, False, schema.id_columns) as writer:
        for table in dataset.row_groups(old_id):
            values = table[column]
            converted = (
                _as_text(values)
                if kind == "categorical"
                else _as_numbers(values, column, f"batch {old_id}", first_row)
            )
            first_row += table.num_rows
            table = table.set_column(table.schema.get_field_index(column), column, converted)
            table = table.select(schema.columns).cast(types)
            hashes = rowhash.row_hashes(table)
            keep = _unseen(hashes, seen)
            dropped += int(len(keep) - keep.sum())
            if not keep.all():
                table, hashes = table.filter(pa.array(keep)), hashes[keep]
            seen.append(np.sort(hashes))
            writer.append(table, hashes)
            writer.drain()  # one row group in memory at a time
        rows = writer.rows
    return rows, dropped


def _unseen(hashes: np.ndarray, seen: list[np.ndarray]) -> np.ndarray:
    """Which rows are the first with their hash: not kept before, not earlier in ``hashes``."""
    keep = np.zeros(len(hashes), dtype=bool)
    keep[np.unique(hashes, return_index=True)[1]] = True
    for run in seen:
        if run.size:
            position = np.minimum(np.searchsorted(run, hashes), run.size - 1)
            keep &= run[position] != hashes
    return keep


def _as_text(values: pa.ChunkedArray) -> pa.Array:
    """Numbers as the text a CSV file would have held: an integral value without a decimal
    point (7.0 is "7", as finaldata.csv writes it), any other by Python's shortest repr."""
    numbers = values.combine_chunks().cast(pa.float64())
    present = pc.invert(pc.or_kleene(pc.is_null(numbers), pc.is_nan(numbers)).fill_null(True))
    distinct = pc.unique(pc.filter(numbers, present)).to_pylist()
    texts = pa.array([_number_text(v) for v in distinct], pa.large_string())
    index = pc.index_in(numbers, value_set=pa.array(distinct, pa.float64()))
    text = pc.take(texts, index)  # missing numbers (null index) stay missing
    return pc.if_else(present, text, pa.scalar(None, pa.large_string()))


def _number_text(value: float) -> str:
    if value.is_integer() and abs(value) < 2**63:
        return str(int(value))
    return repr(value) if math.isfinite(value) else str(value)


def _as_numbers(values: pa.ChunkedArray, column: str, source: str, first_row: int) -> pa.Array:
    """Text as numbers by the careful reader's rules; a value that is not one refuses."""
    from beryl.data.cleaning import parse_numbers

    try:
        return parse_numbers(values, column, source, first_row=first_row)
    except SchemaError as exc:
        raise SchemaError(
            f"cannot re-type {column!r} as numeric: {exc.message}; nothing was changed",
            hint=f"{column!r} holds text that is not a number, so it stays categorical",
        ) from exc
