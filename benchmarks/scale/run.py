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
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from benchmarks.common import RESULTS, say, write_json

ENGINES = ("local", "spark")


def _workspace(root: Path, engine: str, rows: int, files: int, master: str) -> Path:
    from beryl.data.demo import generate, split_with_duplicates, write_csv

    source = root / "sourcedata"
    source.mkdir(parents=True)
    (root / "testdata").mkdir()
    parts = split_with_duplicates(generate(rows, seed=0), files, seed=0)
    for index, part in enumerate(parts):
        write_csv(part, source / f"part{index:03d}.csv")
    write_csv(generate(2000, seed=1, missing_rate=0.0), root / "testdata" / "testdata.csv")
    config = {
        "model": {"max_iter": 1000},
        "write_csv_snapshot": False,
        "engine": engine,
        "spark": {"master": master, "conf": {"spark.ui.enabled": False}},
    }
    (root / "config.json").write_text(json.dumps(config))
    old = time.time() - 60
    for path in source.iterdir():
        os.utime(path, (old, old))
    return root / "config.json"


def _measure(config_path: Path) -> dict[str, Any]:
    from beryl import config
    from beryl.data.ingestion import ingest
    from beryl.model.training import train
    from beryl.workspace import Workspace

    workspace = Workspace(config.load(config_path))
    start = time.perf_counter()
    result = ingest(workspace)
    ingested = time.perf_counter()
    card = train(workspace)
    trained = time.perf_counter()
    return {
        "ingest_s": ingested - start,
        "train_s": trained - ingested,
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
        for engine in ENGINES:
            _measure(_workspace(scratch / f"warm-{engine}", engine, 5000, 2, args.master))
        for rows in args.sizes:
            point: dict[str, Any] = {}
            for engine in ENGINES:
                root = scratch / f"{engine}-{rows}"
                point[engine] = _measure(_workspace(root, engine, rows, args.files, args.master))
                shutil.rmtree(root)
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
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        session.stop()
    verdict = _crossover(points)
    say(f"Spark {args.master} pays off {verdict}.")
    out = write_json(
        RESULTS / "scale.json",
        {"master": args.master, "startup_s": startup, "points": points, "pays_off": verdict},
    )
    say(f"wrote {out}")


if __name__ == "__main__":
    main()
