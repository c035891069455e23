"""Synthetic workspaces in the original schema, for the demo, the tests and the benchmarks.

Rows follow ``corporation, lastmonth_activity, lastyear_activity, number_of_employees, exited``.
Attrition is a real, learnable function of activity (less recent activity, more attrition), so a
model trained on the data scores well above chance. ``shift`` moves the activity distribution
(data drift); ``label_noise`` flips a share of labels (a worse model).
"""

from __future__ import annotations

import itertools
import json
import string
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from beryl._io import atomic_write_text
from beryl.config import DEFAULT_CONFIG_NAME, default_config
from beryl.errors import ConfigError

COLUMNS = [
    "corporation",
    "lastmonth_activity",
    "lastyear_activity",
    "number_of_employees",
    "exited",
]
NUMERIC = ["lastmonth_activity", "lastyear_activity", "number_of_employees"]


@dataclass(frozen=True)
class DemoWorkspace:
    """Where a generated workspace put its files."""

    root: Path
    config: Path
    source_files: list[Path]
    practice_files: list[Path]
    test_file: Path


def _names(rng: np.random.Generator, count: int) -> np.ndarray:
    letters = np.array(list(string.ascii_lowercase))
    picks = rng.integers(0, len(letters), size=(count, 4))
    return np.array(["".join(row) for row in letters[picks]], dtype=object)


def generate(
    rows: int,
    seed: int = 0,
    *,
    shift: float = 0.0,
    label_noise: float = 0.0,
    missing_rate: float = 0.01,
) -> pd.DataFrame:
    """``rows`` customers; ``shift`` > 0 raises activity by that fraction (data drift)."""
    if rows < 0:
        raise ValueError("rows must be >= 0")
    rng = np.random.default_rng(seed)
    lastyear = rng.gamma(2.0, 600.0, rows)
    lastmonth = lastyear / 12.0 * rng.gamma(2.0, 0.5, rows)
    employees = rng.gamma(1.5, 30.0, rows) + 1.0
    z_month = (lastmonth - 100.0) / 90.0
    z_year = (lastyear - 1200.0) / 850.0
    z_emp = (employees - 46.0) / 37.0
    logit = -0.2 - 2.2 * z_month - 0.6 * z_year + 0.3 * z_emp
    exited = (rng.random(rows) < 1.0 / (1.0 + np.exp(-logit))).astype(int)
    if label_noise > 0:
        flip = rng.random(rows) < label_noise
        exited = np.where(flip, 1 - exited, exited)
    scale = 1.0 + shift
    frame = pd.DataFrame(
        {
            "corporation": _names(rng, rows),
            "lastmonth_activity": np.round(lastmonth * scale).astype(float),
            "lastyear_activity": np.round(lastyear * scale).astype(float),
            "number_of_employees": np.round(employees).astype(float),
            "exited": exited,
        }
    )
    if missing_rate > 0 and rows:
        for column in NUMERIC:
            holes = rng.random(rows) < missing_rate
            frame.loc[holes, column] = np.nan
    return frame


def write_csv(frame: pd.DataFrame, path: Path) -> Path:
    """Write a frame in the original CSV style (integers without '.0', blanks for missing)."""
    out = frame.copy()
    for column in NUMERIC:
        if column in out:
            out[column] = out[column].astype("Int64")
    atomic_write_text(path, out.to_csv(index=False))
    return path


def split_with_duplicates(
    frame: pd.DataFrame, files: int, seed: int = 0, duplicate_rate: float = 0.05
) -> list[pd.DataFrame]:
    """Split rows over ``files`` parts, each repeating a share of another part's rows."""
    rng = np.random.default_rng(seed + 1)
    bounds = np.linspace(0, len(frame), max(files, 1) + 1).astype(int)
    parts = [
        frame.iloc[start:stop].reset_index(drop=True) for start, stop in itertools.pairwise(bounds)
    ]
    if files < 2:
        return parts
    out = []
    for index, part in enumerate(parts):
        other = parts[(index + 1) % len(parts)]
        count = round(len(other) * duplicate_rate)
        copies = other.iloc[rng.choice(len(other), size=min(count, len(other)), replace=False)]
        out.append(pd.concat([part, copies], ignore_index=True))
    return out


def init_workspace(
    root: Path,
    *,
    rows: int = 2000,
    files: int = 2,
    seed: int = 0,
    test_rows: int | None = None,
    force: bool = False,
) -> DemoWorkspace:
    """Create a ready workspace: config.json, source and practice files, and test data."""
    if rows < 10:
        raise ConfigError("--rows must be at least 10")
    if files < 1:
        raise ConfigError("--files must be at least 1")
    config_path = root / DEFAULT_CONFIG_NAME
    if config_path.exists() and not force:
        raise ConfigError(
            f"{config_path} already exists",
            hint="choose an empty folder, or pass --force to write new demo files beside it",
        )
    root.mkdir(parents=True, exist_ok=True)
    config = default_config()
    atomic_write_text(config_path, json.dumps(config, indent=2) + "\n")
    source = root / config["input_folder_path"]
    practice = root / "practicedata"
    tests = root / config["test_data_path"]
    for folder in (source, practice, tests, root / config["output_folder_path"]):
        folder.mkdir(parents=True, exist_ok=True)
    data = generate(rows, seed)
    source_files = [
        write_csv(part, source / f"dataset{index + 1}.csv")
        for index, part in enumerate(split_with_duplicates(data, files, seed))
    ]
    practice_data = generate(max(rows // 10, 20), seed + 1000)
    practice_files = [
        write_csv(part, practice / f"practice{index + 1}.csv")
        for index, part in enumerate(split_with_duplicates(practice_data, 2, seed, 0.3))
    ]
    test = generate(test_rows or max(rows // 4, 50), seed + 2000, missing_rate=0.0)
    test_file = write_csv(test, tests / "testdata.csv")
    return DemoWorkspace(root, config_path, source_files, practice_files, test_file)


def add_batch(
    folder: Path,
    name: str,
    *,
    rows: int = 500,
    seed: int = 1,
    shift: float = 0.0,
    label_noise: float = 0.0,
) -> Path:
    """Write one more CSV file of new customers into ``folder`` (e.g. the input folder)."""
    if not name.endswith(".csv"):
        name += ".csv"
    return write_csv(generate(rows, seed, shift=shift, label_noise=label_noise), folder / name)
