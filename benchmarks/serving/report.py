"""The report: each peer's median round, both tables, the targets against the peers (PASS/FAIL)."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Any

from benchmarks.serving.load import WARMUP_S, Load, LoadGenerator
from benchmarks.serving.workspace import BATCH_RECORDS


@dataclass
class PeerRun:
    peer: str
    note: str
    check: dict[str, Any] | None
    single: Load
    batch: Load


KINDS = ("single", "batch")


def median_runs(rounds: list[list[PeerRun]]) -> list[PeerRun]:
    """Per peer and body size, the round with the median requests/s (the lower one if even)."""
    out = []
    for index, first in enumerate(rounds[0]):
        picked = {}
        for kind in KINDS:
            loads = sorted((getattr(one[index], kind) for one in rounds), key=_rate)
            picked[kind] = loads[(len(loads) - 1) // 2]
        checks = [one[index].check for one in rounds]
        check = next((c for c in checks if c and not c["ok"]), checks[0])  # any mismatch shows
        out.append(PeerRun(first.peer, first.note, check, picked["single"], picked["batch"]))
    return out


def _rate(load: Load) -> float:
    return load.requests_per_s


def load_line(label: str, load: Load) -> str:
    warn = f"  ({load.errors} ERRORS)" if load.errors else ""
    split = "/".join(f"{share * 100:.0f}" for share in load.server_cpu_split)
    retried = f", best of {load.attempts} runs" if load.attempts > 1 else ""
    return (
        f"  {label:<13} {load.requests_per_s:>9.1f} req/s  p50 {load.p50_ms:8.2f} ms  "
        f"p99 {load.p99_ms:8.2f} ms  server CPU {load.server_cpu_ms_per_request:.3f} ms/req "
        f"(split over processes {split}%{retried}){warn}"
    )


def table(runs: list[PeerRun], kind: str) -> list[str]:
    """The table of one body size: each peer and Beryl's ratio to it."""
    beryl = getattr(next(r for r in runs if r.peer == "beryl"), kind)
    lines = [
        f"{'peer':<16} {'req/s':>10} {'p50 ms':>9} {'p99 ms':>9} {'CPU ms/req':>11} "
        f"{'Beryl÷peer req/s':>17} {'Beryl÷peer p99':>15}"
    ]
    for run in runs:
        load: Load = getattr(run, kind)
        lines.append(
            f"{run.peer:<16} {load.requests_per_s:>10.1f} {load.p50_ms:>9.2f} {load.p99_ms:>9.2f} "
            f"{load.server_cpu_ms_per_request or 0:>11.3f} "
            f"{beryl.requests_per_s / load.requests_per_s:>16.2f}x "
            f"{beryl.p99_ms / load.p99_ms:>14.3f}x"
        )
    return lines


def targets(runs: list[PeerRun]) -> list[dict[str, Any]]:
    """The targets against the other peers, on the single-record table."""
    by_name = {run.peer: run.single for run in runs}
    beryl = by_name["beryl"]
    mlflow = by_name.get("mlflow")
    bare = by_name.get("bare-asgi")
    specs = [
        ("Beryl req/s >= 20x MLflow req/s", mlflow, ">=", 20.0, "requests_per_s"),
        ("Beryl req/s >= 0.8x bare-ASGI req/s", bare, ">=", 0.8, "requests_per_s"),
        (
            "Beryl server CPU/request: bare-ASGI's ÷ Beryl's >= 0.8",
            bare,
            ">=",
            0.8,
            "server_cpu_ms_per_request",
        ),
        ("Beryl p99 <= 0.1x MLflow p99", mlflow, "<=", 0.1, "p99_ms"),
    ]
    out = []
    for name, peer, op, bound, metric in specs:
        ratio = None if peer is None else getattr(beryl, metric) / getattr(peer, metric)
        if ratio and metric == "server_cpu_ms_per_request":
            ratio = 1.0 / ratio  # the ceiling's cost over Beryl's: 1.0 is the ceiling itself
        passed = None if ratio is None else (ratio >= bound if op == ">=" else ratio <= bound)
        out.append({"target": name, "ratio": ratio, "bound": bound, "op": op, "pass": passed})
    return out


def target_lines(results: list[dict[str, Any]]) -> list[str]:
    lines = []
    for t in results:
        if t["pass"] is None:
            lines.append(f"  n/a   {t['target']} (peer not run)")
            continue
        mark = "PASS" if t["pass"] else "FAIL"
        lines.append(f"  {mark}  {t['target']}: {t['ratio']:.3f}x (target {t['op']} {t['bound']}x)")
    return lines


def report(runs: list[PeerRun], args: argparse.Namespace, loader: LoadGenerator) -> list[str]:
    lines = [
        "",
        f"Single record per request: {args.connections} connections, {args.workers} workers "
        f"each, {args.duration:g} s after a {WARMUP_S:g} s warm-up; load: {loader.name}"
        + (f"; median of {args.rounds} rounds" if args.rounds > 1 else ""),
        *table(runs, "single"),
        "",
        f"{BATCH_RECORDS} records per request: {args.batch_connections} connections, "
        f"{args.workers} workers each, {args.duration:g} s",
        *table(runs, "batch"),
    ]
    errors = [
        f"{run.peer}/{kind}"
        for run in runs
        for kind in ("single", "batch")
        if getattr(run, kind).errors
    ]
    if errors:
        lines.append(f"WARNING: error answers or socket errors in {', '.join(errors)}")
    return lines
