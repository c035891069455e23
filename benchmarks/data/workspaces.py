"""The generated data set (cached) and the workspaces (rebuilt on every run) the benchmarks use."""

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
GENERATOR_VERSION = 1


def data_dir(params: dict[str, int]) -> Path:
    files, rows, loop = params["files"], params["rows_per_file"], params["loop_files"]
    return DATA / f"v{GENERATOR_VERSION}-{files}x{rows}-loop{loop}"


def ensure_data(ctx: Context) -> dict[str, Any]:
    """Generate the data set once; ``meta.json`` is written last and marks it complete."""
    meta = ctx.data / "meta.json"
    if meta.exists():
        cached: dict[str, Any] = json.loads(meta.read_text(encoding="utf-8"))
        if cached.get("params") == ctx.params:
            say(f"data: cached in {ctx.data}")
            return cached
    say(f"data: generating into {ctx.data}")
    shutil.rmtree(ctx.data, ignore_errors=True)
    ctx.data.mkdir(parents=True)
    report = run_task(ctx, "generate data", "generate", {"root": str(ctx.data), **ctx.params})
    info = {"params": ctx.params, "generated": report}
    write_json(meta, info)
    return info


def csv_files(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.csv"))


def workspace_config(ctx: Context, name: str) -> Path:
    """The config path of the workspace ``work/name``."""
    return ctx.work / name / "config.json"


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
