"""The targets that compare Beryl with itself: live monitoring on against off, reason codes
against none, and Beryl's app on granian against ``beryl serve`` (whether granian would be
worth being the default)."""

from __future__ import annotations

import argparse
from typing import Any

from benchmarks.serving.report import PeerRun

LIVE_OFF = "beryl live-off"
LIVE_BUDGET = 1.05  # live monitoring may cost at most 5% of the server CPU per request
EXPLAIN_BUDGET = 1.2  # reason codes may cost at most 20% of the server CPU per request
GRANIAN_DEFAULT = 1.3  # granian becomes the default only this much faster, p99 no worse


def _single(runs: list[PeerRun], name: str) -> Any:
    return next((run.single for run in runs if run.peer == name), None)


def _cpu_ratio(target: str, on: Any, off: Any, bound: float) -> dict[str, Any]:
    cpu_on, cpu_off = on.server_cpu_ms_per_request or 0.0, off.server_cpu_ms_per_request or 0.0
    ratio = cpu_on / cpu_off if cpu_off else None
    return {
        "target": target,
        "ratio": ratio,
        "bound": bound,
        "op": "<=",
        "pass": None if ratio is None else ratio <= bound,
        "cpu_ms_per_request": {"on": cpu_on, "off": cpu_off},
        "requests_per_s": {"on": on.requests_per_s, "off": off.requests_per_s},
        "requests_per_s_ratio": on.requests_per_s / off.requests_per_s,
    }


def live_target(runs: list[PeerRun]) -> dict[str, Any] | None:
    """Beryl's server CPU per single-record request with live monitoring over without, and
    the requests/s ratio; None when ``--live`` was not given."""
    off = _single(runs, LIVE_OFF)
    if off is None:
        return None
    target = f"Beryl server CPU/request with live monitoring <= {LIVE_BUDGET}x without"
    return _cpu_ratio(target, _single(runs, "beryl"), off, LIVE_BUDGET)


def explain_target(runs: list[PeerRun]) -> dict[str, Any] | None:
    """Beryl's server CPU per single-record request asking for reason codes over without;
    None when ``--explain`` was not given."""
    explained = next((run for run in runs if run.peer.startswith("beryl explain=")), None)
    if explained is None:
        return None
    target = f"Beryl server CPU/request with {explained.peer[6:]} <= {EXPLAIN_BUDGET}x without"
    return _cpu_ratio(target, explained.single, _single(runs, "beryl"), EXPLAIN_BUDGET)


def granian_target(runs: list[PeerRun]) -> dict[str, Any] | None:
    """Beryl's app on granian against ``beryl serve`` (uvicorn): requests/s ratio, which must
    reach ``GRANIAN_DEFAULT`` with p99 no worse for granian to be worth the default."""
    granian, uvicorn = _single(runs, "beryl-granian"), _single(runs, "beryl")
    if granian is None:
        return None
    ratio = granian.requests_per_s / uvicorn.requests_per_s
    p99 = granian.p99_ms / uvicorn.p99_ms
    return {
        "target": (
            f"granian as the default server: Beryl's app on granian >= {GRANIAN_DEFAULT}x the "
            f"req/s of `beryl serve` with p99 no worse (p99 ratio {p99:.2f}x)"
        ),
        "ratio": ratio,
        "bound": GRANIAN_DEFAULT,
        "op": ">=",
        "pass": ratio >= GRANIAN_DEFAULT and p99 <= 1.0,
        "p99_ratio": p99,
        "cpu_ms_per_request": {
            "granian": granian.server_cpu_ms_per_request,
            "uvicorn": uvicorn.server_cpu_ms_per_request,
        },
    }


def live_lines(live: dict[str, Any], args: argparse.Namespace) -> list[str]:
    cpu, rate = live["cpu_ms_per_request"], live["requests_per_s"]
    return [
        "",
        f"Live monitoring, single record per request ({args.connections} connections, "
        f"{args.workers} workers; on: as shipped, off: live.enabled false):",
        f"  {'':<5} {'req/s':>10} {'CPU ms/req':>11}",
        f"  {'on':<5} {rate['on']:>10.1f} {cpu['on']:>11.4f}",
        f"  {'off':<5} {rate['off']:>10.1f} {cpu['off']:>11.4f}",
        f"  on÷off: server CPU per request {live['ratio'] or 0:.3f}x, requests/s "
        f"{live['requests_per_s_ratio']:.3f}x",
    ]
