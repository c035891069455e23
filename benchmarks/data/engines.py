"""Which engine for ingestion: the original approach (read every file, concatenate, drop
duplicate rows, write one CSV) in pandas, pyarrow, polars and DuckDB, on the benchmark's files.

    .venv/bin/python benchmarks/data/engines.py [--repeat 2]

Each engine runs the job (``barejob.py``) in a fresh process of a venv of its own under
``benchmarks/.cache/engines`` (created on first use from PyPI), and reports its wall time, its
peak RSS (the process's own ``VmHWM``) and row count. Run ``benchmarks/data/run.py`` first: it
generates the files this reads (the demo data set's source files). The ingestion benchmark runs
DuckDB's job the same way, beside ``beryl ingest``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
CACHE = HERE.parent / ".cache"
VENV = CACHE / "engines"
ENGINES = ("pandas", "pyarrow", "polars", "duckdb")
REQUIREMENTS = ["pandas", "pyarrow", "polars", "duckdb"]
BARE_JOB = HERE / "barejob.py"  # the job itself, one engine per process


def bare_job_argv(engine: str, source: Path, out: Path) -> list[str]:
    """The command that runs the bare job in ``engine`` on ``source``'s CSV files into ``out``,
    in the engines' venv (created first when missing)."""
    return [str(python()), str(BARE_JOB), engine, str(source), str(out)]


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
    best: dict[str, dict[str, Any]] = {}
    for _ in range(args.repeat):
        for engine in ENGINES:
            argv_child = bare_job_argv(engine, source, out)
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
