"""The benchmarks' figure: how Beryl and pandas scale with the input, and serving throughput.

    .venv/bin/python benchmarks/plot.py [--results benchmarks/results] [--out <results>/scaling.png]

Reads ``<results>/data.json`` (the ``scaling`` points that ``benchmarks/data/run.py`` writes:
ingestion and batch scoring at several input sizes, Beryl and pandas) and, when they are there,
``<results>/scale.json`` (``benchmarks/scale/run.py``: ingestion, training and batch scoring up
to 100M rows) and ``<results>/serving.json`` (requests/s per server from
``benchmarks/serving/run.py``), and draws one PNG: wall time and peak RSS against rows for each
scaling benchmark, cost per row and peak memory of each stage up to the largest size, and a bar
chart of requests/s per server for each serving load. ``make bench`` draws it at the end of the
data run; this script redraws it from the JSON alone.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "results"
BERYL = "#1f6fb4"
PANDAS = "#e07b1a"
OTHERS = "#9a9a9a"
SCALING_TITLES = {"ingest": "Ingestion", "predict": "Batch scoring"}
X_LABELS = {"ingest": "input rows", "predict": "rows scored"}
SERVING_TITLES = {"single": "single-record requests", "batch": "batch requests"}


class PlotError(Exception):
    """A reason the figure cannot be drawn, worded for the person who ran the script."""


@dataclass
class Series:
    """One contender's points in one scaling benchmark, in order of rows."""

    rows: list[int]
    wall_s: list[float]
    peak_mb: list[float | None]


@dataclass
class Bars:
    """Requests/s per server under one serving load."""

    title: str
    peers: list[str]
    requests_per_s: list[float]


# -- reading ----------------------------------------------------------------------------------
def read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PlotError(f"{path} does not exist") from None
    except (OSError, UnicodeDecodeError) as error:
        raise PlotError(f"cannot read {path}: {error}") from None
    except json.JSONDecodeError as error:
        raise PlotError(f"{path} is not valid JSON ({error})") from None
    if not isinstance(data, dict):
        raise PlotError(f"{path} holds no JSON object")
    return data


def scaling_series(data: dict[str, Any], path: Path) -> dict[str, dict[str, Series]]:
    """``{benchmark: {"beryl": Series, "pandas": Series}}`` from data.json's ``scaling``."""
    scaling = data.get("scaling")
    if not scaling:
        raise PlotError(
            f"{path} has no scaling points: run benchmarks/data/run.py with the scaling benchmark "
            "(it is part of the default run; alone: --only scaling)"
        )
    found: dict[str, dict[str, Series]] = {}
    try:
        for kind, entry in scaling.items():
            points = sorted(entry["points"], key=lambda p: int(p["rows"]))
            found[kind] = {
                who: Series(
                    rows=[int(p["rows"]) for p in points],
                    wall_s=[float(p[who]["wall_s"]) for p in points],
                    peak_mb=[p[who]["peak_mb"] for p in points],
                )
                for who in ("beryl", "pandas")
            }
    except (AttributeError, KeyError, TypeError, ValueError) as error:
        raise PlotError(f"{path}: unexpected layout of its scaling points ({error!r})") from None
    return {kind: series for kind, series in found.items() if series["beryl"].rows}


def serving_bars(path: Path) -> list[Bars]:
    """One ``Bars`` per serving load; none (with a note) if serving.json is absent or unreadable."""
    if not path.exists():
        print(f"plot: no {path.name} in {path.parent}: drawing without the serving panels")
        return []
    try:
        data = read_json(path)
        settings = data.get("settings", {})
        bars = []
        for kind, runs in data["results"].items():
            title = SERVING_TITLES.get(kind, kind)
            if kind == "batch" and "batch_records" in settings:
                title = f"batches of {settings['batch_records']:,} records"
            connections = settings.get("batch_connections" if kind == "batch" else "connections")
            if connections:
                title += f", {connections} connections"
            peers = [str(run["peer"]) for run in runs]
            bars.append(Bars(title, peers, [float(run["requests_per_s"]) for run in runs]))
    except (PlotError, AttributeError, KeyError, TypeError, ValueError) as error:
        reason = error if isinstance(error, PlotError) else f"{path}: unexpected layout ({error!r})"
        print(f"plot: serving panels left out: {reason}", file=sys.stderr)
        return []
    return bars


@dataclass
class Growth:
    """One engine's points of the scale run: rows, µs per row of each stage, peak memory."""

    engine: str
    rows: list[int]
    us_per_row: dict[str, list[float]]
    peak_gb: list[float]


GROWTH_STAGES = {"ingest_s": "ingestion", "train_s": "training", "score_s": "batch scoring"}


def growth_series(path: Path) -> list[Growth]:
    """Each engine's scale points (largest run last); none, with a note, without scale.json."""
    if not path.exists():
        print(f"plot: no {path.name} in {path.parent}: drawing without the growth panels")
        return []
    try:
        points = read_json(path)["points"]
        out = []
        for engine in ("local", "spark"):
            done = [p[engine] for p in points if engine in p and "error" not in p[engine]]
            if not done:
                continue
            per_row = {
                stage: [
                    run[stage] / run["scored_rows" if stage == "score_s" else "rows"] * 1e6
                    for run in done
                ]
                for stage in GROWTH_STAGES
                if all(stage in run for run in done)
            }
            peaks = [float(run["peak_rss_gb"]) for run in done]
            out.append(Growth(engine, [int(run["rows"]) for run in done], per_row, peaks))
    except (PlotError, AttributeError, KeyError, TypeError, ValueError) as error:
        reason = error if isinstance(error, PlotError) else f"{path}: unexpected layout ({error!r})"
        print(f"plot: growth panels left out: {reason}", file=sys.stderr)
        return []
    return out


def draw_growth(cost: Any, memory: Any, growth: list[Growth]) -> None:
    """Cost per row of each stage and peak memory against rows (log scale), per engine."""
    styles = {"local": ("-", "o"), "spark": ("--", "s")}
    colours = {"ingest_s": BERYL, "train_s": PANDAS, "score_s": "#3a9e4f"}
    for series in growth:
        line, marker = styles.get(series.engine, ("-", "o"))
        for stage, values in series.us_per_row.items():
            label = f"{GROWTH_STAGES[stage]} ({series.engine})"
            cost.plot(series.rows, values, line, marker=marker, color=colours[stage], label=label)
            cost.annotate(
                f"{values[-1] / values[0]:.2f}×",
                (series.rows[-1], values[-1]),
                textcoords="offset points",
                xytext=(6, 0),
                va="center",
                fontsize=8,
                color=colours[stage],
            )
        memory.plot(series.rows, series.peak_gb, line, marker=marker, color=BERYL)
        memory.annotate(
            f"{series.peak_gb[-1]:.1f} GB ({series.engine})",
            (series.rows[-1], series.peak_gb[-1]),
            textcoords="offset points",
            xytext=(-6, 8),
            ha="right",
            fontsize=8,
        )
    for axes, title, unit in (
        (cost, "Growth: cost per row of each stage", "µs per row"),
        (memory, "Growth: peak memory of a whole pass", "GB"),
    ):
        axes.set_xscale("log")
        axes.set_title(title)
        axes.set_xlabel("rows (log scale)")
        axes.set_ylabel(unit)
        axes.set_ylim(bottom=0)
        rows = sorted({r for series in growth for r in series.rows})
        axes.set_xticks(rows, [rows_label(r) for r in rows])
        axes.set_xlim(rows[0] / 1.6, rows[-1] * 1.6)
        axes.grid(True, alpha=0.3)
    cost.legend(loc="upper left", fontsize=8)


# -- drawing ----------------------------------------------------------------------------------
def rows_label(value: float, _: object = None) -> str:
    """1250000 -> 1.25M, 40000 -> 40k."""
    for scale, suffix in ((1e6, "M"), (1e3, "k")):
        if abs(value) >= scale:
            return f"{value / scale:.3g}{suffix}"
    return f"{value:g}"


def draw_scaling(axes: Any, series: dict[str, Series], kind: str, metric: str) -> None:
    """One benchmark's wall time or peak RSS against rows, Beryl and pandas, ratios marked."""
    ours, theirs = series["beryl"], series["pandas"]
    unit = "s" if metric == "wall_s" else "MB"
    values: dict[str, list[float]] = {}
    for name, line, colour, marker in (
        ("Beryl", ours, BERYL, "o"),
        ("pandas", theirs, PANDAS, "s"),
    ):
        ys = [math.nan if v is None else float(v) for v in getattr(line, metric)]
        values[name] = ys
        axes.plot(line.rows, ys, marker=marker, color=colour, linewidth=2, label=name)
    highest = max((v for ys in values.values() for v in ys if not math.isnan(v)), default=1.0)
    for x, mine, other in zip(ours.rows, values["Beryl"], values["pandas"], strict=True):
        if other > 0 and not math.isnan(mine):  # both measured (comparisons with NaN are false)
            if mine >= other:
                offset, align = (0, 8), "center"  # above the point
            elif mine > highest * 0.12:
                offset, align = (0, -14), "center"  # below it
            else:
                offset, align = (7, -9), "left"  # near the axis: beside it, not under the axis
            axes.annotate(
                f"{mine / other:.2f}×",
                (x, mine),
                textcoords="offset points",
                xytext=offset,
                ha=align,
                fontsize=8,
                color=BERYL,
            )
    what = "wall time" if metric == "wall_s" else "peak RSS"
    axes.set_title(f"{SCALING_TITLES.get(kind, kind)}: {what}")
    axes.set_xlabel(X_LABELS.get(kind, "rows"))
    axes.set_ylabel(f"{what} ({unit})")
    axes.set_xlim(0, max(ours.rows) * 1.08)
    axes.set_ylim(0, highest * 1.18)  # room for the ratios above the points
    axes.set_xticks(ours.rows)
    axes.xaxis.set_major_formatter(rows_label)
    axes.grid(True, alpha=0.3)
    axes.legend(loc="upper left", fontsize=9)  # the lines rise to the right


def draw_bars(axes: Any, bars: Bars) -> None:
    colours = [BERYL if peer == "beryl" else OTHERS for peer in bars.peers]
    positions = list(range(len(bars.peers)))
    axes.barh(positions, bars.requests_per_s, color=colours)
    axes.set_yticks(positions, bars.peers)
    axes.invert_yaxis()
    axes.set_xlabel("requests/s")
    axes.set_title(f"Serving: {bars.title}")
    axes.set_xlim(0, max(bars.requests_per_s) * 1.25)
    axes.xaxis.set_major_formatter("{x:,.0f}")
    for y, value in zip(positions, bars.requests_per_s, strict=True):
        axes.annotate(
            f"{value:,.0f}",
            (value, y),
            textcoords="offset points",
            xytext=(4, 0),
            va="center",
            fontsize=9,
        )
    axes.grid(True, axis="x", alpha=0.3)


def caption(data: dict[str, Any]) -> str:
    machine = data.get("machine", {})
    params = data.get("parameters", {})
    parts = ["one run per point, each a fresh process; by Beryl's points: Beryl / pandas"]
    if "rows_per_file" in params:
        parts.append(f"{params['rows_per_file']:,} rows per source file")
    if machine.get("cpu"):
        parts.append(f"{machine['cpu']}, {machine.get('cores', '?')} cores")
    commit = str(machine.get("beryl_commit", "")).split(" ")[0]
    if commit:
        parts.append(f"Beryl {commit[:10]}")
    return "; ".join(parts)


def draw(results: Path, out: Path) -> Path:
    """Draw the figure from the JSON in ``results`` into ``out``."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    data_path = results / "data.json"
    if not data_path.exists():
        raise PlotError(
            f"{data_path} does not exist: run `make bench` or "
            "`.venv/bin/python benchmarks/data/run.py` first"
        )
    data = read_json(data_path)
    scaling = scaling_series(data, data_path)
    bars = serving_bars(results / "serving.json")
    growth = growth_series(results / "scale.json")
    columns = len(scaling) + (1 if growth else 0) + (1 if bars else 0)
    height = max(2, len(bars))
    figure = Figure(figsize=(5.6 * columns, 4.2 * height), layout="constrained")
    FigureCanvasAgg(figure)
    grid = figure.add_gridspec(height, columns)
    for column, (kind, series) in enumerate(scaling.items()):
        draw_scaling(figure.add_subplot(grid[0, column]), series, kind, "wall_s")
        draw_scaling(figure.add_subplot(grid[1, column]), series, kind, "peak_mb")
    if growth:
        column = len(scaling)
        draw_growth(
            figure.add_subplot(grid[0, column]), figure.add_subplot(grid[1, column]), growth
        )
    for row, one in enumerate(bars):
        draw_bars(figure.add_subplot(grid[row, columns - 1]), one)
    title = "Beryl vs pandas as the input grows"
    if growth:
        title += f", up to {rows_label(max(max(g.rows) for g in growth))} rows"
    if bars:
        title += ", and serving throughput"
    figure.suptitle(title, fontsize=15, fontweight="bold")
    figure.text(0.5, -0.01, caption(data), ha="center", va="top", fontsize=9, color="#555555")
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=110, bbox_inches="tight")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--results", type=Path, default=RESULTS, help="folder with data.json")
    parser.add_argument("--out", type=Path, help="the PNG to write (<results>/scaling.png)")
    args = parser.parse_args(argv)
    out = args.out or args.results / "scaling.png"
    try:
        path = draw(args.results, out)
    except PlotError as error:
        print(f"plot: {error}", file=sys.stderr)
        return 2
    print(f"wrote the plot {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
