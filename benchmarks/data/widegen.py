"""The ``wide`` data set: the demo data's schema and column names, with other widths and
cardinalities, generated here with NumPy and pyarrow (independently of ``beryl.data.demo``).

Child side: ``tasks.py generate-wide`` calls ``generate_wide``. Every file has the columns of the
demo data (``corporation, lastmonth_activity, lastyear_activity, number_of_employees, exited``)
in the same CSV style (``datagen.write_csv``), and differs in what they hold:

- ``corporation`` comes from a pool of ``POOL`` distinct codes (three capital letters and five
  digits, e.g. ``KQZ04217``), drawn with a skew (the code at rank ``r`` of the pool is drawn with
  a probability falling as ``1 / sqrt(r)``), so the identifier has low cardinality and every code
  repeats, some of them thousands of times;
- ``lastyear_activity`` is log-uniform over 10^3 .. 10^9 and ``lastmonth_activity`` is about a
  twelfth of it (a gamma factor around 1), capped at 10^9; ``number_of_employees`` is
  log-uniform over 1 .. 10^5: all whole numbers, the activity counts 1 to 10 digits wide;
- ``MISSING_SHARE`` of each numeric column is blank (Beryl reads a blank number as missing; the
  label and the identifier are never blank);
- ``exited`` (0 or 1) follows a logistic function of the activity's and the company's sizes
  (less recent activity, more attrition), so a model can learn it;
- ``DUPLICATE_SHARE`` of every file's rows are exact copies of other rows: half of them copies
  of rows of the same file, half of rows of the next file (the last file's from the first), in
  random positions.

``new/activity-new.csv`` is made the same way from fresh rows, its cross-file copies taken from
the first source file (rows the dataset already holds).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
from datagen import ID_COLUMN, LABEL, write_csv

POOL = 50_000
DUPLICATE_SHARE = 0.10
MISSING_SHARE = 0.005
ACTIVITY_DIGITS = (3.0, 9.0)  # lastyear_activity is log-uniform over 10^3 .. 10^9
ACTIVITY_MAX = 10**9
EMPLOYEE_DIGITS = (0.0, 5.0)  # number_of_employees is log-uniform over 1 .. 10^5
SEED_POOL = 61_000
SEED_SOURCE = 62_000
SEED_COPIES = 63_000
SEED_NEW = 64_000

Params = dict[str, Any]


def corporation_pool(size: int = POOL, seed: int = SEED_POOL) -> pa.Array:
    """``size`` distinct codes of three capital letters and five digits, in random order."""
    rng = np.random.default_rng(seed)
    numbers = rng.choice(26**3 * 10**5, size=size, replace=False)
    letters, digits = np.divmod(numbers, 10**5)
    codes = [
        f"{chr(65 + a // 676)}{chr(65 + a // 26 % 26)}{chr(65 + a % 26)}{d:05d}"
        for a, d in zip(letters.tolist(), digits.tolist(), strict=True)
    ]
    return pa.array(codes, pa.string())


def _log_uniform(rng: np.random.Generator, digits: tuple[float, float], rows: int) -> np.ndarray:
    return np.round(10.0 ** rng.uniform(*digits, rows))


def _with_blanks(rng: np.random.Generator, values: np.ndarray) -> pa.Array:
    """Whole numbers as int64, ``MISSING_SHARE`` of them blank."""
    blank = rng.random(len(values)) < MISSING_SHARE
    return pa.array(values.astype(np.int64), pa.int64(), mask=blank)


def customers(rows: int, seed: int, pool: pa.Array) -> pa.Table:
    """``rows`` fresh rows of the wide data set (see the module docstring)."""
    rng = np.random.default_rng(seed)
    ranks = (len(pool) * rng.random(rows) ** 2).astype(np.int64)
    lastyear = _log_uniform(rng, ACTIVITY_DIGITS, rows)
    lastmonth = np.minimum(np.round(lastyear / 12.0 * rng.gamma(2.0, 0.5, rows)), ACTIVITY_MAX)
    employees = _log_uniform(rng, EMPLOYEE_DIGITS, rows)
    z_month = (np.log10(lastmonth + 1.0) - 4.5) / 1.8
    z_year = (np.log10(lastyear) - 6.0) / 1.7
    z_emp = (np.log10(employees) - 2.5) / 1.4
    logit = -1.0 - 1.8 * z_month - 0.4 * z_year + 0.3 * z_emp
    exited = (rng.random(rows) < 1.0 / (1.0 + np.exp(-logit))).astype(np.int64)
    return pa.table(
        {
            ID_COLUMN: pool.take(pa.array(ranks)),
            "lastmonth_activity": _with_blanks(rng, lastmonth),
            "lastyear_activity": _with_blanks(rng, lastyear),
            "number_of_employees": _with_blanks(rng, employees),
            LABEL: pa.array(exited, pa.int64()),
        }
    )


def with_copies(base: pa.Table, other: pa.Table, copies: int, rng: np.random.Generator) -> pa.Table:
    """``base`` with ``copies`` exact copies of rows, half from ``base``, half from ``other``,
    shuffled in."""
    within = copies // 2
    own = rng.choice(base.num_rows, size=min(within, base.num_rows), replace=False)
    theirs = rng.choice(other.num_rows, size=min(copies - within, other.num_rows), replace=False)
    table = pa.concat_tables([base, base.take(np.sort(own)), other.take(np.sort(theirs))])
    return table.take(rng.permutation(table.num_rows))


def generate_wide(params: Params) -> dict[str, Any]:
    """Write the wide data set once under ``params["root"]``: ``files`` source files of
    ``rows_per_file`` rows and one new file of as many rows."""
    root = Path(params["root"])
    files, rows = int(params["files"]), int(params["rows_per_file"])
    started = time.perf_counter()
    pool = corporation_pool()
    copies = round(rows * DUPLICATE_SHARE)
    rng = np.random.default_rng(SEED_COPIES)
    first = customers(rows - copies, SEED_SOURCE, pool)
    base = first
    written: list[Path] = []
    for index in range(files):
        last = index + 1 == files
        following = first if last else customers(rows - copies, SEED_SOURCE + index + 1, pool)
        path = root / "source" / f"activity-{index + 1:04d}.csv"
        write_csv(with_copies(base, following, copies, rng), path)
        written.append(path)
        base = following
    fresh = customers(rows - copies, SEED_NEW, pool)
    new = root / "new" / "activity-new.csv"
    write_csv(with_copies(fresh, first, copies, rng), new)
    source_bytes = sum(path.stat().st_size for path in written)
    return {
        "generator": "widegen",
        "rows": files * rows,
        "duplicate_rows": files * copies,
        "corporation_pool": len(pool),
        "source_bytes": source_bytes,
        "bytes_per_row": source_bytes / (files * rows),
        "new_file_rows": rows,
        "seconds": time.perf_counter() - started,
    }
