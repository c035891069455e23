"""Batch scoring: stream a CSV file through the production model into an output CSV.

The input is read in blocks (``beryl.data.csvfiles.stream_rows``), so memory stays bounded
whatever the file's size; the output is written to a temporary file beside its target and
renamed into place when complete. Each block is predicted by ``beryl.model.predict.predict``,
as the API predicts, and with ``reasons=k`` explained by ``beryl.model.predict.explain``: columns
``reason_1`` (a feature's name) and ``reason_1_contribution`` (its contribution to the logit of
the positive label), up to ``reason_k``, largest first.

    result = score_file(workspace, Path("customers.csv"), Path("scored.csv"))
    score_file(workspace, Path("customers.csv"), Path("why.csv"), reasons=3)

With ``observe``, each scored block is also handed over (version, schema, the features, labels
and probabilities): ``beryl predict`` records it for live monitoring.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

from beryl._io import atomic_write_with
from beryl.config import Settings
from beryl.data.cleaning import clean_features
from beryl.data.csvfiles import CsvStream, stream_rows
from beryl.errors import DataError, ModelError, SchemaError
from beryl.model.predict import ExplainError, check_explainable, explain, predict
from beryl.workspace import Workspace

if TYPE_CHECKING:
    import pandas as pd

    from beryl.data.schema import Schema
    from beryl.model.linear import LinearModel

Progress = Callable[[int], None]
# What sees each scored block: version, schema, the feature frame, and the labels and
# probabilities as the Arrow arrays written out.
Observer = Callable[[str, "Schema", "pd.DataFrame", pa.Array, pa.Array], None]
BLOCK_BYTES = 16 << 20


@dataclass(frozen=True)
class BatchResult:
    """What ``score_file`` wrote."""

    version: str
    rows: int
    output: Path


def score_file(
    workspace: Workspace | Settings,
    source: Path,
    output: Path,
    *,
    version: str | None = None,
    progress: Progress | None = None,
    block_bytes: int = BLOCK_BYTES,
    reasons: int | None = None,
    observe: Observer | None = None,
) -> BatchResult:
    """Score every row of ``source`` with the production model (or ``version``); with
    ``reasons``, add that many reason codes per row (at most one per feature); ``observe``
    sees every scored block."""
    registry = Workspace.of(workspace).registry
    version = version or registry.require_production()
    model = registry.model(version)
    schema = model.schema
    if reasons is not None:
        try:
            check_explainable(model)
        except ExplainError as exc:
            raise ModelError(
                f"--explain {exc}", hint=f"{version} gives no reason codes; score without --explain"
            ) from exc
    if not source.is_file():
        raise DataError(f"{source} is not a file", hint="give the path of a CSV file to score")
    if output.exists() and source.samefile(output):  # also through a link
        raise DataError(
            f"the output {output} is the input file: scoring would replace it with its scores",
            hint="give -o another file name",
        )
    rows = 0

    def write(tmp: Path) -> None:
        with stream_rows(source, schema, block_bytes=block_bytes) as stream:
            write_stream(stream, tmp)

    def write_stream(stream: CsvStream, tmp: Path) -> None:
        nonlocal rows
        keep = [c for c in schema.id_columns if c in stream.names]
        writer: pacsv.CSVWriter | None = None
        # Blocks are written on a background thread (Arrow's CSV writer releases the GIL) while
        # the next block is read and scored; at most two wait, so memory stays bounded.
        pending: deque[Future[None]] = deque()
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="beryl-predict") as thread:
            try:
                for batch in stream:
                    if batch.num_rows == 0:
                        continue
                    label = f"{source.name} (rows {rows + 1}-{rows + batch.num_rows})"
                    frame = clean_features(batch.to_pandas(), schema, label)
                    features = frame[schema.features]
                    answer = predict(model, features)
                    columns = {c: batch.column(c) for c in keep}
                    columns["prediction"] = pa.array(answer.labels)
                    columns["probability"] = pa.array(answer.chances, type=pa.float64())
                    if observe is not None:
                        observe(
                            version, schema, features, columns["prediction"], columns["probability"]
                        )
                    if reasons is not None:
                        columns.update(reason_columns(model, frame, reasons))
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


def reason_columns(model: LinearModel, frame: pd.DataFrame, count: int) -> dict[str, pa.Array]:
    """``reason_<i>`` and ``reason_<i>_contribution`` for i = 1 .. count (at most the number of
    features): the i-th largest contribution to each row's logit for the positive label."""
    explained = explain(model, frame[model.schema.features], count)
    names = np.array(explained.features, dtype=object)
    columns: dict[str, pa.Array] = {}
    for i in range(explained.top.shape[1]):
        columns[f"reason_{i + 1}"] = pa.array(names[explained.top[:, i]], type=pa.string())
        columns[f"reason_{i + 1}_contribution"] = pa.array(
            explained.contributions[:, i], type=pa.float64()
        )
    return columns
