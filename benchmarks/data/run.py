"""Data-path benchmarks: Beryl against a peer doing the same work on the same files, same run.

    .venv/bin/python benchmarks/data/run.py [--files 40] [--rows-per-file 250000]
        [--loop-files 1000] [--repeat 3] [--out benchmarks/results]
        [--only ingest,loop,stats,predict,train,scaling] [--datasets demo,wide] [--profile]

Every measurement is a fresh process (Beryl's and the peer's alike), run one at a time: wall
time is measured around the process, CPU time comes from ``wait4``, and peak memory is the
process's own VmHWM, written by the child as it exits (``tasks.py``). Beryl and its peer
alternate which goes first; with ``--repeat N`` each figure is the median of N runs. Generated
data is cached in ``benchmarks/.cache/data``; workspaces are rebuilt on every run.

``ingest`` runs on each data set of ``--datasets`` in turn: ``demo`` (Beryl's demo generator, the
data every other benchmark uses) and ``wide`` (``widegen.py``: wider numbers, a low-cardinality
identifier, 10% duplicate rows), against pandas and DuckDB's bare job alike.

``scaling`` measures ingestion (the first 1/8, 1/4, 1/2 and all of the source files) and batch
scoring (the same numbers of rows from the head of the scoring file) once per size, Beryl and
pandas; the points go to ``data.json`` under ``scaling`` and into ``<out>/scaling.png``, drawn
by ``benchmarks/plot.py``.

``--profile`` runs Beryl's commands under cProfile (with an RSS timeline of its main phases)
and writes the summaries to ``<out>/profiles/``; its timings carry the profiler's overhead.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path

if not __package__:  # run as a script (`python benchmarks/data/run.py`): find `benchmarks`
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from benchmarks.common import RESULTS, machine_info, say
from benchmarks.data import benches, ingest, passes, scaling
from benchmarks.data.measure import Context
from benchmarks.data.report import draw_plot, scaling_table, table, write_results
from benchmarks.data.workspaces import DATA, DATASETS, data_dir, ensure_data

BENCHMARKS = ("ingest", "loop", "pass", "stats", "predict", "train", "scaling")
RUNNERS: dict[str, Callable[[Context], None]] = {
    "ingest": ingest.bench_ingest,
    "loop": benches.bench_loop,
    "pass": passes.bench_pass,
    "stats": benches.bench_stats,
    "predict": benches.bench_predict,
    "train": benches.bench_train,
    "scaling": scaling.bench_scaling,
}


# -- entry point ----------------------------------------------------------------------------------
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--files", type=int, default=40)
    parser.add_argument("--rows-per-file", type=int, default=250_000)
    parser.add_argument("--loop-files", type=int, default=1000)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=3, help="runs per contender (median)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--only", default=",".join(BENCHMARKS))
    parser.add_argument(
        "--datasets",
        default=",".join(DATASETS),
        help="the data sets the ingest benchmark runs on, in turn (the others use demo)",
    )
    parser.add_argument("--profile", action="store_true", help="profile Beryl's commands")
    parser.add_argument(
        "--baseline",
        default=None,
        metavar="REV",
        help="a git revision the `pass` benchmark runs side by side with this one",
    )
    args = parser.parse_args(argv)
    chosen = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = sorted(set(chosen) - set(BENCHMARKS))
    if unknown:
        parser.error(f"unknown benchmark(s) {', '.join(unknown)}; choose from {BENCHMARKS}")
    args.only = [name for name in BENCHMARKS if name in chosen]
    datasets = [name.strip() for name in args.datasets.split(",") if name.strip()]
    unknown = sorted(set(datasets) - set(DATASETS))
    if unknown or not datasets:
        parser.error(f"unknown data set(s) {', '.join(unknown)}; choose from {DATASETS}")
    args.datasets = [name for name in DATASETS if name in datasets]
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    params = {
        "files": args.files,
        "rows_per_file": args.rows_per_file,
        "loop_files": args.loop_files,
    }
    ctx = Context(
        python=sys.executable,
        data=data_dir(params),
        work=DATA / "work",
        out=args.out.resolve(),
        params=params,
        requests=args.requests,
        repeat=1 if args.profile else max(1, args.repeat),
        profile=args.profile,
        baseline=args.baseline,
        datasets={name: data_dir(params, name) for name in args.datasets},
    )
    shutil.rmtree(ctx.work, ignore_errors=True)
    ctx.work.mkdir(parents=True)
    started = time.time()
    machine = machine_info(os.getloadavg())
    say(f"machine: {machine['cpu']}, {machine['cores']} cores, {machine['memory_gib']} GiB")
    ctx.details["data"] = ensure_data(ctx)
    if "ingest" in args.only:
        for name in args.datasets:
            if name != "demo":
                ctx.details[f"data_{name}"] = ensure_data(ctx, name)
    for name in args.only:
        RUNNERS[name](ctx)
    say()
    if ctx.profile:
        say("PROFILED RUN: Beryl's timings include cProfile's overhead")
    if ctx.rows:
        say(table(ctx.rows))
    if ctx.scaling:
        say("\nScaling (one run per size; no target, drawn in the plot):")
        say(scaling_table(ctx.scaling))
    path = write_results(ctx, machine, started)
    say(f"\nwrote {path}")
    drawn = True
    if ctx.scaling:
        drawn = draw_plot(ctx)
    else:
        say("no scaling plot: the scaling benchmark was not in --only")
    return 0 if drawn and all(r.passed for r in ctx.rows) else 1


if __name__ == "__main__":
    sys.exit(main())
