"""The results table, the scaling table, ``data.json`` and the plot."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from benchmarks.common import REPO, write_json
from benchmarks.data.measure import Context, Row

PLOT = Path(__file__).resolve().parents[1] / "plot.py"


def format_value(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    if unit == "s":
        return f"{value:.2f} s" if value >= 1 else f"{value * 1000:.0f} ms"
    if unit == "ms":
        return f"{value:.1f} ms" if value < 1000 else f"{value / 1000:.2f} s"
    return f"{value:,.0f} {unit}"


def render(header: tuple[str, ...], lines: Sequence[tuple[str, ...]]) -> str:
    """Columns padded to their widest cell, under a header and a rule."""
    widths = [max(len(x) for x in column) for column in zip(header, *lines, strict=True)]

    def row(cells: tuple[str, ...]) -> str:
        return "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()

    rule = tuple("-" * w for w in widths)
    return "\n".join(row(cells) for cells in [header, rule, *lines])


def table(rows: list[Row]) -> str:
    header = ("benchmark", "Beryl", "peer", "ratio", "target", "result")
    lines = [
        (
            r.benchmark,
            format_value(r.beryl, r.unit),
            f"{format_value(r.peer, r.unit)} ({r.peer_name})",
            "-" if r.ratio is None else f"{r.ratio:.3f}",
            r.target,
            "PASS" if r.passed else "FAIL",
        )
        for r in rows
    ]
    return render(header, lines)


def scaling_table(scaling: dict[str, Any]) -> str:
    """The scaling points: Beryl's and pandas' wall time and peak RSS, and their ratios."""
    header = ("scaling", "rows", "Beryl", "pandas", "ratio", "Beryl peak", "pandas peak", "ratio")
    lines = []
    for kind, series in scaling.items():
        for p in series["points"]:
            ours, theirs = p["beryl"], p["pandas"]
            peaks = (ours["peak_mb"], theirs["peak_mb"])
            lines.append(
                (
                    kind if p["same_rows_out"] else f"{kind} (rows out differ)",
                    f"{p['rows']:,}",
                    format_value(ours["wall_s"], "s"),
                    format_value(theirs["wall_s"], "s"),
                    f"{ours['wall_s'] / theirs['wall_s']:.3f}",
                    format_value(peaks[0], "MB"),
                    format_value(peaks[1], "MB"),
                    f"{peaks[0] / peaks[1]:.3f}" if peaks[0] and peaks[1] else "-",
                )
            )
    return render(header, lines)


def draw_plot(ctx: Context) -> bool:
    """Draw ``<out>/scaling.png`` from the results just written, with ``benchmarks/plot.py``."""
    argv = [ctx.python, str(PLOT), "--results", str(ctx.out)]
    return subprocess.run(argv, cwd=REPO, check=False).returncode == 0


def write_results(ctx: Context, machine: dict[str, Any], started: float) -> Path:
    data = {
        "machine": machine | {"loadavg_at_end": os.getloadavg()},
        "parameters": ctx.params
        | {
            "requests": ctx.requests,
            "repeat": ctx.repeat,
            "profiled": ctx.profile,
            "datasets": list(ctx.datasets),
        },
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "duration_s": time.time() - started,
        "results": [asdict(r) for r in ctx.rows],
        "details": ctx.details,
    }
    if ctx.scaling:
        data["scaling"] = ctx.scaling
    return write_json(ctx.out / "data.json", data)
