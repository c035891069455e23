"""Batch scoring: stream a CSV file through the production model into an output CSV.

The input is read in blocks, so memory stays bounded whatever the file's size; the output is
written to a temporary file beside its target and renamed into place when complete.

    result = score_file(settings, Path("customers.csv"), Path("scored.csv"))
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

from beryl._io import atomic_write_with
from beryl.config import Settings
from beryl.data.cleaning import clean_features
from beryl.data.schema import Schema
from beryl.errors import DataError, SchemaError
from beryl.model.linear import LinearModel
from beryl.model.registry import Registry

Progress = Callable[[int], None]
BLOCK_BYTES = 16 << 20


@dataclass(frozen=True)
class BatchResult:
    """What ``score_file`` wrote."""

    version: str
    rows: int
    output: Path


def score_file(
    settings: Settings,
    source: Path,
    output: Path,
    *,
    version: str | None = None,
    progress: Progress | None = None,
    block_bytes: int = BLOCK_BYTES,
) -> BatchResult:
    """Score every row of ``source`` with the production model (or ``version``)."""
    registry = Registry(settings.model_folder)
    version = version or registry.require_production()
    schema = Schema.from_dict(registry.card(version).schema)
    model = registry.model(version)
    if not source.is_file():
        raise DataError(f"{source} is not a file", hint="give the path of a CSV file to score")
    if output.exists() and source.samefile(output):  # also through a link
        raise DataError(
            f"the output {output} is the input file: scoring would replace it with its scores",
            hint="give -o another file name",
        )
    rows = 0

    def write(tmp: Path) -> None:
        nonlocal rows
        reader = _open(source, schema, block_bytes)
        keep = [c for c in schema.id_columns if c in reader.schema.names]
        writer: pacsv.CSVWriter | None = None
        # Blocks are written on a background thread (Arrow's CSV writer releases the GIL) while
        # the next block is read and scored; at most two wait, so memory stays bounded.
        pending: deque[Future[None]] = deque()
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="beryl-predict") as thread:
            try:
                for batch in reader:
                    if batch.num_rows == 0:
                        continue
                    label = f"{source.name} (rows {rows + 1}-{rows + batch.num_rows})"
                    frame = clean_features(batch.to_pandas(), schema, label)
                    predictions, probabilities = _predict(model, frame, schema)
                    columns = {c: batch.column(c) for c in keep}
                    columns["prediction"] = pa.array(predictions)
                    columns["probability"] = pa.array(probabilities, type=pa.float64())
                    table = pa.table(columns)
                    if writer is None:
                        writer = pacsv.CSVWriter(str(tmp), table.schema)
                    while len(pending) >= 2:
                        pending.popleft().result()
                    pending.append(thread.submit(writer.write_table, table))
                    rows += batch.num_rows
                    if progress:
                        progress(rows)
                while pending:
                    pending.popleft().result()
            except pa.ArrowInvalid as exc:
                raise _read_error(source, reader.schema.names, rows, exc) from exc
            finally:
                for job in pending:  # after a failure: drop writes not started, await the rest
                    if not job.cancel():
                        job.exception()
                if writer is not None:
                    writer.close()
        if writer is None:
            raise SchemaError(f"{source.name}: has no data rows")

    atomic_write_with(output, write)
    return BatchResult(version=version, rows=rows, output=output)


def _open(source: Path, schema: Schema, block_bytes: int) -> pacsv.CSVStreamingReader:
    try:
        return pacsv.open_csv(
            str(source),
            read_options=pacsv.ReadOptions(block_size=block_bytes),
            parse_options=pacsv.ParseOptions(newlines_in_values=True),
            convert_options=pacsv.ConvertOptions(
                strings_can_be_null=True,
                column_types={c: pa.string() for c in schema.text_columns}
                | {c: pa.float64() for c in schema.numeric},
            ),
        )
    except (pa.ArrowInvalid, OSError) as exc:
        raise SchemaError(
            f"{source.name}: not a readable CSV file: {exc}",
            hint="fix the file (comma-separated, UTF-8, one header row) and try again",
        ) from exc


def _read_error(source: Path, names: list[str], rows: int, exc: Exception) -> SchemaError:
    """Name the column of a conversion error ("In CSV column #1: ... invalid value 'x'")."""
    found = re.search(r"column #(\d+): .*?invalid value '([^']*)'", str(exc))
    if found and int(found.group(1)) < len(names):
        column = names[int(found.group(1))]
        return SchemaError(
            f"{source.name} (rows {rows + 1} onwards): column {column!r} has a value that is not "
            f"a number ({found.group(2)!r})",
            hint="fix that value or leave it blank for missing",
        )
    return SchemaError(
        f"{source.name}: not a readable CSV file after row {rows}: {exc}",
        hint="fix the file (comma-separated, UTF-8, one header row) and try again",
    )


def _predict(model: LinearModel, frame: Any, schema: Schema) -> tuple[np.ndarray, np.ndarray]:
    """Predicted classes and positive-class probabilities, as arrays (no per-row Python)."""
    return model.predict_frame(frame[schema.features])
