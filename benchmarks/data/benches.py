"""The benchmarks with a target besides ingestion (``ingest.py``): the loop with no new data, the
diagnostics endpoints, batch scoring and training, each against its peer, on the demo data set."""

from __future__ import annotations

import contextlib
import shutil
import statistics
import time
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

from benchmarks.common import REPO, free_port, say, server
from benchmarks.data.measure import (
    Context,
    Proc,
    Row,
    add_row,
    alternate,
    beryl_argv,
    measure,
    median,
    ratio_row,
    run_task,
    summary,
    task_argv,
    warm,
)
from benchmarks.data.workspaces import csv_files, shared_workspace

LOOP_RUNS = 5
TRACE_PREDICT = ["beryl.model.predict:predict", "beryl.data.cleaning:clean_features"]
TRACE_TRAIN = ["beryl.data.dataset:Dataset.read", "beryl.model.engine:fit_pipeline"]


# -- the loop -------------------------------------------------------------------------------------
def bench_loop(ctx: Context) -> None:
    """`beryl run` with no new data over the loop files: whole-process wall time."""
    say("loop: `python -m beryl run --no-apicalls` with no new data")
    config = shared_workspace(ctx)
    files = csv_files(ctx.data / "loop")
    command = [ctx.python, "-m", "beryl", "--config", str(config), "run", "--no-apicalls"]
    warm(files)
    measure(ctx, "beryl run (no new data, warm-up)", command)
    runs = [measure(ctx, f"beryl run (no new data) #{i + 1}", command) for i in range(LOOP_RUNS)]
    floor = [measure(ctx, f"python -c pass #{i + 1}", [ctx.python, "-c", "pass"]) for i in range(3)]
    imports = [
        measure(
            ctx, f"python -c 'import beryl.cli' #{i + 1}", [ctx.python, "-c", "import beryl.cli"]
        )
        for i in range(3)
    ]
    if ctx.profile:
        traced = beryl_argv(ctx, config, "run", "--no-apicalls")
        measure(ctx, "beryl run (no new data, profiled)", traced, profile=[])
    verify = measure(ctx, "beryl run --json (verify)", [*command, "--json"])
    text = Path(verify.log).read_text(encoding="utf-8")
    no_new = '"outcome": "no-new-data"' in text
    say(f"  verify: outcome no-new-data = {no_new}")
    ctx.details["loop"] = {
        "files": len(files),
        "beryl": summary(runs),
        "python_floor": summary(floor),
        "import_beryl_cli": summary(imports),
        "verified_no_new_data": no_new,
    }
    wall, floor_wall = median(runs, "wall_s"), median(floor, "wall_s")
    benchmark = f"loop: run, no new data, {len(files)} files"
    ratio = wall / floor_wall
    row = Row(benchmark, "s", wall, floor_wall, "python -c pass", ratio, "< 0.5 s", wall < 0.5)
    row.passed &= no_new
    add_row(ctx, row)


# -- diagnostics ----------------------------------------------------------------------------------
@contextlib.contextmanager
def serving(ctx: Context, config: Path) -> Iterator[str]:
    """`beryl serve` on a free loopback port, until the block ends."""
    port = free_port()
    argv = [ctx.python, "-m", "beryl", "--config", str(config), "serve", "--port", str(port)]
    url = f"http://127.0.0.1:{port}"
    log = ctx.work / "logs" / "serve.log"
    with server("beryl serve", argv, f"{url}/health", log, cwd=REPO, timeout=60):
        yield url


def latencies_ms(client: Any, path: str, requests: int) -> list[float]:
    times = []
    for _ in range(requests):
        started = time.perf_counter()
        client.get(path).raise_for_status()
        times.append((time.perf_counter() - started) * 1000)
    return times


def percentiles(times: list[float]) -> dict[str, float]:
    q = statistics.quantiles(times, n=100)
    return {"p50": statistics.median(times), "p90": q[89], "p99": q[98], "max": max(times)}


def bench_stats(ctx: Context) -> None:
    """GET /diagnostics and /summarystats on the dataset: p50 over sequential GETs."""
    import httpx

    say("stats: GET /diagnostics and /summarystats")
    config = shared_workspace(ctx)
    paths = ("/diagnostics", "/summarystats", "/health")
    measured: dict[str, dict[str, float]] = {}
    with serving(ctx, config) as url, httpx.Client(base_url=url, timeout=600) as client:
        started = time.perf_counter()
        for path in paths:
            client.get(path).raise_for_status()
        first = time.perf_counter() - started
        time.sleep(2)  # the background outdated-packages refresh finishes
        for path in paths:
            latencies_ms(client, path, 20)
        for path in paths:
            measured[path] = percentiles(latencies_ms(client, path, ctx.requests))
            shown = ", ".join(f"{k} {v:.2f}" for k, v in measured[path].items())
            say(f"  GET {path:<14} ms: {shown}")
    csv = config.parent / "ingesteddata" / "finaldata.csv"
    warm([csv])
    argv = task_argv(ctx, "stats-pandas", {"csv": str(csv), "repeats": 3})
    peer = measure(ctx, "pandas: re-read and recompute per request", argv)
    peer_ms = statistics.median(peer.report["seconds"]) * 1000
    ctx.details["stats"] = {
        "requests": ctx.requests,
        "first_requests_s": first,
        "latency_ms": measured,
        "peer_ms": [s * 1000 for s in peer.report["seconds"]],
        "peer": "re-read finaldata.csv with pandas and recompute the statistics per request",
    }
    for path in ("/diagnostics", "/summarystats"):
        p50 = measured[path]["p50"]
        benchmark = f"GET {path} p50 ({ctx.requests} sequential)"
        ratio = p50 / peer_ms
        add_row(ctx, Row(benchmark, "ms", p50, peer_ms, "pandas", ratio, "< 20 ms", p50 < 20))


# -- batch scoring --------------------------------------------------------------------------------
def predict_beryl(ctx: Context, label: str, config: Path, source: Path, output: Path) -> Proc:
    """`beryl predict source -o output` with the workspace's production model."""
    warm([source])
    argv = beryl_argv(ctx, config, "predict", str(source), "-o", str(output))
    return measure(ctx, label, argv, profile=TRACE_PREDICT)


def predict_pandas(ctx: Context, label: str, config: Path, source: Path, output: Path) -> Proc:
    """The pandas peer scoring ``source`` into ``output`` with the same pickled model."""
    warm([source])
    params = {
        "workspace": str(config.parent),
        "input": str(source),
        "output": str(output),
        "positive_label": 1,
    }
    return measure(ctx, label, task_argv(ctx, "predict-pandas", params))


def bench_predict(ctx: Context) -> None:
    """`beryl predict` on the scoring file vs read_csv + predict_proba + to_csv."""
    say("predict: batch scoring")
    config = shared_workspace(ctx)
    source = ctx.data / "predict" / "customers.csv"
    out = ctx.work / "predict"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)

    def beryl(index: int) -> Proc:
        return predict_beryl(ctx, f"beryl predict #{index + 1}", config, source, out / "beryl.csv")

    def peer(index: int) -> Proc:
        label = f"pandas predict #{index + 1}"
        return predict_pandas(ctx, label, config, source, out / "pandas.csv")

    ours, theirs = alternate(ctx, beryl, peer)
    params = {
        "beryl": str(out / "beryl.csv"),
        "peer": str(out / "pandas.csv"),
        "sample": 100_000,
        "tolerance": 1e-9,
    }
    check = run_task(ctx, "verify predictions", "compare-predictions", params)
    say(f"  verify: {check}")
    ctx.details["predict"] = {"beryl": summary(ours), "peer": summary(theirs), "verify": check}
    ok = bool(check["equal"])
    rows = f"{check['rows_beryl']:,} rows"
    walls = (median(ours, "wall_s"), median(theirs, "wall_s"))
    add_row(ctx, ratio_row(f"predict {rows}: wall", "s", walls, "pandas", 1 / 3, "<= 0.333", ok))
    peak, peer_peak = median(ours, "peak_mb"), median(theirs, "peak_mb")
    row = Row(
        f"predict {rows}: peak RSS",
        "MB",
        peak,
        peer_peak,
        "pandas",
        peak / peer_peak,
        "< 1024 MB",
        peak < 1024 and ok,
    )
    add_row(ctx, row)


# -- training -------------------------------------------------------------------------------------
def bench_train(ctx: Context) -> None:
    """`beryl train` (whole process, its cross-validated search included) vs scikit-learn's
    own fit of the untuned pipeline."""
    say("train: Beryl's train (with its search) vs scikit-learn's fit of the untuned pipeline")
    config = shared_workspace(ctx)

    def beryl(index: int) -> Proc:
        argv = beryl_argv(ctx, config, "train")
        return measure(ctx, f"beryl train #{index + 1}", argv, profile=TRACE_TRAIN)

    def peer(index: int) -> Proc:
        argv = task_argv(ctx, "train-sklearn", {"config": str(config)})
        return measure(ctx, f"sklearn pipeline.fit #{index + 1}", argv)

    ours, theirs = alternate(ctx, beryl, peer)
    split = measure(
        ctx, "beryl train() phases", task_argv(ctx, "train-split", {"config": str(config)})
    )
    phases = split.report["phases"]
    fits = [float(p.report["fit_s"]) for p in theirs]
    off = max(float(p.report["max_coef_diff"]) for p in theirs)
    exact = off <= 1e-6
    shown = ", ".join(f"{k} {v:.2f}" for k, v in phases.items())
    say(f"  phases (s): {shown}; sklearn fit {fits}; coefficients within {off:.1e} of the optimum")
    ctx.details["train"] = {
        "beryl": summary(ours),
        "peer": summary(theirs),
        "peer_fit_s": fits,
        "peer_load_s": [float(p.report["load_s"]) for p in theirs],
        "split": asdict(split),
        "phases_s": phases,
        "max_coef_diff_from_optimum": off,
        "n_iter": theirs[0].report["n_iter"],
        "chosen": theirs[0].report["chosen"],
        "solver": theirs[0].report["solver"],
        "threshold": theirs[0].report["threshold"],
    }
    plain_fit = float(statistics.median(fits))
    values = (median(ours, "wall_s"), plain_fit)
    rows = f"{theirs[0].report['rows']:,} rows"
    add_row(ctx, ratio_row(f"train {rows}: wall", "s", values, "sklearn fit", 2.0, "<= 2.0", exact))
    final = (float(phases["fit_s"]), plain_fit)
    label = f"train {rows}: final fit (coefficients within 1e-6 of the optimum)"
    add_row(ctx, ratio_row(label, "s", final, "sklearn fit", 1.0, "< 1.0", exact, strict=True))
