"""The bare job, in one engine: read every CSV file of a folder, drop duplicate rows, write one CSV.

    <engines venv>/bin/python benchmarks/data/barejob.py ENGINE SOURCE_FOLDER OUT_CSV

``ENGINE`` is one of ``JOBS`` (pandas, pyarrow, polars, duckdb); the files are the folder's
``*.csv`` by name. The process runs in the engines' venv (``engines.py``, which measures all four;
the ingestion benchmark measures DuckDB's beside ``beryl ingest``). It prints one JSON line as it
ends: the engine and its version, the job's own wall time (imports included), the rows written and
the process's peak memory (``VmHWM``, its own address space only). When ``BENCH_REPORT`` names a
file, the same report goes there too, as ``tasks.py`` writes it, so that ``measure.measure`` reads
the child's peak memory the way it reads every other contender's.

Only the standard library is imported at module level; each engine is imported by its job.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

from tasks import REPORT_ENV, peak_rss_kb, write_report


def job_pandas(files: list[str], out: str) -> tuple[int, str]:
    import pandas as pd

    frame = pd.concat([pd.read_csv(f, dtype={"corporation": str}) for f in files])
    frame = frame.drop_duplicates()
    frame.to_csv(out, index=False)
    return len(frame), pd.__version__


def job_pyarrow(files: list[str], out: str) -> tuple[int, str]:
    import pyarrow as pa
    import pyarrow.csv as pacsv

    table = pa.concat_tables([pacsv.read_csv(f) for f in files])
    table = table.group_by(table.column_names).aggregate([])  # no row-level distinct in Arrow
    pacsv.write_csv(table, out)
    return table.num_rows, pa.__version__


def job_polars(files: list[str], out: str) -> tuple[int, str]:
    import polars as pl

    frame = pl.concat([pl.read_csv(f, schema_overrides={"corporation": pl.Utf8}) for f in files])
    frame = frame.unique(maintain_order=True)
    frame.write_csv(out)
    return frame.height, pl.__version__


def duckdb_query(files: list[str], out: str) -> str:
    """The DuckDB statement of the bare job: ``SELECT DISTINCT *`` over every file, copied to
    ``out`` with a header (``corporation`` read as text, the other types sniffed)."""
    listed = ",".join(f"'{f}'" for f in files)
    types = "{'corporation': 'VARCHAR'}"
    query = f"SELECT DISTINCT * FROM read_csv([{listed}], header=true, types={types})"
    return f"COPY ({query}) TO '{out}' (HEADER)"


def job_duckdb(files: list[str], out: str) -> tuple[int, str]:
    import duckdb

    con = duckdb.connect()
    written = con.execute(duckdb_query(files, out)).fetchone()  # COPY returns the rows written
    con.close()
    assert written is not None
    return int(written[0]), duckdb.__version__


JOBS: dict[str, Callable[[list[str], str], tuple[int, str]]] = {
    "pandas": job_pandas,
    "pyarrow": job_pyarrow,
    "polars": job_polars,
    "duckdb": job_duckdb,
}


def main(argv: list[str] | None = None) -> int:
    engine, source, out = sys.argv[1:] if argv is None else argv
    files = [str(path) for path in sorted(Path(source).glob("*.csv"))]
    started = time.perf_counter()
    rows, version = JOBS[engine](files, out)
    report = {
        "engine": engine,
        "version": version,
        "files": len(files),
        "wall_s": time.perf_counter() - started,
        "rows": rows,
    }
    if os.environ.get(REPORT_ENV):
        write_report(os.environ[REPORT_ENV], report)
    print(json.dumps(report | {"peak_mb": peak_rss_kb() / 1024}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
