"""Where Beryl's time goes under load: py-spy on its workers, summarised by library and function."""

from __future__ import annotations

import argparse
import re
import subprocess
import time
from collections import Counter
from pathlib import Path
from typing import Any

from benchmarks.common import CACHE
from benchmarks.serving.load import WARMUP_S, LoadGenerator, worker_pids
from benchmarks.serving.servers import Peer, ensure_venv, running

TOOLS_VENV = CACHE / "tools"


def ensure_py_spy() -> Path:
    python = ensure_venv(TOOLS_VENV, ["py-spy"])
    return python.parent / "py-spy"


def _frame_file(frame: str) -> str:
    match = re.search(r"\((.*?)(?::\d+)?\)$", frame)
    return match.group(1) if match else ""


def package_of(path: str) -> str:
    """A frame's library: ``beryl.<module>``, else the top-level package or module name."""
    path = path.split("site-packages/", 1)[-1]
    path = re.sub(r"^.*/lib/python3\.\d+/", "", path)
    if path.startswith("beryl/") or "/beryl/" in path:
        module = path.rsplit("beryl/", 1)[1].removesuffix(".py").replace("/", ".")
        return f"beryl.{module}"
    return path.split("/", 1)[0].removesuffix(".py") or "?"


def _function(frame: str) -> str:
    name = frame.split(" (", 1)[0]
    return f"{name} ({package_of(_frame_file(frame))})"


# Leaves of a thread waiting (an idle thread-pool worker, the event loop in epoll): not CPU.
IDLE_LEAVES = (
    "Condition.wait (",
    "Event.wait (",
    "EpollSelector.select (",
    "Queue.get (",
    "Connection._recv (",  # uvicorn's worker waiting on the supervisor's pipe
)
# Frames that only dispatch (the event loop's callback, the thread pool's loop): inclusive time
# is counted for the frames below the last of them.
DISPATCH = ("Handle._run (", "WorkerThread.run (")


def summarize_profile(raws: list[Path], cpu_ms_per_request: float, top: int = 15) -> dict[str, Any]:
    """Self and inclusive time by library and function (share of busy samples, µs per request)."""
    by_package: Counter[str] = Counter()
    leaves: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    libraries: Counter[str] = Counter()
    functions: Counter[str] = Counter()
    total = idle = 0
    lines = [line for raw in raws if raw.exists() for line in raw.read_text().splitlines()]
    for line in lines:
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [f for f in stack.split(";") if " (" in f]
        if not frames:
            continue
        if frames[-1].startswith(IDLE_LEAVES):
            idle += count
            continue
        total += count
        for library in {package_of(_frame_file(f)) for f in frames}:
            libraries[library] += count
        by_package[package_of(_frame_file(frames[-1]))] += count
        leaves[_function(frames[-1])] += count
        below = [i for i, f in enumerate(frames) if f.startswith(DISPATCH)]
        names = {_function(f) for f in frames[below[-1] + 1 if below else 0 :]}
        functions.update(dict.fromkeys(names, count))
        inclusive.update(dict.fromkeys((n for n in names if "(beryl." in n), count))

    def share(counter: Counter[str], limit: int = top) -> list[dict[str, Any]]:
        return [
            {
                "name": name,
                "share": n / total,
                "us_per_request": n / total * cpu_ms_per_request * 1000,
            }
            for name, n in counter.most_common(limit)
        ]

    return {
        "samples": total,
        "idle_samples": idle,
        "cpu_ms_per_request": cpu_ms_per_request,
        "self_by_library": share(by_package),
        "inclusive_by_library": share(libraries),
        "self_by_function": share(leaves),
        "beryl_inclusive": share(inclusive),
        "inclusive_by_function": share(functions, top * 2),
    }


def profile_beryl(
    peer: Peer, body: Path, args: argparse.Namespace, loader: LoadGenerator, cpu_ms: float
) -> dict[str, Any]:
    """py-spy on Beryl's workers under the single-record load: raw stacks, then a flame graph.

    ``cpu_ms`` (server CPU per request, measured without the profiler) turns shares of samples
    into µs per request.
    """
    py_spy = str(ensure_py_spy())
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = "serving-profile-beryl" + ("-as-deployed" if args.as_deployed else "")
    svg = out / f"{stem}.svg"
    seconds, flame_seconds = max(int(args.duration), 3), 5
    with running(peer) as process:
        loader.run(peer.url, body, args.connections, WARMUP_S)
        workers = worker_pids(process.pid) or [process.pid]  # --workers 1: the server works
        raws = [out / f"{stem}-worker{i + 1}.txt" for i in range(len(workers))]
        load = loader.start(peer.url, body, args.connections, seconds + flame_seconds + 3)
        time.sleep(1)
        pairs = zip(raws, workers, strict=True)
        for recorder in [py_spy_record(py_spy, "raw", raw, pid, seconds) for raw, pid in pairs]:
            recorder.wait()
        busy = [summarize_profile([raw], cpu_ms)["samples"] for raw in raws]
        busiest = workers[busy.index(max(busy))]
        py_spy_record(py_spy, "flamegraph", svg, busiest, flame_seconds).wait()
        load.communicate()
    summary = summarize_profile(raws, cpu_ms)
    summary.update(
        {"raw": [str(r) for r in raws], "flamegraph": str(svg), "busy_samples_per_worker": busy}
    )
    return summary


def py_spy_record(
    py_spy: str, fmt: str, path: Path, pid: int, seconds: int
) -> subprocess.Popen[bytes]:
    argv = [py_spy, "record", "-r", "200", "-d", str(seconds), "-f", fmt, "-o", str(path)]
    return subprocess.Popen(
        [*argv, "--pid", str(pid)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )


def profile_lines(profile: dict[str, Any]) -> list[str]:
    lines = [
        f"Beryl under load: {profile['cpu_ms_per_request']:.3f} ms of server CPU per request "
        f"(unprofiled); {profile['samples']} busy samples over the workers "
        f"{profile['busy_samples_per_worker']}; flame graph {profile['flamegraph']}",
        "  self time by library:",
    ]
    for key, title in (
        ("self_by_library", None),
        ("inclusive_by_library", "  inclusive time by library (a sample counts once per library):"),
        ("self_by_function", "  self time by function:"),
        ("beryl_inclusive", "  inclusive time of Beryl's functions:"),
        ("inclusive_by_function", "  inclusive time by function (below the loop's dispatch):"),
    ):
        if title:
            lines.append(title)
        lines += [
            f"    {row['share'] * 100:5.1f}%  {row['us_per_request']:7.1f} µs/req  {row['name']}"
            for row in profile[key]
        ]
    return lines
