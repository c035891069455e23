"""A full ingest + train on the local engine and on Spark ``local[N]``, at growing sizes, and
batch scoring of every input row with the model trained.

    .venv/bin/python benchmarks/scale/run.py --sizes 10000000 100000000   # make bench-scale
    .venv/bin/python benchmarks/scale/run.py --engines local --sizes 10000000 100000000

Each size's input is made once (demo rows, ``beryl.data.demo.generate``, file by file with 5 %
of each file repeated in the next, at most ``ROWS_PER_FILE`` rows a file and ``--files`` files
at least) and both engines ingest the same files and train on the result. Each engine runs in a
process of its own, after a small warm-up pass there (imports; Spark's session, reported on its
own since ``beryl schedule`` pays it once, and its Python workers), and its peak memory is the
largest resident size of that process and everything it started (Spark's JVM), sampled every
0.2 s. Prints the cost per row of each engine at each size, how it grows, and where lines
through the two largest sizes say Spark starts to pay off (on the same cores, it may not).
Batch scoring (``score_file``, what ``beryl predict`` runs) reads ``score.csv``, every input
file's rows in one file, and writes the scores beside it; each engine scores with the model it
trained (scoring is the local engine's own in both). The growth targets: on each engine, the
cost per row of ingestion, of training and of batch scoring at the largest size at most
``GROWTH`` times that at the smallest (PASS/FAIL, and the exit code). Writes
``benchmarks/results/scale.json`` after every size.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import pandas as pd

from benchmarks.common import RESULTS, machine_info, say, write_json

ENGINES = ("local", "spark")


ROWS_PER_FILE = 2_000_000  # at most, so that generating a file stays small in memory
GROWTH = 1.2  # cost per row at the largest size over the smallest, at most (each stage)
STAGES = ("ingest_s", "train_s", "score_s")


def _data(root: Path, rows: int, files: int) -> Path:
    """The input files of one size, made once and read by both engines: demo rows generated
    file by file (each repeating 5 % of the file before it), never all at once in memory."""
    from beryl.data.demo import generate, write_csv

    folder = root / "input"
    folder.mkdir(parents=True)
    count = max(files, -(-rows // ROWS_PER_FILE))
    previous = None
    for index in range(count):
        part = generate(rows // count, seed=index)
        if previous is not None:
            part = pd.concat([part, previous.sample(frac=0.05, random_state=index)])
        write_csv(part, folder / f"part{index:03d}.csv")
        previous = part.iloc[: rows // count]
    old = time.time() - 60
    files = sorted(folder.iterdir())
    for path in files:
        os.utime(path, (old, old))
    with (root / "score.csv").open("wb") as out:  # every input row, one header
        for index, path in enumerate(files):
            with path.open("rb") as part_file:
                if index:
                    part_file.readline()
                shutil.copyfileobj(part_file, out, 1 << 22)
    return folder


def _workspace(root: Path, engine: str, data: Path, master: str) -> Path:
    from beryl.data.demo import generate, write_csv

    (root / "testdata").mkdir(parents=True)
    write_csv(generate(2000, seed=1, missing_rate=0.0), root / "testdata" / "testdata.csv")
    config = {
        "input_folder_path": str(data),
        "model": {"max_iter": 1000},
        "write_csv_snapshot": False,
        "engine": engine,
        "spark": {"master": master, "conf": {"spark.ui.enabled": False}},
    }
    (root / "config.json").write_text(json.dumps(config))
    return root / "config.json"


def _tree_rss() -> int:
    """The resident memory of this process and every process below it (Spark's JVM, its
    Python workers), in bytes, from /proc."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    total, todo = 0, [os.getpid()]
    while todo:
        pid = todo.pop()
        todo += children.get(pid, [])
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        except OSError:
            continue
    return total


class _PeakMemory:
    """The largest ``_tree_rss`` seen while the block runs (sampled every 0.2 s), above what
    the tree held when it started."""

    def __enter__(self) -> _PeakMemory:
        self.start = self.peak = _tree_rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.2):
            self.peak = max(self.peak, _tree_rss())

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _tree_rss())


def _measure(config_path: Path, data: Path) -> dict[str, Any]:
    from beryl import config
    from beryl.data.ingestion import ingest
    from beryl.model.predictfile import score_file
    from beryl.model.training import train
    from beryl.workspace import Workspace

    workspace = Workspace(config.load(config_path))
    scores = config_path.parent / "scores.csv"
    gc.collect()
    peaks = []
    with _PeakMemory() as memory:
        start = time.perf_counter()
        with _PeakMemory() as stage:
            result = ingest(workspace)
        peaks.append(stage.peak)
        ingested = time.perf_counter()
        with _PeakMemory() as stage:
            card = train(workspace)
        peaks.append(stage.peak)
        trained = time.perf_counter()
        with _PeakMemory() as stage:
            scored = score_file(workspace, data.parent / "score.csv", scores, version=card.id)
        peaks.append(stage.peak)
        done = time.perf_counter()
    scores.unlink()
    return {
        "ingest_s": ingested - start,
        "train_s": trained - ingested,
        "score_s": done - trained,
        "scored_rows": scored.rows,
        "peak_rss_gb": memory.peak / 1e9,
        "stage_peak_rss_gb": dict(zip(STAGES, (p / 1e9 for p in peaks), strict=True)),
        "rss_before_gb": memory.start / 1e9,
        "rows": result.dataset_rows,
        "coef": workspace.registry.model(card.id).coef.tolist(),
    }


def _crossover(points: list[dict[str, Any]]) -> str:
    """Where lines through each engine's two largest sizes cross: the fixed cost of a pass and
    the cost of each further row, and so the size above which Spark is cheaper."""
    if len(points) < 2:
        return "(one size only: no line to draw)"
    low, high = points[-2], points[-1]
    lines = {}
    for engine in ENGINES:
        t0, t1 = (p[engine]["ingest_s"] + p[engine]["train_s"] for p in (low, high))
        slope = (t1 - t0) / (high["rows"] - low["rows"])
        lines[engine] = (t1 - slope * high["rows"], slope)
        say(f"  {engine}: {lines[engine][0]:.2f} s + {slope * 1e6:.2f} µs per further row")
    (fixed_l, slope_l), (fixed_s, slope_s) = lines["local"], lines["spark"]
    if slope_s >= slope_l:
        return "never on these cores: each further row costs Spark more than the local engine"
    return f"from about {max((fixed_s - fixed_l) / (slope_l - slope_s), 0):,.0f} rows"


def _one(engine: str, data: Path, master: str, root: Path) -> dict[str, Any]:
    """One engine on one size, in this (fresh) process: a warm-up pass first (imports, and
    for Spark its session and Python workers), then the timed ingest and train."""
    startup = 0.0
    if engine == "spark":
        from beryl.config import SparkSettings
        from beryl.spark import session

        start = time.perf_counter()
        session.session(SparkSettings(master=master, conf={"spark.ui.enabled": False}))
        startup = time.perf_counter() - start
    warm = _data(root / "warm", 5000, 2)
    _measure(_workspace(root / "warm-ws", engine, warm, master), warm)
    result = _measure(_workspace(root / "ws", engine, data, master), data)
    result["startup_s"] = startup
    return result


def _in_process(engine: str, data: Path, master: str, root: Path) -> dict[str, Any]:
    """``_one`` in a child process, so that each engine's memory is its own (a JVM keeps the
    heap it grew) and measured alone."""
    argv = [sys.executable, __file__, "--one", engine, str(data), "--master", master]
    argv += ["--root", str(root)]
    done = subprocess.run(argv, capture_output=True, text=True)
    log = RESULTS / f"scale-{engine}-{data.parent.name.removeprefix('data-')}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text(done.stderr)  # Spark's own messages, for a run that failed
    if done.returncode != 0:
        tail = " | ".join(done.stderr.strip().splitlines()[-3:])
        return {"error": f"exit {done.returncode}: {tail[-400:]} (all of it in {log})"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def _compare(rows: int, point: dict[str, Any]) -> dict[str, Any]:
    """One size's point; with both engines measured, their rows and coefficients compared."""
    point = {"requested_rows": rows, **point}
    if any(e not in point or "error" in point[e] for e in ENGINES):
        return point
    local, spark = point["local"], point["spark"]
    point["rows"] = local["rows"]
    assert local["rows"] == spark["rows"], "the engines stored different rows"
    gap = max(abs(a - b) for a, b in zip(local["coef"][0], spark["coef"][0], strict=True))
    cost = {e: (point[e]["ingest_s"] + point[e]["train_s"]) / point["rows"] * 1e6 for e in ENGINES}
    say(
        f"{point['rows']:>12,} rows: local {cost['local']:.2f} µs/row, spark "
        f"{cost['spark']:.2f} µs/row ({cost['spark'] / cost['local']:.2f}x); "
        f"coefficients within {gap:.1e}"
    )
    return point


def _growth(points: list[dict[str, Any]], engines: list[str]) -> list[dict[str, Any]]:
    """Per engine and stage, the cost per row at the largest size over the smallest, against
    ``GROWTH`` (ingestion and training per stored row, scoring per scored row)."""
    out = []
    for engine in engines:
        done = [p for p in points if engine in p and "error" not in p[engine]]
        if len(done) < 2:
            continue
        first, last = done[0][engine], done[-1][engine]
        for stage in STAGES:
            rows = "scored_rows" if stage == "score_s" else "rows"
            per_row = [run[stage] / run[rows] * 1e6 for run in (first, last)]
            ratio = per_row[1] / per_row[0]
            out.append(
                {
                    "engine": engine,
                    "stage": stage.removesuffix("_s"),
                    "rows": [first[rows], last[rows]],
                    "us_per_row": per_row,
                    "ratio": ratio,
                    "pass": ratio <= GROWTH,
                }
            )
            say(
                f"  {'PASS' if ratio <= GROWTH else 'FAIL'}  {engine} {stage[:-2]}: "
                f"{per_row[1]:.2f} µs/row at {last[rows]:,} rows, {ratio:.2f}x the "
                f"{per_row[0]:.2f} µs/row at {first[rows]:,} (target <= {GROWTH}x)"
            )
        peak = max(p[engine]["peak_rss_gb"] for p in done)
        say(f"  {engine}: peak memory {peak:.2f} GB")
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[50_000, 200_000, 1_000_000])
    parser.add_argument("--files", type=int, default=8)
    parser.add_argument("--master", default="local[2]")
    parser.add_argument("--out", default="scale.json", help="file name in benchmarks/results/")
    parser.add_argument("--engines", nargs="+", choices=ENGINES, default=list(ENGINES))
    parser.add_argument("--one", nargs=2, metavar=("ENGINE", "DATA"), help=argparse.SUPPRESS)
    parser.add_argument("--root", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        engine, data = args.one
        result = _one(engine, Path(data), args.master, Path(args.root))
        print(json.dumps(result))
        return 0

    points: list[dict[str, Any]] = []
    run = {
        "master": args.master,
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": machine_info(os.getloadavg()),
    }
    scratch = Path(tempfile.mkdtemp(prefix="beryl-scale-"))
    try:
        for rows in args.sizes:
            point: dict[str, Any] = {}
            made = time.perf_counter()
            data = _data(scratch / f"data-{rows}", rows, args.files)
            size = sum(f.stat().st_size for f in data.iterdir())
            say(
                f"{rows:,} rows: {size / 1e9:.2f} GB of CSV in {len(list(data.iterdir()))} "
                f"files, made in {time.perf_counter() - made:.0f} s"
            )
            for engine in args.engines:
                root = scratch / f"{engine}-{rows}"
                point[engine] = _in_process(engine, data, args.master, root)
                shutil.rmtree(root, ignore_errors=True)
                got = point[engine]
                if "error" in got:
                    say(f"  {engine}: FAILED ({got['error']})")
                    continue
                say(
                    f"  {engine}: ingest {got['ingest_s']:.1f} s, train {got['train_s']:.1f} s, "
                    f"score {got['score_s']:.1f} s, peak memory {got['peak_rss_gb']:.2f} GB ("
                    + ", ".join(f"{k[:-2]} {v:.1f}" for k, v in got["stage_peak_rss_gb"].items())
                    + ")"
                    + (
                        f" (session start {got['startup_s']:.1f} s, untimed)"
                        if engine == "spark"
                        else ""
                    )
                )
            (data.parent / "score.csv").unlink(missing_ok=True)
            shutil.rmtree(data)
            points.append(_compare(rows, point))
            write_json(RESULTS / args.out, run | {"points": points})
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    complete = [p for p in points if "rows" in p]
    verdict = _crossover(complete) if complete else None
    if verdict is not None:
        say(f"Spark {args.master} pays off {verdict}.")
    growth = _growth(points, args.engines)
    out = write_json(
        RESULTS / args.out, run | {"points": points, "pays_off": verdict, "growth": growth}
    )
    say(f"wrote {out}")
    return 0 if growth and all(g["pass"] for g in growth) else 1


if __name__ == "__main__":
    sys.exit(main())
