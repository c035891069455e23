"""What both benchmark runners need: paths, printing, commands, ports, servers, JSON, the machine.

Standard library only at import (httpx is imported where a server is waited for), so a runner
starts without Beryl's dependencies loaded.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
CACHE = REPO / "benchmarks" / ".cache"  # git-ignored, like RESULTS
RESULTS = REPO / "benchmarks" / "results"
# Library versions in every result's machine section (both runners alike).
LIBRARIES = (
    "beryl",
    "fastapi",
    "starlette",
    "uvicorn",
    "h11",
    "httptools",
    "uvloop",
    "pydantic",
    "prometheus-client",
    "scikit-learn",
    "numpy",
    "pandas",
    "scipy",
    "pyarrow",
    "httpx",
)


# -- printing, commands, files --------------------------------------------------------------------
def say(text: str = "") -> None:
    """Print a line at once: a benchmark's progress shows while it runs."""
    print(text, flush=True)


def run_checked(argv: list[str], env: dict[str, str] | None = None) -> str:
    """Run a command; on failure raise with the end of its output."""
    done = subprocess.run(argv, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        tail = (done.stdout + done.stderr)[-3000:]
        raise RuntimeError(f"{' '.join(argv)} failed ({done.returncode}):\n{tail}")
    return done.stdout


def write_json(path: Path, data: Any) -> Path:
    """``data`` as indented JSON (what JSON cannot hold as its ``str``), folders made."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, default=str) + "\n", encoding="utf-8")
    return path


def git(*args: str) -> str:
    """The output of a read-only git command in the repository ('' when git fails)."""
    argv = ["git", "-C", str(REPO), *args]
    return subprocess.run(argv, capture_output=True, text=True, check=False).stdout.strip()


# -- servers --------------------------------------------------------------------------------------
def baseline_source(revision: str) -> Path:
    """The ``src`` folder of a git revision, unpacked once into the cache: put it first on
    ``PYTHONPATH`` to run that revision's Beryl with today's dependencies."""
    commit = run_checked(["git", "-C", str(REPO), "rev-parse", "--short", revision]).strip()
    target = CACHE / f"baseline-{commit}"
    if not (target / "src" / "beryl").is_dir():
        target.mkdir(parents=True, exist_ok=True)
        archive = subprocess.run(
            ["git", "-C", str(REPO), "archive", commit, "src"], capture_output=True, check=True
        )
        subprocess.run(["tar", "-x", "-C", str(target)], input=archive.stdout, check=True)
    return target / "src"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stop_group(process: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    """SIGTERM to the server's own process group (master and workers), SIGKILL if it lingers."""
    pgid = process.pid  # start_new_session: the server leads its own group
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and _group_alive(pgid):
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=0.2)
    if _group_alive(pgid):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)
    process.wait(timeout=10)


def _wait_ready(
    name: str, url: str, process: subprocess.Popen[bytes], log: Path, timeout: float
) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{name} exited early:\n{log.read_text()[-3000:]}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=2).status_code == 200:
                return
        time.sleep(0.2)
    raise RuntimeError(f"{name} not ready after {timeout:.0f} s:\n{log.read_text()[-3000:]}")


@contextlib.contextmanager
def server(
    name: str,
    argv: list[str],
    ready_url: str,
    log: Path,
    *,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    timeout: float = 180.0,
) -> Iterator[subprocess.Popen[bytes]]:
    """Start a server in its own process group (output to ``log``, ``env`` over the current
    environment), wait until ``ready_url`` answers 200, stop the whole group afterwards."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("wb") as sink:
        process = subprocess.Popen(
            argv,
            env={**os.environ, **(env or {})},
            stdout=sink,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            start_new_session=True,
        )
        try:
            _wait_ready(name, ready_url, process, log, timeout)
            yield process
        finally:
            stop_group(process)


# -- the machine and the code measured ------------------------------------------------------------
def versions(names: Sequence[str]) -> dict[str, str | None]:
    """Installed version of each distribution in this interpreter (None when absent)."""
    out: dict[str, str | None] = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def _proc_field(path: str, key: str) -> str | None:
    with contextlib.suppress(OSError), open(path, encoding="utf-8") as handle:
        for line in handle:
            if line.startswith(key):
                return line.split(":", 1)[1].strip()
    return None


def source_state() -> dict[str, Any]:
    """The commit measured, and whether src/ differed from it (read-only git calls)."""
    return {
        "commit": git("rev-parse", "HEAD") or None,
        "src_modified": bool(git("status", "--porcelain", "--", "src")),
    }


def machine_info(load_at_start: Sequence[float]) -> dict[str, Any]:
    """CPU, cores, memory, Python, library versions, Beryl's commit, the load when the run began.

    Both runners write this one set of keys. It holds every key that either wrote before, so
    earlier results of each still compare key for key; the CPU, the load and the versions
    therefore appear twice, under data.json's names and under serving.json's (the last three).
    """
    cpu = _proc_field("/proc/cpuinfo", "model name") or platform.processor() or "unknown"
    memory_kb = (_proc_field("/proc/meminfo", "MemTotal") or "unknown").split()[0]
    libraries = versions(LIBRARIES)
    load = list(load_at_start)
    python = platform.python_version()
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(int(memory_kb) / 1024**2, 1) if memory_kb.isdigit() else None,
        "platform": platform.platform(),
        "python": python,
        "libraries": libraries,
        "beryl_commit": git("log", "-1", "--format=%H %s"),
        "loadavg_at_start": load,
        # serving.json's names for the CPU and the load; data.json's for the versions
        "cpu_model": cpu,
        "load_average_at_start": load,
        "versions": {"python": python} | {k: v or "not installed" for k, v in libraries.items()},
    }
