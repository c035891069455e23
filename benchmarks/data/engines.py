"""Which engine for ingestion: the original approach (read every file, concatenate, drop
duplicate rows, write one CSV) in pandas, pyarrow, polars and DuckDB, on the benchmark's files.

    .venv/bin/python benchmarks/data/engines.py [--repeat 2]

Each engine runs in a fresh process of a venv of its own under ``benchmarks/.cache/engines``
(created on first use from PyPI), and reports its wall time, peak RSS and row count. Run
``benchmarks/data/run.py`` first: it generates the files this reads.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
CACHE = HERE.parent / ".cache"
VENV = CACHE / "engines"
ENGINES = ("pandas", "pyarrow", "polars", "duckdb")
REQUIREMENTS = ["pandas", "pyarrow", "polars", "duckdb"]

CHILD = r"""
import glob, json, resource, sys, time
source, out, engine = sys.argv[1], sys.argv[2], sys.argv[3]
files = sorted(glob.glob(source + "/*.csv"))
started = time.perf_counter()
if engine == "pandas":
    import pandas as pd
    frame = pd.concat([pd.read_csv(f, dtype={"corporation": str}) for f in files])
    frame = frame.drop_duplicates()
    frame.to_csv(out, index=False)
    rows = len(frame)
elif engine == "pyarrow":
    import pyarrow as pa, pyarrow.csv as pacsv
    table = pa.concat_tables([pacsv.read_csv(f) for f in files])
    table = table.group_by(table.column_names).aggregate([])  # no row-level distinct in Arrow
    pacsv.write_csv(table, out)
    rows = table.num_rows
elif engine == "polars":
    import polars as pl
    frame = pl.concat([pl.read_csv(f, schema_overrides={"corporation": pl.Utf8}) for f in files])
    frame = frame.unique(maintain_order=True)
    frame.write_csv(out)
    rows = frame.height
else:
    import duckdb
    con = duckdb.connect()
    listed = ",".join(f"'{f}'" for f in files)
    types = "{'corporation': 'VARCHAR'}"
    query = f"SELECT DISTINCT * FROM read_csv([{listed}], header=true, types={types})"
    con.execute(f"COPY ({query}) TO '{out}' (HEADER)")
    rows = con.execute(f"SELECT count(*) FROM read_csv('{out}')").fetchone()[0]
wall = time.perf_counter() - started
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"engine": engine, "wall_s": wall, "peak_mb": peak, "rows": rows}))
"""


def python() -> Path:
    """The engines' venv interpreter, created with the engines installed when missing."""
    interpreter = VENV / "bin" / "python"
    if not interpreter.exists():
        print(f"setup: installing {', '.join(REQUIREMENTS)} into {VENV}", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        pip = [str(interpreter), "-m", "pip", "install", "--quiet", *REQUIREMENTS]
        subprocess.run(pip, check=True)
    return interpreter


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=2, help="runs per engine (best counts)")
    args = parser.parse_args(argv)
    sources = sorted((CACHE / "data").glob("v*/source"))
    if not sources:
        print("engines: no generated data; run benchmarks/data/run.py first", file=sys.stderr)
        return 2
    source = max(sources, key=lambda folder: len(list(folder.glob("*.csv"))))  # the largest
    out = VENV / "out.csv"
    interpreter = python()
    best: dict[str, dict[str, float]] = {}
    for _ in range(args.repeat):
        for engine in ENGINES:
            argv_child = [str(interpreter), "-c", CHILD, str(source), str(out), engine]
            started = time.perf_counter()
            done = subprocess.run(argv_child, capture_output=True, text=True, check=True)
            report = json.loads(done.stdout.strip().splitlines()[-1])  # after any engine chatter
            report["process_s"] = time.perf_counter() - started
            print(
                f"  {engine:8} {report['wall_s']:6.2f} s  {report['peak_mb']:6.0f} MB  "
                f"{report['rows']:,} rows",
                flush=True,
            )
            if engine not in best or report["wall_s"] < best[engine]["wall_s"]:
                best[engine] = report
    print(f"\n{source}: best of {args.repeat}")
    for engine, report in sorted(best.items(), key=lambda item: item[1]["wall_s"]):
        print(f"{engine:8} {report['wall_s']:6.2f} s  {report['peak_mb']:6.0f} MB peak")
    return 0


if __name__ == "__main__":
    sys.exit(main())
