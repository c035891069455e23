"""Load generation and what it measures: wrk (or the Python client) against one running server,
the server's CPU time per request from /proc and how it was split over the processes."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.common import run_checked, say

HERE = Path(__file__).resolve().parent
WARMUP_S = 2.0
BALANCED = 0.75  # largest share of the server's CPU one process may take in a 2-worker run
ATTEMPTS = 3


# -- the load generator: wrk, else the Python client ----------------------------------------------
def ensure_wrk() -> str | None:
    """wrk from Debian; None when it cannot be installed (the Python client is used then)."""
    found = shutil.which("wrk")
    if found or os.geteuid() != 0:
        return found
    say("setup: apt-get install wrk")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    with contextlib.suppress(RuntimeError):
        run_checked(["apt-get", "update", "-qq"], env)
        run_checked(["apt-get", "install", "-y", "-qq", "wrk"], env)
    return shutil.which("wrk")


def wrk_version(wrk: str | None) -> str | None:
    if not wrk:
        return None
    done = subprocess.run([wrk, "--version"], capture_output=True, text=True, check=False)
    return (done.stdout + done.stderr).splitlines()[0]


# -- what the server spent ------------------------------------------------------------------------
def group_cpu(pgid: int) -> dict[int, float]:
    """User + system CPU seconds of every live process in the group (server and workers)."""
    ticks = os.sysconf("SC_CLK_TCK")
    out: dict[int, float] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) == pgid:  # fields[2] is pgrp; utime, stime are 11 and 12
                out[int(stat.parent.name)] = (int(fields[11]) + int(fields[12])) / ticks
    return out


def cpu_split(before: dict[int, float], after: dict[int, float]) -> list[float]:
    """Each busy process's share of the group's CPU time, largest first (worker balance)."""
    spent = {pid: after[pid] - before.get(pid, 0.0) for pid in after}
    total = sum(spent.values()) or 1.0
    return sorted((round(v / total, 3) for v in spent.values() if v / total >= 0.02), reverse=True)


def worker_pids(pid: int) -> list[int]:
    """uvicorn's worker processes: children of the server started by multiprocessing's spawn."""
    workers: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        for child in task.read_text().split():
            with contextlib.suppress(OSError):
                if b"spawn_main" in Path(f"/proc/{child}/cmdline").read_bytes():
                    workers.append(int(child))
    return workers


# -- load generation ------------------------------------------------------------------------------
@dataclass
class Load:
    tool: str
    connections: int
    seconds: float
    requests: int
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    errors: int
    server_cpu_ms_per_request: float | None = None
    server_cpu_split: list[float] = field(default_factory=list)  # per process, largest first
    attempts: int = 1


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}


def _ms(number: str, unit: str) -> float:
    return float(number) * _UNITS[unit]


def parse_wrk(text: str, connections: int) -> Load:
    """Requests/s, p50, p99 and error counts from ``wrk --latency`` output."""

    def find(pattern: str) -> re.Match[str]:
        match = re.search(pattern, text, re.MULTILINE)
        if match is None:
            raise RuntimeError(f"unexpected wrk output (no {pattern!r}):\n{text}")
        return match

    p50 = find(r"^\s*50(?:\.0+)?%\s+([\d.]+)(us|ms|s|m|h)\s*$")
    p99 = find(r"^\s*99(?:\.0+)?%\s+([\d.]+)(us|ms|s|m|h)\s*$")
    total = find(r"(\d+) requests in ([\d.]+)(us|ms|s|m|h)")
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
    sockets = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text
    )
    errors = int(non_2xx.group(1)) if non_2xx else 0
    errors += sum(int(n) for n in sockets.groups()) if sockets else 0
    return Load(
        tool="wrk",
        connections=connections,
        seconds=_ms(total.group(2), total.group(3)) / 1000,
        requests=int(total.group(1)),
        requests_per_s=float(find(r"Requests/sec:\s+([\d.]+)").group(1)),
        p50_ms=_ms(*p50.groups()),
        p99_ms=_ms(*p99.groups()),
        errors=errors,
    )


def wrk_argv(wrk: str, url: str, connections: int, duration: float) -> list[str]:
    threads = min(2, connections)
    return [
        wrk,
        f"-t{threads}",
        f"-c{connections}",
        f"-d{duration:g}s",
        "--timeout",
        "30s",
        "--latency",
        "-s",
        str(HERE / "post.lua"),
        url,
    ]


class LoadGenerator:
    """wrk when available, else the Python client in its own process."""

    def __init__(self, wrk: str | None, why: str = "wrk unavailable") -> None:
        self.wrk = wrk
        self.name = "wrk (2 threads)" if wrk else f"python asyncio+httpx client ({why})"

    def run(self, url: str, body: Path, connections: int, duration: float) -> Load:
        if self.wrk is not None:
            env = {**os.environ, "BENCH_BODY": str(body)}
            argv = wrk_argv(self.wrk, url, connections, duration)
            return parse_wrk(run_checked(argv, env), connections)
        argv = [sys.executable, str(HERE / "loadgen.py"), url, str(body)]
        argv += ["--connections", str(connections), "--duration", str(duration)]
        data = json.loads(run_checked(argv))
        return Load(tool="python", connections=connections, **data)

    def start(
        self, url: str, body: Path, connections: int, duration: float
    ) -> subprocess.Popen[str]:
        """Load in the background (for profiling); wrk only."""
        if self.wrk is None:
            argv = [sys.executable, str(HERE / "loadgen.py"), url, str(body)]
            argv += ["--connections", str(connections), "--duration", str(duration)]
        else:
            argv = wrk_argv(self.wrk, url, connections, duration)
        env = {**os.environ, "BENCH_BODY": str(body)}
        return subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, text=True)


def measure(
    loader: LoadGenerator,
    process: subprocess.Popen[bytes],
    url: str,
    body: Path,
    conns: int,
    s: float,
) -> Load:
    """Warm up, then a measured run with the server's CPU time per request and its split.

    When one process did more than ``BALANCED`` of the work (the workers' shared socket handed
    most connections to one worker; see post.lua), the run is repeated with new connections, up
    to ``ATTEMPTS`` times, and the most even one is kept: the table compares 2-worker servers.
    """
    loader.run(url, body, conns, WARMUP_S)
    best: Load | None = None
    for attempt in range(1, ATTEMPTS + 1):
        before = group_cpu(process.pid)
        load = loader.run(url, body, conns, s)
        after = group_cpu(process.pid)
        spent = sum(after.values()) - sum(before.values())
        load.server_cpu_ms_per_request = spent * 1000 / max(load.requests, 1)
        load.server_cpu_split = cpu_split(before, after)
        load.attempts = attempt
        if best is None or load.server_cpu_split[:1] < best.server_cpu_split[:1]:
            best = load
        if conns < 2 or len(worker_pids(process.pid)) < 2 or _balanced(load):
            break
    assert best is not None
    return best


def _balanced(load: Load) -> bool:
    return not load.server_cpu_split or load.server_cpu_split[0] <= BALANCED
