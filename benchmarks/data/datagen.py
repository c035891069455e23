"""The demo data set, generated with Beryl's own ``beryl.data.demo.generate``; the schema and the
CSV style every generated data set shares.

Child side: ``tasks.py generate`` calls ``generate_demo``. Only the standard library is imported
at module level (``tasks.py`` takes the schema's names from here); NumPy, pyarrow and Beryl are
imported by the functions that use them.

The files follow the original schema ``corporation, lastmonth_activity, lastyear_activity,
number_of_employees, exited``: ``corporation`` is the identifier (text), the three activity
columns are numeric features (whole numbers, blank when missing), ``exited`` is the label (0 or 1,
never blank). They are written with pyarrow in the original style: no quotes, whole numbers,
blanks for missing values.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

ID_COLUMN = "corporation"
NUMERIC = ["lastmonth_activity", "lastyear_activity", "number_of_employees"]
LABEL = "exited"
COLUMNS = [ID_COLUMN, *NUMERIC, LABEL]

DUPLICATE_SHARE = 0.05
SEED_SOURCE = 10_000
SEED_DUPLICATES = 20_000
SEED_NEW = 30_000
SEED_TEST = 40_000
SEED_PREDICT = 50_000

Params = dict[str, Any]


# -- the CSV style ----------------------------------------------------------------------------
def write_options() -> Any:
    """pyarrow's CSV options for the original style: no quotes (header included)."""
    import pyarrow.csv as pacsv

    return pacsv.WriteOptions(quoting_style="none")


def write_csv(table: Any, path: Path) -> None:
    """Write ``table`` to ``path`` via a temporary file, so a killed run leaves no half file."""
    import pyarrow.csv as pacsv

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    pacsv.write_csv(table, tmp, write_options())
    tmp.replace(path)


# -- the demo data set ------------------------------------------------------------------------
def to_table(frame: Any) -> Any:
    """A generated frame as an Arrow table in the original style (whole numbers, blanks)."""
    import pyarrow as pa

    columns = {ID_COLUMN: pa.array(frame[ID_COLUMN].to_numpy(dtype=object), pa.string())}
    for column in NUMERIC:
        values = pa.array(frame[column].to_numpy(dtype="float64"), from_pandas=True)
        columns[column] = values.cast(pa.int64())
    if LABEL in frame:
        columns[LABEL] = pa.array(frame[LABEL].to_numpy(dtype="int64"), pa.int64())
    return pa.table(columns)


def source_tables(files: int, rows: int) -> list[Any]:
    """``files`` tables of ``rows`` rows: fresh customers plus 5% rows copied from another file."""
    import numpy as np
    import pyarrow as pa

    from beryl.data.demo import generate

    copies = round(rows * DUPLICATE_SHARE)
    bases = [to_table(generate(rows - copies, seed=SEED_SOURCE + i)) for i in range(files)]
    rng = np.random.default_rng(SEED_DUPLICATES)
    tables = []
    for index, base in enumerate(bases):
        other = bases[(index + 1) % files]
        picks = rng.choice(other.num_rows, size=min(copies, other.num_rows), replace=False)
        table = pa.concat_tables([base, other.take(np.sort(picks))])
        tables.append(table.take(rng.permutation(table.num_rows)))
    return tables


def generate_demo(params: Params) -> dict[str, Any]:
    """Write the demo data set once: source files, the loop's re-split, one new file, test data
    and the scoring file, under ``params["root"]``."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.csv as pacsv

    from beryl.data.demo import generate

    root = Path(params["root"])
    files, rows, loop_files = params["files"], params["rows_per_file"], params["loop_files"]
    started = time.perf_counter()
    tables = source_tables(files, rows)
    for index, table in enumerate(tables):
        write_csv(table, root / "source" / f"activity-{index + 1:04d}.csv")
    everything = pa.concat_tables(tables)
    bounds = np.linspace(0, everything.num_rows, loop_files + 1).astype(int)
    for index in range(loop_files):
        part = everything.slice(bounds[index], bounds[index + 1] - bounds[index])
        write_csv(part, root / "loop" / f"activity-{index + 1:05d}.csv")
    write_csv(to_table(generate(rows, seed=SEED_NEW)), root / "new" / "activity-new.csv")
    test_rows = int(min(100_000, max(2_000, files * rows // 100)))
    test = generate(test_rows, seed=SEED_TEST, missing_rate=0.0)
    write_csv(to_table(test), root / "test" / "testdata.csv")
    scoring = root / "predict" / "customers.csv"
    scoring.parent.mkdir(parents=True, exist_ok=True)
    tmp = scoring.with_name(f".{scoring.name}.tmp")
    writer = None
    for index in range(files):
        table = to_table(generate(rows, seed=SEED_PREDICT + index)).drop_columns([LABEL])
        if writer is None:
            writer = pacsv.CSVWriter(str(tmp), table.schema, write_options=write_options())
        writer.write_table(table)
    assert writer is not None
    writer.close()
    tmp.replace(scoring)
    return {
        "rows": everything.num_rows,
        "test_rows": test_rows,
        "scoring_rows": files * rows,
        "seconds": time.perf_counter() - started,
    }
