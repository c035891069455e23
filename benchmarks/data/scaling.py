"""Ingestion and batch scoring at growing input sizes, Beryl and pandas, one run per size."""

from __future__ import annotations

import functools
import shutil
from typing import Any

from benchmarks.common import say
from benchmarks.data.benches import predict_beryl, predict_pandas
from benchmarks.data.ingest import ingest_beryl, ingest_pandas
from benchmarks.data.measure import Context, Proc, in_turn
from benchmarks.data.workspaces import (
    count_lines,
    head_csv,
    manifest_rows,
    shared_workspace,
    workspace_config,
)

SCALING_SHARES = (1 / 8, 1 / 4, 1 / 2, 1)  # of the source files, one measurement per size


def scaling_sizes(files: int) -> list[int]:
    """How many source files each scaling point covers: 1/8, 1/4, 1/2 and all of them."""
    return sorted({max(1, round(files * share)) for share in SCALING_SHARES})


def point(proc: Proc) -> dict[str, Any]:
    """One contender's figures at one scaling point."""
    return {
        "wall_s": proc.wall_s,
        "cpu_s": proc.cpu_s,
        "peak_mb": proc.peak_mb,
        "load_before": proc.load_before,
        "log": proc.log,
    }


def scaling_point(
    kind: str, rows: int, ours: Proc, theirs: Proc, rows_out: tuple[int, int]
) -> dict[str, Any]:
    """A scaling point for ``data.json``; prints how Beryl compares with pandas there."""
    same = rows_out[0] == rows_out[1]
    wall = ours.wall_s / theirs.wall_s
    peak = (ours.peak_mb or 0.0) / (theirs.peak_mb or float("inf"))
    say(
        f"  -> {kind} {rows:,} rows: wall {wall:.2f}x pandas, peak RSS {peak:.2f}x pandas, "
        f"rows out {rows_out[0]:,} / {rows_out[1]:,} ({'same' if same else 'DIFFERENT'})"
    )
    return {
        "rows": rows,
        "beryl": point(ours),
        "pandas": point(theirs),
        "rows_out": {"beryl": rows_out[0], "pandas": rows_out[1]},
        "same_rows_out": same,
    }


def scaling_ingest(ctx: Context, sizes: list[int]) -> list[dict[str, Any]]:
    """Ingest the first N source files for each N in ``sizes``: fresh workspace and output."""
    per_file = ctx.params["rows_per_file"]
    workspace = "scaling/ingest"
    config = workspace_config(ctx, workspace)
    peer_out = ctx.work / "scaling" / "ingest-pandas"
    points = []
    for index, files in enumerate(sizes):
        size = f"{files} files x {per_file:,} rows"
        beryl = functools.partial(ingest_beryl, ctx, f"beryl ingest {size}", workspace, files)
        peer = functools.partial(ingest_pandas, ctx, f"pandas ingest {size}", peer_out, files)
        ours, theirs = in_turn(index, beryl, peer)
        rows_out = (manifest_rows(config), int(theirs.report["rows_written"]))
        found = scaling_point("ingest", files * per_file, ours, theirs, rows_out)
        points.append(found | {"files": files})
        shutil.rmtree(config.parent)
        shutil.rmtree(peer_out)
    return points


def scaling_predict(ctx: Context, sizes: list[int]) -> list[dict[str, Any]]:
    """Score the first N x rows-per-file rows of the scoring file for each N in ``sizes``."""
    config = shared_workspace(ctx)
    customers = ctx.data / "predict" / "customers.csv"
    work = ctx.work / "scaling"
    work.mkdir(parents=True, exist_ok=True)
    outputs = (work / "predict-beryl.csv", work / "predict-pandas.csv")
    points = []
    for index, files in enumerate(sizes):
        rows = files * ctx.params["rows_per_file"]
        source = customers
        if files < ctx.params["files"]:  # the whole file scores ``files`` x rows-per-file rows
            source = work / f"customers-{rows}.csv"
            head_csv(customers, source, rows)
        label = f"predict {rows:,} rows"
        beryl = functools.partial(predict_beryl, ctx, f"beryl {label}", config, source, outputs[0])
        peer = functools.partial(predict_pandas, ctx, f"pandas {label}", config, source, outputs[1])
        ours, theirs = in_turn(index, beryl, peer)
        rows_out = (count_lines(outputs[0]) - 1, int(theirs.report["rows"]))
        points.append(scaling_point("predict", rows, ours, theirs, rows_out))
        for path in {*outputs, source} - {customers}:
            path.unlink()
    return points


def bench_scaling(ctx: Context) -> None:
    """Ingestion and batch scoring at growing input sizes, Beryl vs pandas, one run per size."""
    say("scaling: ingestion and batch scoring at growing sizes, Beryl vs pandas")
    sizes = scaling_sizes(ctx.params["files"])
    ctx.scaling = {
        "ingest": {
            "what": "beryl ingest vs pandas read_csv + concat + drop_duplicates + to_csv",
            "x": "input rows (the first source files by name)",
            "points": scaling_ingest(ctx, sizes),
        },
        "predict": {
            "what": "beryl predict vs pandas read_csv + predict_proba + to_csv",
            "x": "rows scored (the head of the scoring file)",
            "points": scaling_predict(ctx, sizes),
        },
    }
