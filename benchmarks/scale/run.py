"""A full ingest + train on the local engine and on Spark ``local[N]``, at growing sizes.

    .venv/bin/python benchmarks/scale/run.py --sizes 50000 200000 1000000 --files 8

Each size is a fresh workspace of demo rows (``beryl.data.demo.generate``, 5 % of them repeated
across files) split over ``--files`` CSV files; both engines ingest the same files and train on
the result, in this process, one after the other. The Spark session is started before the
first size and its start-up is reported on its own (``beryl schedule`` pays it once). A small
pass per engine warms both up first (imports, Spark's Python workers). Prints the cost per row
of each engine at each size, and where lines through the two largest sizes say Spark starts to
pay off (on the same cores, it may not). Writes
``benchmarks/results/scale.json``.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import pandas as pd

from benchmarks.common import RESULTS, say, write_json

ENGINES = ("local", "spark")


ROWS_PER_FILE = 2_000_000  # at most, so that generating a file stays small in memory


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
    for path in folder.iterdir():
        os.utime(path, (old, old))
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


def _measure(config_path: Path) -> dict[str, Any]:
    from beryl import config
    from beryl.data.ingestion import ingest
    from beryl.model.training import train
    from beryl.workspace import Workspace

    workspace = Workspace(config.load(config_path))
    gc.collect()
    with _PeakMemory() as memory:
        start = time.perf_counter()
        result = ingest(workspace)
        ingested = time.perf_counter()
        card = train(workspace)
        trained = time.perf_counter()
    return {
        "ingest_s": ingested - start,
        "train_s": trained - ingested,
        "peak_rss_gb": memory.peak / 1e9,
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[50_000, 200_000, 1_000_000])
    parser.add_argument("--files", type=int, default=8)
    parser.add_argument("--master", default="local[2]")
    parser.add_argument("--out", default="scale.json", help="file name in benchmarks/results/")
    args = parser.parse_args()

    from beryl.config import SparkSettings
    from beryl.spark import session

    start = time.perf_counter()
    session.session(SparkSettings(master=args.master, conf={"spark.ui.enabled": False}))
    startup = time.perf_counter() - start
    say(f"Spark session on {args.master}: started in {startup:.1f} s (paid once per process)")
    points = []
    scratch = Path(tempfile.mkdtemp(prefix="beryl-scale-"))
    try:
        # One small pass per engine first: imports, and the Python workers Spark starts.
        warm = _data(scratch / "warm", 5000, 2)
        for engine in ENGINES:
            _measure(_workspace(scratch / f"warm-{engine}", engine, warm, args.master))
        for rows in args.sizes:
            point: dict[str, Any] = {}
            made = time.perf_counter()
            data = _data(scratch / f"data-{rows}", rows, args.files)
            size = sum(f.stat().st_size for f in data.iterdir())
            say(
                f"{rows:,} rows: {size / 1e9:.2f} GB of CSV in {len(list(data.iterdir()))} files, "
                f"made in {time.perf_counter() - made:.0f} s"
            )
            for engine in ENGINES:
                root = scratch / f"{engine}-{rows}"
                point[engine] = _measure(_workspace(root, engine, data, args.master))
                shutil.rmtree(root)
                say(
                    f"  {engine}: ingest {point[engine]['ingest_s']:.1f} s, train "
                    f"{point[engine]['train_s']:.1f} s, peak memory "
                    f"{point[engine]['peak_rss_gb']:.2f} GB"
                )
            shutil.rmtree(data)
            local, spark = point["local"], point["spark"]
            point["rows"] = local["rows"]
            assert local["rows"] == spark["rows"], "the engines stored different rows"
            gap = max(abs(a - b) for a, b in zip(local["coef"][0], spark["coef"][0], strict=True))
            cost = {
                e: (point[e]["ingest_s"] + point[e]["train_s"]) / point["rows"] * 1e6
                for e in ENGINES
            }
            say(
                f"{point['rows']:>10,} rows: local ingest {local['ingest_s']:.2f} s + train "
                f"{local['train_s']:.2f} s = {cost['local']:.2f} µs/row; spark ingest "
                f"{spark['ingest_s']:.2f} s + train {spark['train_s']:.2f} s = "
                f"{cost['spark']:.2f} µs/row ({cost['spark'] / cost['local']:.2f}x); "
                f"coefficients within {gap:.1e}"
            )
            points.append(point)
            write_json(RESULTS / args.out, {"master": args.master, "points": points})
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        session.stop()
    verdict = _crossover(points)
    say(f"Spark {args.master} pays off {verdict}.")
    if len(points) >= 2:
        first, last = points[0], points[-1]
        for engine in ENGINES:
            per_row = [
                (p[engine]["ingest_s"] + p[engine]["train_s"]) / p["rows"] for p in (first, last)
            ]
            peak = max(p[engine]["peak_rss_gb"] for p in points)
            say(
                f"  {engine}: cost per row at {last['rows']:,} rows is "
                f"{per_row[1] / per_row[0]:.2f}x that at {first['rows']:,}; peak memory "
                f"{peak:.2f} GB"
            )
    out = write_json(
        RESULTS / args.out,
        {"master": args.master, "startup_s": startup, "points": points, "pays_off": verdict},
    )
    say(f"wrote {out}")


if __name__ == "__main__":
    main()
