"""Running and measuring one process at a time: wall and CPU time, peak RSS, its report; the rows
of the results table, and the order in which Beryl and its peer take turns."""

from __future__ import annotations

import functools
import io
import json
import os
import pstats
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from benchmarks.common import REPO, say

TASKS = Path(__file__).resolve().parent / "tasks.py"
T = TypeVar("T")


@dataclass
class Proc:
    """One measured process."""

    label: str
    wall_s: float
    cpu_s: float
    peak_mb: float | None
    returncode: int
    report: dict[str, Any]
    log: str
    load_before: float


@dataclass
class Row:
    """One line of the results table."""

    benchmark: str
    unit: str
    beryl: float
    peer: float | None
    peer_name: str
    ratio: float | None
    target: str
    passed: bool


@dataclass
class Context:
    """Where things are, how to measure, and what has been measured so far."""

    python: str
    data: Path
    work: Path
    out: Path
    params: dict[str, int]
    requests: int
    repeat: int
    profile: bool
    baseline: str | None = None  # a git revision the ``pass`` benchmark compares with
    datasets: dict[str, Path] = field(default_factory=dict)  # the ingestion's, by name
    rows: list[Row] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    scaling: dict[str, Any] = field(default_factory=dict)
    shared: Path | None = None
    counter: int = 0


# -- processes ------------------------------------------------------------------------------------
def task_argv(ctx: Context, task: str, params: dict[str, Any] | None = None) -> list[str]:
    return [ctx.python, str(TASKS), task, json.dumps(params or {})]


def beryl_argv(ctx: Context, config: Path, *args: str) -> list[str]:
    """The Beryl CLI through the reporting wrapper (the code path of ``python -m beryl``)."""
    return [ctx.python, str(TASKS), "cli", "--config", str(config), *args]


def slug(text: str) -> str:
    return "-".join("".join(c if c.isalnum() else " " for c in text).split())


def measure(
    ctx: Context,
    label: str,
    argv: list[str],
    *,
    profile: list[str] | None = None,
    env: dict[str, str] | None = None,
) -> Proc:
    """Run ``argv`` to completion in a fresh process: wall and CPU time, peak RSS, its report.

    ``profile`` (functions to mark in the RSS timeline) makes this a Beryl command that
    ``--profile`` runs under cProfile; ``env`` is added to the environment.
    """
    ctx.counter += 1
    name = f"{ctx.counter:02d}-{slug(label)}"
    logs = ctx.work / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    log = logs / f"{name}.log"
    report_path = Path(tempfile.mkdtemp(dir=logs)) / "report.json"
    env = os.environ | (env or {}) | {"BENCH_REPORT": str(report_path), "PYTHONUNBUFFERED": "1"}
    prof = None
    if ctx.profile and profile is not None:
        prof = ctx.out / "profiles" / f"{name}.prof"
        prof.parent.mkdir(parents=True, exist_ok=True)
        argv = [argv[0], "-m", "cProfile", "-o", str(prof), *argv[1:]]
        env["BENCH_TRACE_RSS"] = ",".join(profile)
    load = os.getloadavg()[0]
    with log.open("wb") as out:
        started = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=REPO)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    report: dict[str, Any] = {}
    if report_path.exists():
        report = json.loads(report_path.read_text(encoding="utf-8"))
    shutil.rmtree(report_path.parent)
    peak = report.get("vmhwm_kb")
    result = Proc(
        label=label,
        wall_s=wall,
        cpu_s=usage.ru_utime + usage.ru_stime,
        peak_mb=None if peak is None else peak / 1024,
        returncode=proc.returncode,
        report=report,
        log=str(log),
        load_before=load,
    )
    memory = f"{result.peak_mb:7.0f} MB" if result.peak_mb is not None else " " * 10
    say(
        f"  {label:<46} {wall:8.2f} s wall {result.cpu_s:7.2f} s cpu {memory}"
        f"  load {load:.1f}  rc {proc.returncode}"
    )
    if prof is not None:
        summarise_profile(prof, report.get("rss_timeline", []))
    if proc.returncode != 0:
        tail = log.read_text(encoding="utf-8", errors="replace")[-3000:]
        raise RuntimeError(f"{label} failed with exit code {proc.returncode}:\n{tail}")
    return result


def run_task(ctx: Context, label: str, task: str, params: dict[str, Any]) -> dict[str, Any]:
    """An unmeasured helper step in its own process; returns its report (memory removed)."""
    report = measure(ctx, label, task_argv(ctx, task, params)).report
    return {k: v for k, v in report.items() if not k.endswith("_kb")}


def summarise_profile(prof: Path, timeline: list[str], top: int = 14) -> None:
    """Write the profile's summary beside it; print where Beryl's own functions spend time."""
    buffer = io.StringIO()
    stats = pstats.Stats(str(prof), stream=buffer)
    stats.sort_stats("cumulative").print_stats(r"/src/beryl/", 40)
    stats.sort_stats("tottime").print_stats(30)
    text = "\n".join(["RSS timeline:", *timeline, "", buffer.getvalue()])
    prof.with_suffix(".txt").write_text(text, encoding="utf-8")
    own = [
        (entry[3], f"{func}  ({Path(path).name}:{line})")
        for (path, line, func), entry in stats.stats.items()  # type: ignore[attr-defined]
        if "/src/beryl/" in path
    ]
    say(f"    profile -> {prof.with_suffix('.txt')}")
    for seconds, where in sorted(own, reverse=True)[:top]:
        say(f"    {seconds:8.2f} s  {where}")
    for line in timeline:
        say(f"    {line}")


SETTLE_S = 2.5  # Beryl records a file's times once they are 2 s old when it lists the folder


def settle(folder: Path) -> None:
    """Wait until every file in ``folder`` was last changed ``SETTLE_S`` ago, as files dropped
    into an input folder are by the time a pass lists them. Linking the cached files into a
    fresh workspace changes their times; a pass that lists a file changed in the last 2 s does
    not record its times (it might still be being written) and reads it again the next time."""
    times = [path.stat().st_ctime for path in folder.iterdir()]
    if times:
        time.sleep(max(0.0, max(times) + SETTLE_S - time.time()))


def warm(paths: list[Path]) -> None:
    """Read files once so that every contender finds them in the page cache."""
    for path in paths:
        with path.open("rb") as handle:
            while handle.read(1 << 22):
                pass


def in_turn(index: int, beryl: Callable[[], Proc], peer: Callable[[], T]) -> tuple[Proc, T]:
    """One run of each, Beryl's result first; the peer runs first when ``index`` is even."""
    if index % 2 == 0:
        theirs = peer()
        return beryl(), theirs
    ours = beryl()
    return ours, peer()


def alternate(
    ctx: Context, beryl: Callable[[int], Proc], peer: Callable[[int], T]
) -> tuple[list[Proc], list[T]]:
    """Run both ``ctx.repeat`` times, alternating which goes first.

    ``peer`` may run several peers in a row (and return all their results): Beryl then goes
    before all of them, or after all of them.
    """
    ours: list[Proc] = []
    theirs: list[T] = []
    for index in range(ctx.repeat):
        mine, other = in_turn(
            index, functools.partial(beryl, index), functools.partial(peer, index)
        )
        ours.append(mine)
        theirs.append(other)
    return ours, theirs


def median(procs: list[Proc], attribute: str) -> float:
    return float(statistics.median(float(getattr(p, attribute)) for p in procs))


def summary(procs: list[Proc]) -> dict[str, Any]:
    return {
        "wall_s": [p.wall_s for p in procs],
        "cpu_s": [p.cpu_s for p in procs],
        "peak_mb": [p.peak_mb for p in procs],
        "load_before": [p.load_before for p in procs],
        "median_wall_s": median(procs, "wall_s"),
        "median_cpu_s": median(procs, "cpu_s"),
        "median_peak_mb": median(procs, "peak_mb") if procs[0].peak_mb is not None else None,
        "logs": [p.log for p in procs],
    }


def add_row(ctx: Context, row: Row) -> None:
    ctx.rows.append(row)
    verdict = "PASS" if row.passed else "FAIL"
    say(f"  -> {row.benchmark}: {row.beryl:.4g} {row.unit} ({row.target}) {verdict}")


def ratio_row(
    benchmark: str,
    unit: str,
    values: tuple[float, float],
    peer_name: str,
    limit: float,
    target: str,
    verified: bool = True,
    *,
    strict: bool = False,
) -> Row:
    """A row whose target is ``beryl / peer <= limit`` (``< limit`` when ``strict``) and a
    verified equal output."""
    beryl, peer = values
    ratio = beryl / peer if peer else float("inf")
    within = ratio < limit if strict else ratio <= limit
    return Row(benchmark, unit, beryl, peer, peer_name, ratio, target, within and verified)
