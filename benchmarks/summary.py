"""Every target of ``make bench`` in one table, PASS or FAIL, from the runs' JSON.

    .venv/bin/python benchmarks/summary.py [--results benchmarks/results]

Reads ``serving.json`` (``benchmarks/serving/run.py``), ``data.json`` (``benchmarks/data/run.py``)
and ``scale.json`` (``benchmarks/scale/run.py``), whichever are there, and prints one Markdown
table: each target with what was measured, the bound, PASS or FAIL, and which run measured it,
then the machine and the load average when each run began. Exit code 0 only when every target
of every run found passed.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
RUNS = {"serving": "serving.json", "data": "data.json", "scale": "scale.json"}


def _load(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as error:
        print(f"summary: {path} left out: {error}", file=sys.stderr)
        return None
    return data if isinstance(data, dict) else None


def _single(serving: dict[str, Any], peer: str) -> dict[str, Any] | None:
    return next((r for r in serving["results"]["single"] if r["peer"] == peer), None)


def serving_rows(serving: dict[str, Any]) -> list[tuple[str, str, str, bool | None]]:
    rows = []
    beryl = _single(serving, "beryl")
    bare = _single(serving, "bare-asgi")
    for goal in serving.get("targets", []):
        ratio = goal.get("ratio")
        measured = "not run" if ratio is None else f"{ratio:.3f}×"
        cpu = goal.get("cpu_ms_per_request")
        if isinstance(cpu, dict):
            measured += " (" + ", ".join(f"{k} {v:.4f} ms" for k, v in cpu.items() if v) + ")"
        elif "bare-ASGI" in goal["target"] and beryl and bare:
            measured += (
                f" (Beryl {beryl['requests_per_s']:,.0f} req/s, "
                f"{beryl['server_cpu_ms_per_request']:.4f} ms; bare {bare['requests_per_s']:,.0f} "
                f"req/s, {bare['server_cpu_ms_per_request']:.4f} ms)"
            )
        rows.append((goal["target"], measured, f"{goal['op']} {goal['bound']}", goal.get("pass")))
    return rows


def data_rows(data: dict[str, Any]) -> list[tuple[str, str, str, bool | None]]:
    rows = []
    for row in data.get("results", []):
        unit = row["unit"]
        beryl = _value(row["beryl"], unit)
        if row["peer"] is None:
            measured = beryl
        else:
            peer = _value(row["peer"], unit)
            measured = f"{beryl} vs {peer} ({row['peer_name']}): {row['ratio']:.3f}"
        rows.append((row["benchmark"], measured, row["target"], bool(row["passed"])))
    return rows


def scale_rows(scale: dict[str, Any]) -> list[tuple[str, str, str, bool | None]]:
    rows = []
    for goal in scale.get("growth", []):
        first, last = goal["us_per_row"]
        small, large = goal["rows"]
        rows.append(
            (
                f"growth, {goal['engine']} {goal['stage']}: cost per row at {large:,} rows over "
                f"{small:,}",
                f"{last:.2f} vs {first:.2f} µs/row: {goal['ratio']:.2f}×",
                "<= 1.2",
                bool(goal["pass"]),
            )
        )
    return rows


def _value(value: float, unit: str) -> str:
    if unit == "s":
        return f"{value:.2f} s" if value >= 1 else f"{value * 1000:.0f} ms"
    if unit == "MB":
        return f"{value:,.0f} MB"
    return f"{value:.2f} {unit}"


def _machine(runs: dict[str, dict[str, Any]]) -> list[str]:
    lines = []
    for name, data in runs.items():
        machine = data.get("machine", {})
        load = machine.get("loadavg_at_start") or data.get("loadavg_at_start")
        commit = str(machine.get("beryl_commit", "")).split(" ")[0][:10]
        when = data.get("started_at") or ""
        described = (
            f"{machine.get('cpu', '?')}, {machine.get('cores', '?')} cores, "
            f"{machine.get('memory_gib', '?')} GiB"
            if machine
            else "machine not recorded"
        )
        shown = "/".join(f"{v:.2f}" for v in load) if load else "?"
        lines.append(f"- {name}: {described}; load average at start {shown}; {commit} {when}")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    runs = {n: d for n, f in RUNS.items() if (d := _load(args.results / f)) is not None}
    if not runs:
        print(f"summary: no results in {args.results}: run `make bench` first", file=sys.stderr)
        return 2
    makers = {"serving": serving_rows, "data": data_rows, "scale": scale_rows}
    print("| target | measured | bound | result | run |")
    print("| --- | --- | --- | --- | --- |")
    results = []
    for name, data in runs.items():
        for target, measured, bound, passed in makers[name](data):
            mark = "n/a" if passed is None else "PASS" if passed else "FAIL"
            results.append(passed)
            print(f"| {target} | {measured} | {bound} | {mark} | {name} |")
    print()
    print("\n".join(_machine(runs)))
    missing = sorted(set(RUNS) - set(runs))
    if missing:
        print(f"not run: {', '.join(missing)}")
    return 0 if all(r is not False for r in results) and not missing else 1


if __name__ == "__main__":
    sys.exit(main())
