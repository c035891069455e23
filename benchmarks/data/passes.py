"""A first pass of the loop over new files, against the same pass of another git revision.

`beryl run` on a fresh workspace with the first ``PASS_FILES`` source files new in its input
folder: it checks them, ingests them, trains, scores and promotes. The same pass by another
revision's Beryl (``--baseline REV``, its ``src`` put first on ``PYTHONPATH``, today's
dependencies) runs in turn with it, on a fresh workspace each time. Besides the whole process,
the pass's own step timings (``beryl run --json``) show where the difference is: each new file
is read and hashed once, by ingestion, so the check step before it reads nothing.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

from benchmarks.common import baseline_source, say
from benchmarks.data.measure import (
    Context,
    Proc,
    Row,
    add_row,
    alternate,
    beryl_argv,
    measure,
    median,
    ratio_row,
    summary,
)
from benchmarks.data.workspaces import csv_files, make_workspace

PASS_FILES = 4
STEPS = ("check", "ingest", "train", "score")


def pass_timings(proc: Proc) -> dict[str, float]:
    """The step timings ``beryl run --json`` printed (the JSON is the log's last object)."""
    text = Path(proc.log).read_text(encoding="utf-8")
    start = text.rfind("\n{\n") + 1 if not text.startswith("{") else 0
    result: dict[str, Any] = json.loads(text[start:])
    if result.get("outcome") != "promoted":
        raise RuntimeError(f"{proc.label}: the pass did not promote ({result.get('reason')})")
    return {name: float(value) for name, value in result["timings"].items()}


def first_pass(ctx: Context, label: str, env: dict[str, str] | None) -> Proc:
    """A first pass over ``PASS_FILES`` new files in a fresh workspace."""
    config = make_workspace(ctx, "first-pass", ctx.data / "source", test=True, limit=PASS_FILES)
    argv = beryl_argv(ctx, config, "run", "--no-apicalls", "--json")
    return measure(ctx, label, argv, env=env)


def bench_pass(ctx: Context) -> None:
    """The first pass over new files, this revision against ``ctx.baseline``."""
    if ctx.baseline is None:
        say("pass: skipped (compares with another revision: give --baseline REV)")
        return
    files = min(PASS_FILES, len(csv_files(ctx.data / "source")))
    say(f"pass: `beryl run` over {files} new files, this revision vs {ctx.baseline}")
    env = {"PYTHONPATH": str(baseline_source(ctx.baseline))}
    here, there = alternate(
        ctx,
        lambda i: first_pass(ctx, f"beryl run (first pass) #{i + 1}", None),
        lambda i: first_pass(ctx, f"beryl@{ctx.baseline} run (first pass) #{i + 1}", env),
    )
    steps = {
        "beryl": [pass_timings(proc) for proc in here],
        ctx.baseline: [pass_timings(proc) for proc in there],
    }
    medians = {
        who: {step: statistics.median(t.get(step, 0.0) for t in runs) for step in STEPS}
        for who, runs in steps.items()
    }
    for step in STEPS:
        say(
            f"  {step:<8} {medians['beryl'][step]:8.3f} s here, "
            f"{medians[ctx.baseline][step]:8.3f} s at {ctx.baseline}"
        )
    ctx.details["pass"] = {
        "files": files,
        "baseline": ctx.baseline,
        "beryl": summary(here),
        "baseline_runs": summary(there),
        "step_medians_s": medians,
    }
    peer = f"beryl@{ctx.baseline}"
    walls = (median(here, "wall_s"), median(there, "wall_s"))
    add_row(
        ctx, ratio_row(f"pass: first, {files} new files", "s", walls, peer, 1.05, "≤ 1.05 × peer")
    )
    # The check step only lists and stats the input folder (ingestion reads each new file):
    # within 5 ms of the peer's, or faster, whatever the peer does.
    check, old_check = medians["beryl"]["check"], medians[ctx.baseline]["check"]
    ratio = check / old_check if old_check else None
    passed = check <= max(old_check, 0.005)
    label = f"pass: its check step, {files} files"
    add_row(ctx, Row(label, "s", check, old_check, peer, ratio, "≤ peer or < 5 ms", passed))
