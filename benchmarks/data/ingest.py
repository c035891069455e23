"""Ingestion, on each data set in turn: ``beryl ingest`` of the source files on a fresh workspace
against the pandas original and DuckDB's bare job on the same files; then one new file on top.

The three contenders are fresh processes, measured alike (``measure.measure``: wall time around
the process, CPU from ``wait4``, the child's own ``VmHWM``). pandas runs in Beryl's venv
(``tasks.py ingest-pandas``), DuckDB in the engines' venv (``barejob.py duckdb``, the job
``engines.py`` measures too). In each round the two peers run one after the other and Beryl
before both or after both, alternating; with ``--repeat N`` the median of N counts. Beryl's
output must hold the same rows as each peer's (a multiset), and list the same files as pandas'.
"""

from __future__ import annotations

import shutil
import statistics
from pathlib import Path
from typing import Any

from benchmarks.common import say
from benchmarks.data.engines import bare_job_argv
from benchmarks.data.engines import python as engines_python
from benchmarks.data.measure import (
    Context,
    Proc,
    add_row,
    alternate,
    beryl_argv,
    measure,
    median,
    ratio_row,
    run_task,
    settle,
    summary,
    task_argv,
    warm,
)
from benchmarks.data.workspaces import (
    count_lines,
    csv_files,
    input_folder,
    make_workspace,
    manifest_rows,
    workspace_config,
)

TRACE_INGEST = [
    "beryl.data.scan:scan_input",
    "pandas:concat",
    "beryl.data.rowhash:row_hashes",
    "numpy:unique",
    "beryl.data.dataset:Dataset.row_hashes",
    "beryl.data.dataset:Dataset.batch_writer",
    "beryl.data.snapshot:write",
]


# -- the contenders -------------------------------------------------------------------------------
def ingest_pandas(
    ctx: Context, label: str, output: Path, limit: int | None = None, source: Path | None = None
) -> Proc:
    """The pandas peer ingesting the source files (the first ``limit``) into a fresh ``output``.

    ``source`` is the demo data set's source folder unless given.
    """
    source = source or ctx.data / "source"
    shutil.rmtree(output, ignore_errors=True)
    warm(csv_files(source)[:limit])
    params = {"input": str(source), "output": str(output), "limit": limit}
    return measure(ctx, label, task_argv(ctx, "ingest-pandas", params))


def ingest_beryl(
    ctx: Context, label: str, workspace: str, limit: int | None = None, source: Path | None = None
) -> Proc:
    """`beryl ingest` of the source files (the first ``limit``) in a fresh ``work/workspace``.

    ``source`` is the demo data set's source folder unless given.
    """
    source = source or ctx.data / "source"
    config = make_workspace(ctx, workspace, source, limit=limit)
    warm(csv_files(source)[:limit])
    settle(input_folder(config))
    return measure(ctx, label, beryl_argv(ctx, config, "ingest"), profile=TRACE_INGEST)


def ingest_duckdb(ctx: Context, label: str, source: Path, output: Path) -> Proc:
    """DuckDB's bare job on ``source``'s CSV files into a fresh ``output/finaldata.csv``, in a
    fresh process of the engines' venv."""
    shutil.rmtree(output, ignore_errors=True)
    output.mkdir(parents=True)
    warm(csv_files(source))
    return measure(ctx, label, bare_job_argv("duckdb", source, output / "finaldata.csv"))


def compare_ingest(
    ctx: Context, beryl_out: Path, peer_out: Path, peer: str = "pandas", *, listings: bool = True
) -> dict[str, Any]:
    """Beryl's finaldata.csv holds the rows the peer's does (as a multiset); with ``listings``,
    both ingestedfiles.txt list the same files."""
    params = {"beryl": str(beryl_out / "finaldata.csv"), "peer": str(peer_out / "finaldata.csv")}
    if listings:
        params["ls_beryl"] = str(beryl_out / "ingestedfiles.txt")
        params["ls_peer"] = str(peer_out / "ingestedfiles.txt")
    return run_task(ctx, f"verify ingest outputs ({peer})", "compare-ingest", params)


# -- the benchmark --------------------------------------------------------------------------------
def bench_ingest(ctx: Context) -> None:
    """Each data set of ``ctx.datasets`` in turn (the demo data set alone when none is given)."""
    engines_python()  # the DuckDB peer's venv, set up before anything is measured
    for dataset, root in (ctx.datasets or {"demo": ctx.data}).items():
        ingest_dataset(ctx, dataset, root)


def ingest_dataset(ctx: Context, dataset: str, root: Path) -> None:
    """Full ingestion of ``root``'s source files vs pandas and DuckDB; then one new file on top."""
    say(
        f"ingest ({dataset}): the source files in the original schema, Beryl vs the pandas "
        "original and DuckDB's bare job"
    )
    source = root / "source"
    sources = csv_files(source)
    new = root / "new" / "activity-new.csv"
    workspace = f"ingest-{dataset}"
    pandas_out = ctx.work / f"ingest-pandas-{dataset}"
    duckdb_out = ctx.work / f"ingest-duckdb-{dataset}"
    config = workspace_config(ctx, workspace)
    increments: list[Proc] = []
    in_process: list[float] = []
    checks: list[dict[str, Any]] = []
    verified: dict[str, dict[str, Any]] = {}

    def peers(index: int) -> tuple[Proc, Proc]:
        """pandas and DuckDB, one after the other; which goes first alternates too."""
        round_ = f"{dataset} #{index + 1}"

        def pandas() -> Proc:
            return ingest_pandas(ctx, f"pandas ingest {round_}", pandas_out, source=source)

        def duckdb() -> Proc:
            return ingest_duckdb(ctx, f"duckdb bare job {round_}", source, duckdb_out)

        if index % 2 == 0:
            first = pandas()
            return first, duckdb()
        second = duckdb()
        return pandas(), second

    def beryl(index: int) -> Proc:
        label = f"beryl ingest {dataset} (full) #{index + 1}"
        full = ingest_beryl(ctx, label, workspace, source=source)
        argv = beryl_argv(ctx, config, "ingest")
        dataset_dir = config.parent / "ingesteddata"
        if not verified:  # the peers went first in the first round: their outputs are there
            verified["pandas"] = compare_ingest(ctx, dataset_dir, pandas_out)
            verified["duckdb"] = compare_ingest(
                ctx, dataset_dir, duckdb_out, "DuckDB", listings=False
            )
        rows_before = manifest_rows(config)
        before = config.parent / "ingesteddata-before"
        shutil.rmtree(before, ignore_errors=True)
        shutil.copytree(dataset_dir, before)
        shutil.copyfile(new, config.parent / "sourcedata" / new.name)
        warm([new])
        label = f"beryl ingest {dataset} (+1 new file) #{index + 1}"
        increments.append(measure(ctx, label, argv, profile=TRACE_INGEST))
        snapshot = dataset_dir / "finaldata.csv"
        rows_after = manifest_rows(config)
        checks.append(
            {
                "rows_before": rows_before,
                "rows_after": rows_after,
                "snapshot_matches_dataset": count_lines(snapshot) - 1 == rows_after,
            }
        )
        # the same file again, ingested inside a running process (as `beryl schedule` does)
        shutil.rmtree(dataset_dir)
        before.rename(dataset_dir)
        label = f"beryl ingest() {dataset} in process (+1 new file) #{index + 1}"
        report = run_task(ctx, label, "ingest-in-process", {"config": str(config)})
        in_process.append(float(report["ingest_s"]))
        return full

    ours, theirs = alternate(ctx, beryl, peers)
    by_pandas = [pandas for pandas, _ in theirs]
    by_duckdb = [duckdb for _, duckdb in theirs]
    incremental_ok = all(c["snapshot_matches_dataset"] for c in checks)
    say(f"  verify: {verified}; incremental {checks}")
    ctx.details.setdefault("ingest", {})[dataset] = {
        "source": str(source),
        "peer": summary(by_pandas),
        "duckdb": summary(by_duckdb),
        "duckdb_version": by_duckdb[0].report.get("version"),
        "beryl": summary(ours),
        "incremental": summary(increments),
        "incremental_in_process_s": in_process,
        "verify": verified["pandas"],
        "verify_duckdb": verified["duckdb"],
        "verify_incremental": checks,
    }
    pandas_ok = bool(verified["pandas"]["same_rows"] and verified["pandas"]["same_ingestedfiles"])
    duckdb_ok = bool(verified["duckdb"]["same_rows"])
    size = f"{len(sources)} files x {ctx.params['rows_per_file']:,} rows"
    walls = (median(ours, "wall_s"), median(by_pandas, "wall_s"))
    peaks = (median(ours, "peak_mb"), median(by_pandas, "peak_mb"))
    name = f"ingest {dataset} {size}"
    add_row(ctx, ratio_row(f"{name}: wall", "s", walls, "pandas", 0.25, "<= 0.25", pandas_ok))
    add_row(ctx, ratio_row(f"{name}: peak RSS", "MB", peaks, "pandas", 0.6, "<= 0.60", pandas_ok))
    duck_walls = (walls[0], median(by_duckdb, "wall_s"))
    duck_peaks = (peaks[0], median(by_duckdb, "peak_mb"))
    name = f"ingest {dataset} vs DuckDB bare job"
    add_row(ctx, ratio_row(f"{name}: wall", "s", duck_walls, "DuckDB", 1.0, "<= 1.0", duckdb_ok))
    label = f"{name}: peak RSS"
    add_row(ctx, ratio_row(label, "MB", duck_peaks, "DuckDB", 1.0, "< 1.0", duckdb_ok, strict=True))
    extra = (median(increments, "wall_s"), walls[0])
    label = f"ingest {dataset} +1 file ({ctx.params['rows_per_file']:,} rows) on top: wall"
    add_row(ctx, ratio_row(label, "s", extra, "Beryl full", 0.1, "<= 0.10", incremental_ok))
    inside = statistics.median(in_process)
    say(
        f"  note ({dataset}): the same new file ingested inside a running process (imports and "
        f"start-up not timed, as in `beryl schedule`): {inside:.3f} s, {inside / walls[0]:.3f} "
        "of the full pass"
    )
