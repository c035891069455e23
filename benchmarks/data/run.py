"""Data-path benchmarks: Beryl against a peer doing the same work on the same files, same run.

    .venv/bin/python benchmarks/data/run.py [--files 40] [--rows-per-file 250000]
        [--loop-files 1000] [--repeat 3] [--out benchmarks/results]
        [--only ingest,loop,stats,predict,train,scaling] [--profile]

Every measurement is a fresh process (Beryl's and the peer's alike), run one at a time: wall
time is measured around the process, CPU time comes from ``wait4``, and peak memory is the
process's own VmHWM, written by the child as it exits (``tasks.py``). Beryl and its peer
alternate which goes first; with ``--repeat N`` each figure is the median of N runs. Generated
data is cached in ``benchmarks/.cache/data``; workspaces are rebuilt on every run.

``scaling`` measures ingestion (the first 1/8, 1/4, 1/2 and all of the source files) and batch
scoring (the same numbers of rows from the head of the scoring file) once per size, Beryl and
pandas; the points go to ``data.json`` under ``scaling`` and into ``<out>/scaling.png``, drawn
by ``benchmarks/plot.py``.

``--profile`` runs Beryl's commands under cProfile (with an RSS timeline of its main phases)
and writes the summaries to ``<out>/profiles/``; its timings carry the profiler's overhead.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import io
import json
import os
import platform
import pstats
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
TASKS = HERE / "tasks.py"
PLOT = HERE.parent / "plot.py"
CACHE = REPO / "benchmarks" / ".cache" / "data"
BENCHMARKS = ("ingest", "loop", "stats", "predict", "train", "scaling")
SCALING_SHARES = (1 / 8, 1 / 4, 1 / 2, 1)  # of the source files, one measurement per size
LIBRARIES = ("beryl", "pandas", "numpy", "pyarrow", "scikit-learn", "scipy", "fastapi", "httpx")
DEAD_INDEX = "http://127.0.0.1:9/pypi"  # the outdated-packages check fails fast, offline
GENERATOR_VERSION = 1
LOOP_RUNS = 5
TRACE_INGEST = [
    "beryl.ingestion:scan_input",
    "pandas:concat",
    "beryl.ingestion:row_hashes",
    "numpy:unique",
    "beryl.dataset:Dataset.row_hashes",
    "beryl.dataset:Dataset.write_batch",
    "beryl.dataset:Dataset._write_snapshot",
]
TRACE_PREDICT = ["beryl.batch:_predict", "beryl.ingestion:clean_features"]
TRACE_TRAIN = ["beryl.dataset:Dataset.read", "beryl.training:fit_pipeline"]


@dataclass
class Proc:
    """One measured process."""

    label: str
    wall_s: float
    cpu_s: float
    peak_mb: float | None
    returncode: int
    report: dict[str, Any]
    log: str
    load_before: float


@dataclass
class Row:
    """One line of the results table."""

    benchmark: str
    unit: str
    beryl: float
    peer: float | None
    peer_name: str
    ratio: float | None
    target: str
    passed: bool


@dataclass
class Context:
    """Where things are, how to measure, and what has been measured so far."""

    python: str
    data: Path
    work: Path
    out: Path
    params: dict[str, int]
    requests: int
    repeat: int
    profile: bool
    rows: list[Row] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    scaling: dict[str, Any] = field(default_factory=dict)
    shared: Path | None = None
    counter: int = 0


# -- processes --------------------------------------------------------------------------------
def task_argv(ctx: Context, task: str, params: dict[str, Any] | None = None) -> list[str]:
    return [ctx.python, str(TASKS), task, json.dumps(params or {})]


def beryl_argv(ctx: Context, config: Path, *args: str) -> list[str]:
    """The Beryl CLI through the reporting wrapper (the code path of ``python -m beryl``)."""
    return [ctx.python, str(TASKS), "cli", "--config", str(config), *args]


def slug(text: str) -> str:
    return "-".join("".join(c if c.isalnum() else " " for c in text).split())


def measure(ctx: Context, label: str, argv: list[str], *, profile: list[str] | None = None) -> Proc:
    """Run ``argv`` to completion in a fresh process: wall and CPU time, peak RSS, its report.

    ``profile`` (functions to mark in the RSS timeline) makes this a Beryl command that
    ``--profile`` runs under cProfile.
    """
    ctx.counter += 1
    name = f"{ctx.counter:02d}-{slug(label)}"
    logs = ctx.work / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    log = logs / f"{name}.log"
    report_path = Path(tempfile.mkdtemp(dir=logs)) / "report.json"
    env = os.environ | {"BENCH_REPORT": str(report_path), "PYTHONUNBUFFERED": "1"}
    prof = None
    if ctx.profile and profile is not None:
        prof = ctx.out / "profiles" / f"{name}.prof"
        prof.parent.mkdir(parents=True, exist_ok=True)
        argv = [argv[0], "-m", "cProfile", "-o", str(prof), *argv[1:]]
        env["BENCH_TRACE_RSS"] = ",".join(profile)
    load = os.getloadavg()[0]
    with log.open("wb") as out:
        started = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=REPO)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    report: dict[str, Any] = {}
    if report_path.exists():
        report = json.loads(report_path.read_text(encoding="utf-8"))
    shutil.rmtree(report_path.parent)
    peak = report.get("vmhwm_kb")
    result = Proc(
        label=label,
        wall_s=wall,
        cpu_s=usage.ru_utime + usage.ru_stime,
        peak_mb=None if peak is None else peak / 1024,
        returncode=proc.returncode,
        report=report,
        log=str(log),
        load_before=load,
    )
    memory = f"{result.peak_mb:7.0f} MB" if result.peak_mb is not None else " " * 10
    print(
        f"  {label:<46} {wall:8.2f} s wall {result.cpu_s:7.2f} s cpu {memory}"
        f"  load {load:.1f}  rc {proc.returncode}",
        flush=True,
    )
    if prof is not None:
        summarise_profile(prof, report.get("rss_timeline", []))
    if proc.returncode != 0:
        tail = log.read_text(encoding="utf-8", errors="replace")[-3000:]
        raise RuntimeError(f"{label} failed with exit code {proc.returncode}:\n{tail}")
    return result


def run_task(ctx: Context, label: str, task: str, params: dict[str, Any]) -> dict[str, Any]:
    """An unmeasured helper step in its own process; returns its report (memory removed)."""
    report = measure(ctx, label, task_argv(ctx, task, params)).report
    return {k: v for k, v in report.items() if not k.endswith("_kb")}


def summarise_profile(prof: Path, timeline: list[str], top: int = 14) -> None:
    """Write the profile's summary beside it; print where Beryl's own functions spend time."""
    buffer = io.StringIO()
    stats = pstats.Stats(str(prof), stream=buffer)
    stats.sort_stats("cumulative").print_stats(r"/src/beryl/", 40)
    stats.sort_stats("tottime").print_stats(30)
    text = "\n".join(["RSS timeline:", *timeline, "", buffer.getvalue()])
    prof.with_suffix(".txt").write_text(text, encoding="utf-8")
    own = [
        (entry[3], f"{func}  ({Path(path).name}:{line})")
        for (path, line, func), entry in stats.stats.items()  # type: ignore[attr-defined]
        if "/src/beryl/" in path
    ]
    print(f"    profile -> {prof.with_suffix('.txt')}", flush=True)
    for seconds, where in sorted(own, reverse=True)[:top]:
        print(f"    {seconds:8.2f} s  {where}", flush=True)
    for line in timeline:
        print(f"    {line}", flush=True)


def warm(paths: list[Path]) -> None:
    """Read files once so that every contender finds them in the page cache."""
    for path in paths:
        with path.open("rb") as handle:
            while handle.read(1 << 22):
                pass


def in_turn(index: int, beryl: Callable[[], Proc], peer: Callable[[], Proc]) -> tuple[Proc, Proc]:
    """One run of each, Beryl's result first; the peer runs first when ``index`` is even."""
    if index % 2 == 0:
        theirs = peer()
        return beryl(), theirs
    ours = beryl()
    return ours, peer()


def alternate(
    ctx: Context, beryl: Callable[[int], Proc], peer: Callable[[int], Proc]
) -> tuple[list[Proc], list[Proc]]:
    """Run both ``ctx.repeat`` times, alternating which goes first."""
    ours: list[Proc] = []
    theirs: list[Proc] = []
    for index in range(ctx.repeat):
        mine, other = in_turn(
            index, functools.partial(beryl, index), functools.partial(peer, index)
        )
        ours.append(mine)
        theirs.append(other)
    return ours, theirs


def median(procs: list[Proc], attribute: str) -> float:
    return float(statistics.median(float(getattr(p, attribute)) for p in procs))


def summary(procs: list[Proc]) -> dict[str, Any]:
    return {
        "wall_s": [p.wall_s for p in procs],
        "cpu_s": [p.cpu_s for p in procs],
        "peak_mb": [p.peak_mb for p in procs],
        "load_before": [p.load_before for p in procs],
        "median_wall_s": median(procs, "wall_s"),
        "median_cpu_s": median(procs, "cpu_s"),
        "median_peak_mb": median(procs, "peak_mb") if procs[0].peak_mb is not None else None,
        "logs": [p.log for p in procs],
    }


def add_row(ctx: Context, row: Row) -> None:
    ctx.rows.append(row)
    verdict = "PASS" if row.passed else "FAIL"
    print(f"  -> {row.benchmark}: {row.beryl:.4g} {row.unit} ({row.target}) {verdict}", flush=True)


def ratio_row(
    benchmark: str,
    unit: str,
    values: tuple[float, float],
    peer_name: str,
    limit: float,
    target: str,
    verified: bool = True,
) -> Row:
    """A row whose target is ``beryl / peer <= limit`` (and a verified equal output)."""
    beryl, peer = values
    ratio = beryl / peer if peer else float("inf")
    return Row(benchmark, unit, beryl, peer, peer_name, ratio, target, ratio <= limit and verified)


# -- data and workspaces ----------------------------------------------------------------------
def data_dir(params: dict[str, int]) -> Path:
    files, rows, loop = params["files"], params["rows_per_file"], params["loop_files"]
    return CACHE / f"v{GENERATOR_VERSION}-{files}x{rows}-loop{loop}"


def ensure_data(ctx: Context) -> dict[str, Any]:
    """Generate the data set once; ``meta.json`` is written last and marks it complete."""
    meta = ctx.data / "meta.json"
    if meta.exists():
        cached: dict[str, Any] = json.loads(meta.read_text(encoding="utf-8"))
        if cached.get("params") == ctx.params:
            print(f"data: cached in {ctx.data}", flush=True)
            return cached
    print(f"data: generating into {ctx.data}", flush=True)
    shutil.rmtree(ctx.data, ignore_errors=True)
    ctx.data.mkdir(parents=True)
    report = run_task(ctx, "generate data", "generate", {"root": str(ctx.data), **ctx.params})
    info = {"params": ctx.params, "generated": report}
    meta.write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    return info


def csv_files(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.csv"))


def workspace_config(ctx: Context, name: str) -> Path:
    """The config path of the workspace ``work/name``."""
    return ctx.work / name / "config.json"


def make_workspace(
    ctx: Context, name: str, inputs: Path, *, test: bool = False, limit: int | None = None
) -> Path:
    """A fresh workspace under ``work/name`` with Beryl's default config; its config path.

    ``limit`` puts only the first ``limit`` CSV files of ``inputs`` (by name) in its input folder.
    """
    config = workspace_config(ctx, name)
    params: dict[str, Any] = {
        "root": str(config.parent),
        "inputs": str(inputs),
        "overrides": {"package_index_url": DEAD_INDEX},
        "limit": limit,
    }
    if test:
        params["test"] = str(ctx.data / "test" / "testdata.csv")
    run_task(ctx, f"workspace {name}", "workspace", params)
    return config


def shared_workspace(ctx: Context) -> Path:
    """The loop's workspace: the loop files ingested, trained and promoted by one `beryl run`."""
    if ctx.shared is not None:
        return ctx.shared
    config = make_workspace(ctx, "shared", ctx.data / "loop", test=True)
    warm(csv_files(ctx.data / "loop"))
    first = measure(ctx, "beryl run (first pass)", beryl_argv(ctx, config, "run", "--no-apicalls"))
    ctx.details["first_pass"] = asdict(first)
    ctx.shared = config
    return config


def count_lines(path: Path) -> int:
    lines = 0
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 22):
            lines += chunk.count(b"\n")
    return lines


def manifest_rows(config: Path) -> int:
    manifest = json.loads((config.parent / "ingesteddata" / "dataset.json").read_text())
    return sum(int(batch["rows"]) for batch in manifest["batches"])


def head_csv(source: Path, target: Path, rows: int) -> None:
    """Write the header and the first ``rows`` lines of ``source`` to ``target``."""
    wanted = rows + 1
    with source.open("rb") as src, target.open("wb") as dst:
        while wanted and (chunk := src.read(1 << 22)):
            count = chunk.count(b"\n")
            if count >= wanted:
                end = -1
                for _ in range(wanted):
                    end = chunk.index(b"\n", end + 1)
                chunk, count = chunk[: end + 1], wanted
            dst.write(chunk)
            wanted -= count


# -- ingestion --------------------------------------------------------------------------------
def ingest_pandas(ctx: Context, label: str, output: Path, limit: int | None = None) -> Proc:
    """The pandas peer ingesting the source files (the first ``limit``) into a fresh ``output``."""
    source = ctx.data / "source"
    shutil.rmtree(output, ignore_errors=True)
    warm(csv_files(source)[:limit])
    params = {"input": str(source), "output": str(output), "limit": limit}
    return measure(ctx, label, task_argv(ctx, "ingest-pandas", params))


def ingest_beryl(ctx: Context, label: str, workspace: str, limit: int | None = None) -> Proc:
    """`beryl ingest` of the source files (the first ``limit``) in a fresh ``work/workspace``."""
    source = ctx.data / "source"
    config = make_workspace(ctx, workspace, source, limit=limit)
    warm(csv_files(source)[:limit])
    return measure(ctx, label, beryl_argv(ctx, config, "ingest"), profile=TRACE_INGEST)


def bench_ingest(ctx: Context) -> None:
    """Full ingestion of the source files vs pandas; then one new file on top of them."""
    print("ingest: the source files in the original schema, Beryl vs the pandas original")
    sources = csv_files(ctx.data / "source")
    new = ctx.data / "new" / "activity-new.csv"
    peer_out = ctx.work / "ingest-pandas"
    config = workspace_config(ctx, "ingest")
    increments: list[Proc] = []
    in_process: list[float] = []
    checks: list[dict[str, Any]] = []
    verified: dict[str, Any] = {}

    def peer(index: int) -> Proc:
        return ingest_pandas(ctx, f"pandas ingest #{index + 1}", peer_out)

    def beryl(index: int) -> Proc:
        full = ingest_beryl(ctx, f"beryl ingest (full) #{index + 1}", "ingest")
        argv = beryl_argv(ctx, config, "ingest")
        if not verified:  # the peer went first in the first round: its output is there
            verified.update(compare_ingest(ctx, config.parent / "ingesteddata", peer_out))
        rows_before = manifest_rows(config)
        dataset_dir = config.parent / "ingesteddata"
        before = config.parent / "ingesteddata-before"
        shutil.rmtree(before, ignore_errors=True)
        shutil.copytree(dataset_dir, before)
        shutil.copyfile(new, config.parent / "sourcedata" / new.name)
        warm([new])
        label = f"beryl ingest (+1 new file) #{index + 1}"
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
        label = f"beryl ingest() in process (+1 new file) #{index + 1}"
        report = run_task(ctx, label, "ingest-in-process", {"config": str(config)})
        in_process.append(float(report["ingest_s"]))
        return full

    ours, theirs = alternate(ctx, beryl, peer)
    check = verified
    incremental_ok = all(c["snapshot_matches_dataset"] for c in checks)
    print(f"  verify: {check}; incremental {checks}", flush=True)
    ctx.details["ingest"] = {
        "peer": summary(theirs),
        "beryl": summary(ours),
        "incremental": summary(increments),
        "incremental_in_process_s": in_process,
        "verify": check,
        "verify_incremental": checks,
    }
    ok = bool(check["same_rows"] and check["same_ingestedfiles"])
    rows = f"{len(sources)} files x {ctx.params['rows_per_file']:,} rows"
    walls = (median(ours, "wall_s"), median(theirs, "wall_s"))
    peaks = (median(ours, "peak_mb"), median(theirs, "peak_mb"))
    add_row(ctx, ratio_row(f"ingest {rows}: wall", "s", walls, "pandas", 0.25, "<= 0.25", ok))
    add_row(ctx, ratio_row(f"ingest {rows}: peak RSS", "MB", peaks, "pandas", 0.6, "<= 0.60", ok))
    extra = (median(increments, "wall_s"), walls[0])
    label = f"ingest +1 file ({ctx.params['rows_per_file']:,} rows) on top: wall"
    add_row(ctx, ratio_row(label, "s", extra, "Beryl full", 0.1, "<= 0.10", incremental_ok))
    inside = statistics.median(in_process)
    print(
        f"  note: the same new file ingested inside a running process (imports and start-up "
        f"not timed, as in `beryl schedule`): {inside:.3f} s, {inside / walls[0]:.3f} of the "
        "full pass",
        flush=True,
    )


def compare_ingest(ctx: Context, beryl_out: Path, peer_out: Path) -> dict[str, Any]:
    """Beryl's finaldata.csv and ingestedfiles.txt hold what pandas' do (rows as a multiset)."""
    params = {
        "beryl": str(beryl_out / "finaldata.csv"),
        "peer": str(peer_out / "finaldata.csv"),
        "ls_beryl": str(beryl_out / "ingestedfiles.txt"),
        "ls_peer": str(peer_out / "ingestedfiles.txt"),
    }
    return run_task(ctx, "verify ingest outputs", "compare-ingest", params)


# -- the loop ---------------------------------------------------------------------------------
def bench_loop(ctx: Context) -> None:
    """`beryl run` with no new data over the loop files: whole-process wall time."""
    print("loop: `python -m beryl run --no-apicalls` with no new data", flush=True)
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
    print(f"  verify: outcome no-new-data = {no_new}", flush=True)
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


# -- diagnostics ------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def serving(ctx: Context, config: Path) -> Iterator[str]:
    """`beryl serve` on a free loopback port, until the block ends."""
    import httpx

    port = _free_port()
    argv = [ctx.python, "-m", "beryl", "--config", str(config), "serve", "--port", str(port)]
    with (ctx.work / "logs" / "serve.log").open("wb") as log:
        server = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
        url = f"http://127.0.0.1:{port}"
        try:
            for _ in range(600):
                with contextlib.suppress(httpx.HTTPError):
                    if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                        break
                time.sleep(0.1)
            yield url
        finally:
            server.terminate()
            server.wait(timeout=30)


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

    print("stats: GET /diagnostics and /summarystats", flush=True)
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
            print(f"  GET {path:<14} ms: {shown}", flush=True)
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


# -- batch scoring ----------------------------------------------------------------------------
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
    print("predict: batch scoring", flush=True)
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
    print(f"  verify: {check}", flush=True)
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


# -- training ---------------------------------------------------------------------------------
def bench_train(ctx: Context) -> None:
    """`beryl train` (whole process) vs scikit-learn's own fit of the same pipeline."""
    print("train: Beryl's train vs scikit-learn's fit of the same pipeline", flush=True)
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
    same = all(float(p.report["max_coef_diff"]) <= 1e-9 for p in theirs)
    shown = ", ".join(f"{k} {v:.2f}" for k, v in phases.items())
    print(f"  phases (s): {shown}; sklearn fit {fits}; same coefficients {same}", flush=True)
    ctx.details["train"] = {
        "beryl": summary(ours),
        "peer": summary(theirs),
        "peer_fit_s": fits,
        "peer_load_s": [float(p.report["load_s"]) for p in theirs],
        "split": asdict(split),
        "phases_s": phases,
        "same_coefficients": same,
        "n_iter": theirs[0].report["n_iter"],
    }
    values = (median(ours, "wall_s"), float(statistics.median(fits)))
    benchmark = f"train {theirs[0].report['rows']:,} rows: wall"
    add_row(ctx, ratio_row(benchmark, "s", values, "sklearn fit", 1.5, "<= 1.5", same))


# -- scaling ----------------------------------------------------------------------------------
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
    print(
        f"  -> {kind} {rows:,} rows: wall {wall:.2f}x pandas, peak RSS {peak:.2f}x pandas, "
        f"rows out {rows_out[0]:,} / {rows_out[1]:,} ({'same' if same else 'DIFFERENT'})",
        flush=True,
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
    print("scaling: ingestion and batch scoring at growing sizes, Beryl vs pandas", flush=True)
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


RUNNERS: dict[str, Callable[[Context], None]] = {
    "ingest": bench_ingest,
    "loop": bench_loop,
    "stats": bench_stats,
    "predict": bench_predict,
    "train": bench_train,
    "scaling": bench_scaling,
}


# -- report -----------------------------------------------------------------------------------
def _proc_field(path: str, key: str) -> str:
    with contextlib.suppress(OSError), open(path, encoding="utf-8") as handle:
        for line in handle:
            if line.startswith(key):
                return line.split(":", 1)[1].strip()
    return "unknown"


def machine_info() -> dict[str, Any]:
    versions = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    git = ["git", "-C", str(REPO), "log", "-1", "--format=%H %s"]
    commit = subprocess.run(git, capture_output=True, text=True, check=False).stdout.strip()
    memory_kb = _proc_field("/proc/meminfo", "MemTotal").split()[0]
    return {
        "cpu": _proc_field("/proc/cpuinfo", "model name"),
        "cores": os.cpu_count(),
        "memory_gib": round(int(memory_kb) / 1024**2, 1) if memory_kb.isdigit() else None,
        "platform": platform.platform(),
        "versions": versions,
        "beryl_commit": commit,
        "loadavg_at_start": os.getloadavg(),
    }


def format_value(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    if unit == "s":
        return f"{value:.2f} s" if value >= 1 else f"{value * 1000:.0f} ms"
    if unit == "ms":
        return f"{value:.1f} ms" if value < 1000 else f"{value / 1000:.2f} s"
    return f"{value:,.0f} {unit}"


def render(header: tuple[str, ...], lines: Sequence[tuple[str, ...]]) -> str:
    """Columns padded to their widest cell, under a header and a rule."""
    widths = [max(len(x) for x in column) for column in zip(header, *lines, strict=True)]

    def row(cells: tuple[str, ...]) -> str:
        return "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()

    rule = tuple("-" * w for w in widths)
    return "\n".join(row(cells) for cells in [header, rule, *lines])


def table(rows: list[Row]) -> str:
    header = ("benchmark", "Beryl", "peer", "ratio", "target", "result")
    lines = [
        (
            r.benchmark,
            format_value(r.beryl, r.unit),
            f"{format_value(r.peer, r.unit)} ({r.peer_name})",
            "-" if r.ratio is None else f"{r.ratio:.3f}",
            r.target,
            "PASS" if r.passed else "FAIL",
        )
        for r in rows
    ]
    return render(header, lines)


def scaling_table(scaling: dict[str, Any]) -> str:
    """The scaling points: Beryl's and pandas' wall time and peak RSS, and their ratios."""
    header = ("scaling", "rows", "Beryl", "pandas", "ratio", "Beryl peak", "pandas peak", "ratio")
    lines = []
    for kind, series in scaling.items():
        for p in series["points"]:
            ours, theirs = p["beryl"], p["pandas"]
            peaks = (ours["peak_mb"], theirs["peak_mb"])
            lines.append(
                (
                    kind if p["same_rows_out"] else f"{kind} (rows out differ)",
                    f"{p['rows']:,}",
                    format_value(ours["wall_s"], "s"),
                    format_value(theirs["wall_s"], "s"),
                    f"{ours['wall_s'] / theirs['wall_s']:.3f}",
                    format_value(peaks[0], "MB"),
                    format_value(peaks[1], "MB"),
                    f"{peaks[0] / peaks[1]:.3f}" if peaks[0] and peaks[1] else "-",
                )
            )
    return render(header, lines)


def draw_plot(ctx: Context) -> bool:
    """Draw ``<out>/scaling.png`` from the results just written, with ``benchmarks/plot.py``."""
    argv = [ctx.python, str(PLOT), "--results", str(ctx.out)]
    return subprocess.run(argv, cwd=REPO, check=False).returncode == 0


def write_results(ctx: Context, machine: dict[str, Any], started: float) -> Path:
    ctx.out.mkdir(parents=True, exist_ok=True)
    path = ctx.out / "data.json"
    data = {
        "machine": machine | {"loadavg_at_end": os.getloadavg()},
        "parameters": ctx.params
        | {"requests": ctx.requests, "repeat": ctx.repeat, "profiled": ctx.profile},
        "duration_s": time.time() - started,
        "results": [asdict(r) for r in ctx.rows],
        "details": ctx.details,
    }
    if ctx.scaling:
        data["scaling"] = ctx.scaling
    path.write_text(json.dumps(data, indent=2, default=str) + "\n", encoding="utf-8")
    return path


# -- entry point ------------------------------------------------------------------------------
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--files", type=int, default=40)
    parser.add_argument("--rows-per-file", type=int, default=250_000)
    parser.add_argument("--loop-files", type=int, default=1000)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=3, help="runs per contender (median)")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    parser.add_argument("--only", default=",".join(BENCHMARKS))
    parser.add_argument("--profile", action="store_true", help="profile Beryl's commands")
    args = parser.parse_args(argv)
    chosen = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = sorted(set(chosen) - set(BENCHMARKS))
    if unknown:
        parser.error(f"unknown benchmark(s) {', '.join(unknown)}; choose from {BENCHMARKS}")
    args.only = [name for name in BENCHMARKS if name in chosen]
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
        work=CACHE / "work",
        out=args.out.resolve(),
        params=params,
        requests=args.requests,
        repeat=1 if args.profile else max(1, args.repeat),
        profile=args.profile,
    )
    shutil.rmtree(ctx.work, ignore_errors=True)
    ctx.work.mkdir(parents=True)
    started = time.time()
    machine = machine_info()
    print(f"machine: {machine['cpu']}, {machine['cores']} cores, {machine['memory_gib']} GiB")
    ctx.details["data"] = ensure_data(ctx)
    for name in args.only:
        RUNNERS[name](ctx)
    print()
    if ctx.profile:
        print("PROFILED RUN: Beryl's timings include cProfile's overhead")
    if ctx.rows:
        print(table(ctx.rows))
    if ctx.scaling:
        print("\nScaling (one run per size; no target, drawn in the plot):")
        print(scaling_table(ctx.scaling))
    path = write_results(ctx, machine, started)
    print(f"\nwrote {path}")
    drawn = True
    if ctx.scaling:
        drawn = draw_plot(ctx)
    else:
        print("no scaling plot: the scaling benchmark was not in --only")
    return 0 if drawn and all(r.passed for r in ctx.rows) else 1


if __name__ == "__main__":
    sys.exit(main())
