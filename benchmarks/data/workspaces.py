"""The generated data sets (cached) and the workspaces (rebuilt on every run) the benchmarks use.

Two data sets, each in a folder of its own under ``benchmarks/.cache/data`` named after its
generator, version and size: ``demo`` (``datagen.py``, Beryl's demo generator: what every
benchmark uses) and ``wide`` (``widegen.py``: wider numbers, a low-cardinality identifier, more
duplicates; the ingestion benchmark's second data set).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict
from pathlib import Path
from typing import Any

from benchmarks.common import CACHE, say, write_json
from benchmarks.data.measure import Context, beryl_argv, measure, run_task, warm

DATA = CACHE / "data"
DEAD_INDEX = "http://127.0.0.1:9/pypi"  # the outdated-packages check fails fast, offline
DATASETS = ("demo", "wide")
# Bump a generator's version when the data it writes changes, to invalidate its cache.
DEMO_VERSION = 1  # datagen.py
WIDE_VERSION = 1  # widegen.py
GENERATE_TASK = {"demo": "generate", "wide": "generate-wide"}


def dataset_params(params: dict[str, int], dataset: str = "demo") -> dict[str, int]:
    """The parameters a data set is generated with: the wide one has no loop files."""
    if dataset == "wide":
        return {"files": params["files"], "rows_per_file": params["rows_per_file"]}
    return dict(params)


def data_dir(params: dict[str, int], dataset: str = "demo") -> Path:
    """The cache folder of a data set: its generator, version and size in the name."""
    files, rows = params["files"], params["rows_per_file"]
    if dataset == "wide":
        return DATA / f"wide-v{WIDE_VERSION}-{files}x{rows}"
    return DATA / f"v{DEMO_VERSION}-{files}x{rows}-loop{params['loop_files']}"


def ensure_data(ctx: Context, dataset: str = "demo") -> dict[str, Any]:
    """Generate a data set once; ``meta.json`` is written last and marks it complete."""
    root = data_dir(ctx.params, dataset)
    params = dataset_params(ctx.params, dataset)
    meta = root / "meta.json"
    if meta.exists():
        cached: dict[str, Any] = json.loads(meta.read_text(encoding="utf-8"))
        if cached.get("params") == params:
            say(f"data ({dataset}): cached in {root}")
            return cached
    say(f"data ({dataset}): generating into {root}")
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    task = GENERATE_TASK[dataset]
    report = run_task(ctx, f"generate {dataset} data", task, {"root": str(root), **params})
    info = {"dataset": dataset, "params": params, "generated": report}
    write_json(meta, info)
    return info


def csv_files(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.csv"))


def workspace_config(ctx: Context, name: str) -> Path:
    """The config path of the workspace ``work/name``."""
    return ctx.work / name / "config.json"


def input_folder(config: Path) -> Path:
    """The input folder of the workspace whose config is ``config``."""
    data = json.loads(config.read_text(encoding="utf-8"))
    return config.parent / data["input_folder_path"]


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
