"""Serving benchmark: Beryl against MLflow, a plain FastAPI endpoint and a bare ASGI ceiling.

    .venv/bin/python benchmarks/serving/run.py [--duration 10] [--connections 32] [--workers 2]
                                               [--out benchmarks/results]

Setup (idempotent, cached in benchmarks/.cache/): a demo workspace with a production model, wrk
(Debian), MLflow in its own venv with the same scikit-learn, httptools and uvloop as Beryl's (so
every peer's uvicorn picks the same HTTP parser and event loop; printed per peer), the same
fitted pipeline saved as an MLflow model, and the linear coefficients for the bare ASGI peer.
Beryl runs as shipped; the other peers get ``nodelay/sitecustomize.py``, the work-around for
uvicorn's multi-worker TCP_NODELAY bug that ``beryl serve`` does not need. Then, one server at
a time (2 cores: never two under load at once), each peer is started with the same number of
workers, checked against Beryl's probabilities (1e-9), warmed up, and loaded with wrk:
single-record requests at ``--connections``, then 1,000-record requests at
``--batch-connections``.

Prints both tables and the targets (Beryl ≥ 20× MLflow's requests/s, ≥ 0.5× bare ASGI's, p99 ≤
0.1× MLflow's) and writes ``<out>/serving.json``. When a target is missed (or with
``--profile always``) Beryl is profiled under the same load with py-spy.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
CACHE = REPO / "benchmarks" / ".cache"
WORK = CACHE / "serving"
WORKSPACE = WORK / "workspace"
MLFLOW_VENV = CACHE / "mlflow-venv"
TOOLS_VENV = CACHE / "tools"
NODELAY = HERE / "nodelay"  # sitecustomize.py: the uvicorn#3149 work-around, for the other peers
PEER_NAMES = ("beryl", "mlflow", "plain-fastapi", "bare-asgi")
WARMUP_S = 2.0
VERIFY_RECORDS = 50
TOLERANCE = 1e-9
BATCH_RECORDS = 1000
BALANCED = 0.75  # largest share of the server's CPU one process may take in a 2-worker run
ATTEMPTS = 3
LOAD_AT_START: list[float] = []  # os.getloadavg() when main() started, for the JSON
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
)
MLFLOW_LIBRARIES = (
    "mlflow",
    "uvicorn",
    "h11",
    "httptools",
    "uvloop",
    "fastapi",
    "scikit-learn",
    "numpy",
    "pandas",
)
SAME_AS_BERYL = ("scikit-learn", "httptools", "uvloop")  # installed into MLflow's venv alike


# -- small helpers --------------------------------------------------------------------------------
def say(text: str) -> None:
    print(text, flush=True)


def run_checked(argv: list[str], env: dict[str, str] | None = None) -> str:
    """Run a command; on failure raise with the end of its output."""
    done = subprocess.run(argv, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        tail = (done.stdout + done.stderr)[-3000:]
        raise RuntimeError(f"{' '.join(argv)} failed ({done.returncode}):\n{tail}")
    return done.stdout


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def base_python() -> str:
    """The interpreter behind Beryl's venv: peers' venvs get the same Python version."""
    return str(getattr(sys, "_base_executable", sys.executable))


def write_json(path: Path, data: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n")
    return path


# -- setup: workspace, model, bodies --------------------------------------------------------------
@dataclass(frozen=True)
class Model:
    """The production model of the benchmark workspace."""

    config: Path
    version: str
    pickle: Path
    positive_label: Any
    features: list[str]
    id_columns: list[str]


def ensure_cache() -> None:
    WORK.mkdir(parents=True, exist_ok=True)  # benchmarks/.cache/ is git-ignored by the repo


def _production(config_path: Path) -> str | None:
    from beryl import config as config_module
    from beryl.errors import BerylError
    from beryl.registry import Registry

    if not config_path.exists():
        return None
    try:
        registry = Registry(config_module.load(config_path).model_folder)
        version = registry.production()
        return version if version is not None and registry.verify(version) else None
    except BerylError:
        return None


def build_workspace(config_path: Path) -> None:
    """A demo workspace and one pass of the loop, so a model is in production."""
    from beryl import config as config_module
    from beryl.demo import init_workspace
    from beryl.pipeline import run_pass

    shutil.rmtree(WORKSPACE, ignore_errors=True)
    init_workspace(WORKSPACE)
    data = json.loads(config_path.read_text())
    data["package_index_url"] = "http://127.0.0.1:9"  # never ask a real index
    write_json(config_path, data)
    result = run_pass(config_module.load(config_path), call_api=False, report=False)
    if not result.promoted:
        raise RuntimeError(f"the demo pass promoted no model: {result.reason}")


def ensure_workspace() -> Model:
    from beryl import config as config_module
    from beryl.registry import Registry

    config_path = WORKSPACE / "config.json"
    if _production(config_path) is None:
        say(f"setup: building the demo workspace in {WORKSPACE}")
        build_workspace(config_path)
    registry = Registry(config_module.load(config_path).model_folder)
    version = registry.require_production()
    schema = registry.card(version).schema
    return Model(
        config=config_path,
        version=version,
        pickle=registry.model_path(version),
        positive_label=schema["positive_label"],
        features=[*schema["numeric"], *schema["categorical"]],
        id_columns=list(schema["id_columns"]),
    )


def load_pipeline(model: Model) -> Any:
    """The fitted pipeline, unpickled by Beryl's registry (sha256 checked against the card)."""
    from beryl import config as config_module
    from beryl.registry import Registry

    return Registry(config_module.load(model.config).model_folder).pipeline(model.version)


def linear_spec(pipeline: Any, model: Model) -> dict[str, Any]:
    """Impute/scale/coef numbers of a numeric-only pipeline, for the bare ASGI peer."""
    columns, logistic = (step for _, step in pipeline.steps)
    names: list[str] = []
    fill: list[float] = []
    mean: list[float] = []
    scale: list[float] = []
    for _name, block, selection in columns.transformers_:
        if isinstance(block, str) or not len(selection):
            continue
        kinds = [type(step).__name__ for _, step in block.steps]
        if kinds != ["SimpleImputer", "StandardScaler"]:
            raise RuntimeError(f"bare ASGI peer: only numeric features are hard-coded, not {kinds}")
        imputer, scaler = (step for _, step in block.steps)
        names += list(selection)
        fill += [float(v) for v in imputer.statistics_]
        mean += [float(v) for v in scaler.mean_] if scaler.with_mean else [0.0] * len(selection)
        scale += [float(v) for v in scaler.scale_] if scaler.with_std else [1.0] * len(selection)
    classes = [c.item() if hasattr(c, "item") else c for c in logistic.classes_]
    return {
        "features": names,
        "fill": fill,
        "mean": mean,
        "scale": scale,
        "coef": [float(v) for v in logistic.coef_[0]],
        "intercept": float(logistic.intercept_[0]),
        "classes": classes,
        "positive_index": classes.index(model.positive_label),
        "model_version": model.version,
    }


def _plain_value(value: Any) -> Any:
    if isinstance(value, float) and value.is_integer():
        return int(value)  # what a client sends: 300, not 300.0
    return value.item() if hasattr(value, "item") else value


def sample_records(count: int, seed: int) -> list[dict[str, Any]]:
    """Demo-schema records (corporation and the numeric features), no missing values."""
    from beryl.demo import generate

    frame = generate(count, seed, missing_rate=0.0).drop(columns=["exited"])
    return [
        {key: _plain_value(value) for key, value in row.items()}
        for row in frame.to_dict(orient="records")
    ]


@dataclass(frozen=True)
class Bodies:
    """Request bodies on disk, for wrk: Beryl's format and MLflow's, single and batch."""

    single: Path
    single_mlflow: Path
    batch: Path
    batch_mlflow: Path
    verify: list[dict[str, Any]]

    def path(self, kind: str, mlflow: bool) -> Path:
        if kind == "single":
            return self.single_mlflow if mlflow else self.single
        return self.batch_mlflow if mlflow else self.batch


def write_bodies(folder: Path) -> Bodies:
    single = sample_records(1, seed=11)
    batch = sample_records(BATCH_RECORDS, seed=12)

    def both(name: str, records: list[dict[str, Any]]) -> tuple[Path, Path]:
        ours = write_json(folder / f"{name}.json", {"records": records})
        theirs = write_json(folder / f"{name}-mlflow.json", {"dataframe_records": records})
        return ours, theirs

    one, one_mlflow = both("single", single)
    many, many_mlflow = both("batch", batch)
    return Bodies(one, one_mlflow, many, many_mlflow, sample_records(VERIFY_RECORDS, seed=13))


# -- setup: tools and peers -----------------------------------------------------------------------
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


def ensure_venv(venv: Path, requirements: list[str]) -> Path:
    """A venv holding ``requirements`` (re-installed only when the list changes)."""
    python = venv / "bin" / "python"
    stamp = venv / ".bench-requirements"
    wanted = "\n".join(requirements)
    if python.exists() and stamp.exists() and stamp.read_text() == wanted:
        return python
    say(f"setup: installing {', '.join(requirements)} into {venv}")
    if not python.exists():
        run_checked([base_python(), "-m", "venv", str(venv)])
    run_checked([str(python), "-m", "pip", "install", "--quiet", "--upgrade", "pip"])
    run_checked([str(python), "-m", "pip", "install", "--quiet", *requirements])
    stamp.write_text(wanted)
    return python


def mlflow_requirements() -> list[str]:
    """requirements-mlflow.txt plus Beryl's versions of scikit-learn (so the pickle loads) and of
    uvicorn's optional HTTP parser and event loop (so both servers run the same uvicorn stack)."""
    lines = (HERE / "requirements-mlflow.txt").read_text().splitlines()
    pinned = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    same = [f"{name}=={version}" for name, version in _versions(SAME_AS_BERYL).items() if version]
    return [*pinned, *same]


def ensure_mlflow_model(python: Path, model: Model) -> Path:
    """The same pickled pipeline saved with ``mlflow.sklearn.save_model`` (in MLflow's venv)."""
    target = WORK / "mlflow-model"
    stamp = WORK / "mlflow-model.sha256"
    digest = sha256(model.pickle)
    if (target / "MLmodel").exists() and stamp.exists() and stamp.read_text() == digest:
        return target
    say("setup: saving the production pipeline as an MLflow model")
    script = str(HERE / "peers" / "mlflow_save.py")
    run_checked([str(python), script, str(model.pickle), str(target)], mlflow_env(python))
    stamp.write_text(digest)
    return target


def mlflow_env(python: Path) -> dict[str, str]:
    """MLflow's venv first on PATH (it starts ``uvicorn`` by name); no telemetry."""
    path = f"{python.parent}{os.pathsep}{os.environ.get('PATH', '')}"
    return {
        **os.environ,
        "PATH": path,
        "VIRTUAL_ENV": str(python.parent.parent),
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "DO_NOT_TRACK": "true",
    }


def ensure_py_spy() -> Path:
    python = ensure_venv(TOOLS_VENV, ["py-spy"])
    return python.parent / "py-spy"


# -- peers: how each server starts ----------------------------------------------------------------
@dataclass
class Peer:
    name: str
    argv: list[str]
    url: str
    ready_url: str
    env: dict[str, str] = field(default_factory=dict)
    mlflow_format: bool = False
    note: str = ""
    python: str = sys.executable  # the interpreter whose uvicorn serves this peer
    nodelay_workaround: bool = False
    stack: dict[str, Any] = field(default_factory=dict)


def beryl_peer(model: Model, workers: int, baseline: str | None = None) -> Peer:
    """``beryl serve`` as shipped; with ``baseline``, the same command from that git revision's
    source (on PYTHONPATH), to measure a change against the code before it in one run."""
    port = free_port()
    argv = [sys.executable, "-m", "beryl", "--config", str(model.config), "serve"]
    env = {}
    if baseline is not None:
        env["PYTHONPATH"] = str(baseline_source(baseline))
    return Peer(
        "beryl" if baseline is None else f"beryl@{baseline}",
        [*argv, "--port", str(port), "--workers", str(workers)],
        f"http://127.0.0.1:{port}/prediction",
        f"http://127.0.0.1:{port}/ready",
        env=env,
        note="beryl serve, as shipped (its own uvicorn settings)"
        + ("" if baseline is None else f", from the source of {baseline}"),
    )


def baseline_source(revision: str) -> Path:
    """The ``src`` folder of a git revision, unpacked once into the cache."""
    commit = run_checked(["git", "-C", str(REPO), "rev-parse", "--short", revision]).strip()
    target = CACHE / f"baseline-{commit}"
    if not (target / "src" / "beryl").is_dir():
        target.mkdir(parents=True, exist_ok=True)
        archive = subprocess.run(
            ["git", "-C", str(REPO), "archive", commit, "src"], capture_output=True, check=True
        )
        subprocess.run(["tar", "-x", "-C", str(target)], input=archive.stdout, check=True)
    return target / "src"


def mlflow_peer(python: Path, model_dir: Path, workers: int) -> Peer:
    mlflow = str(python.parent / "mlflow")
    help_text = run_checked([mlflow, "models", "serve", "--help"], mlflow_env(python))
    port = free_port()
    argv = [mlflow, "models", "serve", "-m", str(model_dir), "--port", str(port)]
    if "--host" in help_text:
        argv += ["--host", "127.0.0.1"]
    argv += ["--env-manager", "local"] if "--env-manager" in help_text else ["--no-conda"]
    env = {"MLFLOW_MODELS_WORKERS": str(workers)}
    if "--workers" in help_text:
        argv += ["--workers", str(workers)]
    return Peer(
        "mlflow",
        argv,
        f"http://127.0.0.1:{port}/invocations",
        f"http://127.0.0.1:{port}/ping",
        env={**mlflow_env(python), **env},
        mlflow_format=True,
        python=str(python),
        note="mlflow models serve --env-manager local (pyfunc predict_fn=predict_proba)",
    )


def uvicorn_peer(
    name: str, module: str, workers: int, env: dict[str, str], extra: list[str]
) -> Peer:
    port = free_port()
    argv = [sys.executable, "-m", "uvicorn", "--app-dir", str(HERE / "peers"), f"{module}:app"]
    argv += ["--host", "127.0.0.1", "--port", str(port), "--workers", str(workers), *extra]
    return Peer(
        name,
        argv,
        f"http://127.0.0.1:{port}/prediction",
        f"http://127.0.0.1:{port}/health",
        env=env,
        note=f"uvicorn {module}:app {' '.join(extra)}".strip(),
    )


def nodelay_env(enabled: bool) -> dict[str, str]:
    """PYTHONPATH that loads ``nodelay/sitecustomize.py`` in a peer's server processes."""
    if not enabled:
        return {}
    rest = os.environ.get("PYTHONPATH")
    return {"PYTHONPATH": f"{NODELAY}{os.pathsep}{rest}" if rest else str(NODELAY)}


def build_peers(
    names: list[str],
    model: Model,
    workers: int,
    mlflow: tuple[Path, Path] | None,
    linear: Path,
    nodelay: bool,
    baseline: str | None = None,
) -> list[Peer]:
    model_env = {
        "BENCH_MODEL": str(model.pickle),
        "BENCH_MODEL_VERSION": model.version,
        "BENCH_POSITIVE_LABEL": json.dumps(model.positive_label),
    }
    makers: dict[str, Callable[[], Peer]] = {
        "beryl": lambda: beryl_peer(model, workers),
        "plain-fastapi": lambda: uvicorn_peer(
            "plain-fastapi", "plain_fastapi", workers, model_env, []
        ),
        "bare-asgi": lambda: uvicorn_peer(
            "bare-asgi",
            "bare_asgi",
            workers,
            {"BENCH_LINEAR_MODEL": str(linear)},
            ["--no-access-log", "--log-level", "warning"],
        ),
    }
    if mlflow is not None:
        makers["mlflow"] = lambda: mlflow_peer(*mlflow, workers)
    peers = [makers[name]() for name in names]
    if baseline is not None:
        peers.insert(1, beryl_peer(model, workers, baseline))
    for peer in peers:
        peer.stack = uvicorn_stack(peer.python)
        if not peer.name.startswith("beryl"):  # `beryl serve` sets TCP_NODELAY itself
            peer.nodelay_workaround = nodelay
            peer.env.update(nodelay_env(nodelay))
    return peers


# What uvicorn's "auto" HTTP protocol and event loop resolve to in an interpreter: every peer
# (Beryl, MLflow and both uvicorn peers) runs uvicorn with the defaults, http="auto", loop="auto".
_STACK_PROBE = """
import json
from importlib import metadata
from uvicorn.loops.auto import auto_loop_factory
from uvicorn.protocols.http.auto import AutoHTTPProtocol

def version(name):
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None

http = AutoHTTPProtocol.__module__.rsplit(".", 1)[-1].removesuffix("_impl")
loop = auto_loop_factory().__module__.split(".")[0]
print(json.dumps({"uvicorn": version("uvicorn"), "http": http, "http_version": version(http),
                  "loop": loop, "loop_version": version(loop) if loop == "uvloop" else None}))
"""


def uvicorn_stack(python: str) -> dict[str, Any]:
    """uvicorn's version and the HTTP parser and event loop it picks in ``python``."""
    data: dict[str, Any] = json.loads(run_checked([python, "-c", _STACK_PROBE]))
    return data


def stack_label(stack: dict[str, Any]) -> str:
    http = f"{stack['http']} {stack['http_version'] or ''}".strip()
    loop = f"{stack['loop']} {stack['loop_version'] or ''}".strip()
    return f"uvicorn {stack['uvicorn']}, {http}, {loop}"


def stack_notes(peers: list[Peer]) -> list[str]:
    """One line per peer: its uvicorn stack and TCP_NODELAY source; a warning when stacks differ."""
    lines = []
    for peer in peers:
        nodelay = (
            "TCP_NODELAY from nodelay/sitecustomize.py"
            if peer.nodelay_workaround
            else "TCP_NODELAY set by `beryl serve` itself (no work-around)"
            if peer.name.startswith("beryl")
            else "no TCP_NODELAY work-around"
        )
        lines.append(f"{peer.name}: {stack_label(peer.stack)}; {nodelay}")
    kinds = {(p.stack["http"], p.stack["loop"]) for p in peers}
    if len(kinds) > 1:
        lines.append("WARNING: the peers do not run the same uvicorn HTTP parser and event loop")
    else:
        lines.append("every peer runs the same uvicorn HTTP parser and event loop")
    return lines


# -- running one server ---------------------------------------------------------------------------
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


def wait_ready(peer: Peer, process: subprocess.Popen[bytes], log: Path, timeout: float) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{peer.name} exited early:\n{log.read_text()[-3000:]}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(peer.ready_url, timeout=2).status_code == 200:
                return
        time.sleep(0.2)
    raise RuntimeError(f"{peer.name} not ready after {timeout:.0f} s:\n{log.read_text()[-3000:]}")


@contextlib.contextmanager
def running(peer: Peer, logs: Path, timeout: float = 180.0) -> Iterator[subprocess.Popen[bytes]]:
    """Start the peer in its own process group, wait until it answers, stop it afterwards."""
    logs.mkdir(parents=True, exist_ok=True)
    log = logs / f"{peer.name}.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            peer.argv,
            env={**os.environ, **peer.env},
            stdout=sink,
            stderr=subprocess.STDOUT,
            cwd=WORK,
            start_new_session=True,
        )
        try:
            wait_ready(peer, process, log, timeout)
            yield process
        finally:
            stop_group(process)


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


def group_cpu_seconds(pgid: int) -> float:
    return sum(group_cpu(pgid).values())


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


# -- checking answers -----------------------------------------------------------------------------
@dataclass(frozen=True)
class Answer:
    predictions: list[Any]
    probabilities: list[float]


def parse_answer(peer: Peer, payload: Any, classes: list[Any], positive: int) -> Answer:
    if not peer.mlflow_format:
        return Answer(list(payload["predictions"]), [float(p) for p in payload["probabilities"]])
    pairs = payload["predictions"]  # predict_proba: one [p0, p1] per record
    probabilities = [float(pair[positive]) for pair in pairs]
    return Answer([classes[int(pair[1] > pair[0])] for pair in pairs], probabilities)


def ask(peer: Peer, records: list[dict[str, Any]], classes: list[Any], positive: int) -> Answer:
    """The peer's answer for ``records``: one request per record, then all in one request."""
    import httpx

    key = "dataframe_records" if peer.mlflow_format else "records"
    predictions: list[Any] = []
    probabilities: list[float] = []
    with httpx.Client(timeout=30) as client:
        for chunk in [*([record] for record in records), records]:
            response = client.post(peer.url, json={key: chunk})
            response.raise_for_status()
            answer = parse_answer(peer, response.json(), classes, positive)
            predictions += answer.predictions
            probabilities += answer.probabilities
    return Answer(predictions, probabilities)


def compare(name: str, answer: Answer, reference: Answer) -> dict[str, Any]:
    """Probabilities within 1e-9 and equal predictions, record by record."""
    gaps = [abs(a - b) for a, b in zip(answer.probabilities, reference.probabilities, strict=True)]
    same = answer.predictions == reference.predictions
    ok = same and max(gaps) <= TOLERANCE
    return {
        "peer": name,
        "records": VERIFY_RECORDS,
        "answers": len(gaps),
        "max_abs_probability_gap": max(gaps),
        "predictions_equal": same,
        "ok": ok,
    }


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


# -- the benchmark --------------------------------------------------------------------------------
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


def bench_peer(
    peer: Peer,
    bodies: Bodies,
    args: argparse.Namespace,
    loader: LoadGenerator,
    reference: dict[str, Any],
) -> PeerRun:
    """Start one peer, check its answers against Beryl's, measure both tables, stop it."""
    say(f"\n== {peer.name}: {' '.join(peer.argv[1:4])} ...")
    with running(peer, WORK / "logs") as process:
        answer = ask(peer, bodies.verify, reference["classes"], reference["positive"])
        if peer.name == "beryl":
            reference["answer"] = answer
        check = compare(peer.name, answer, reference["answer"])
        mark = "ok" if check["ok"] else "MISMATCH"
        say(
            f"verify {peer.name:<14} {VERIFY_RECORDS} records, 1-record and 50-record requests: "
            f"max |Δp| = {check['max_abs_probability_gap']:.2e}, "
            f"predictions equal: {check['predictions_equal']} -> {mark}"
        )
        single = bodies.path("single", peer.mlflow_format)
        batch = bodies.path("batch", peer.mlflow_format)
        one = measure(loader, process, peer.url, single, args.connections, args.duration)
        say(_load_line("1 record", one))
        many = measure(loader, process, peer.url, batch, args.batch_connections, args.duration)
        say(_load_line(f"{BATCH_RECORDS} records", many))
    return PeerRun(peer.name, peer.note, check, one, many)


def _load_line(label: str, load: Load) -> str:
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
        f"{'peer':<14} {'req/s':>10} {'p50 ms':>9} {'p99 ms':>9} {'CPU ms/req':>11} "
        f"{'Beryl÷peer req/s':>17} {'Beryl÷peer p99':>15}"
    ]
    for run in runs:
        load: Load = getattr(run, kind)
        lines.append(
            f"{run.peer:<14} {load.requests_per_s:>10.1f} {load.p50_ms:>9.2f} {load.p99_ms:>9.2f} "
            f"{load.server_cpu_ms_per_request or 0:>11.3f} "
            f"{beryl.requests_per_s / load.requests_per_s:>16.2f}x "
            f"{beryl.p99_ms / load.p99_ms:>14.3f}x"
        )
    return lines


def targets(runs: list[PeerRun]) -> list[dict[str, Any]]:
    """The issue's three targets, on the single-record table."""
    by_name = {run.peer: run.single for run in runs}
    beryl = by_name["beryl"]
    mlflow = by_name.get("mlflow")
    bare = by_name.get("bare-asgi")
    specs = [
        ("Beryl req/s >= 20x MLflow req/s", mlflow, ">=", 20.0, "requests_per_s"),
        ("Beryl req/s >= 0.5x bare-ASGI req/s", bare, ">=", 0.5, "requests_per_s"),
        ("Beryl p99 <= 0.1x MLflow p99", mlflow, "<=", 0.1, "p99_ms"),
    ]
    out = []
    for name, peer, op, bound, metric in specs:
        ratio = None if peer is None else getattr(beryl, metric) / getattr(peer, metric)
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


# -- profile --------------------------------------------------------------------------------------
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
    with running(peer, WORK / "logs") as process:
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


# -- report ---------------------------------------------------------------------------------------
def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _versions(names: tuple[str, ...]) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def _mlflow_versions(python: Path | None) -> dict[str, Any] | None:
    if python is None:
        return None
    code = (
        "import json, sys\nfrom importlib import metadata\n"
        "print(json.dumps({n: metadata.version(n) for n in sys.argv[1:]}))"
    )
    data: dict[str, Any] = json.loads(run_checked([str(python), "-c", code, *MLFLOW_LIBRARIES]))
    return data


def source_state() -> dict[str, Any]:
    """The commit measured, and whether src/ differed from it (read-only git calls)."""
    head = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True, check=False
    )
    dirty = subprocess.run(
        ["git", "-C", str(REPO), "status", "--porcelain", "--", "src"],
        capture_output=True,
        text=True,
        check=False,
    )
    return {"commit": head.stdout.strip() or None, "src_modified": bool(dirty.stdout.strip())}


def machine_info(wrk: str | None, mlflow_python: Path | None) -> dict[str, Any]:
    wrk_version = None
    if wrk:
        done = subprocess.run([wrk, "--version"], capture_output=True, text=True, check=False)
        wrk_version = (done.stdout + done.stderr).splitlines()[0]
    return {
        "cpu_model": _cpu_model(),
        "cores": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "load_average_at_start": LOAD_AT_START,
        "libraries": _versions(LIBRARIES),
        "mlflow_venv": _mlflow_versions(mlflow_python),
        "wrk": wrk_version,
    }


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


# -- main -----------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per measured run")
    parser.add_argument("--connections", type=int, default=32, help="single-record table")
    parser.add_argument("--batch-connections", type=int, default=8, help="1,000-record table")
    parser.add_argument("--workers", type=int, default=2, help="server workers of every peer")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results"))
    parser.add_argument("--peers", default=",".join(PEER_NAMES), help="comma-separated subset")
    parser.add_argument(
        "--rounds", type=int, default=3, help="repeat all peers; each figure is the median round"
    )
    parser.add_argument("--profile", choices=("auto", "always", "never"), default="auto")
    parser.add_argument("--load", choices=("auto", "python"), default="auto")
    parser.add_argument(
        "--baseline",
        default=None,
        metavar="REV",
        help="also serve Beryl from this git revision (e.g. HEAD~1): a change against before",
    )
    parser.add_argument(
        "--as-deployed",
        action="store_true",
        help="peers without the TCP_NODELAY work-around (uvicorn#3149); "
        "writes serving-as-deployed.json",
    )
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.peers.split(",") if n.strip()]
    unknown = set(names) - set(PEER_NAMES)
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    if unknown or "beryl" not in names:
        parser.error(f"--peers takes beryl plus any of {', '.join(PEER_NAMES)}")
    args.peer_names = [n for n in PEER_NAMES if n in names]  # Beryl first: the reference
    return args


@dataclass
class Setup:
    model: Model
    bodies: Bodies
    loader: LoadGenerator
    peers: list[Peer]
    mlflow_python: Path | None
    notes: list[str] = field(default_factory=list)


def setup(args: argparse.Namespace) -> Setup:
    ensure_cache()
    model = ensure_workspace()
    pipeline = load_pipeline(model)
    linear = write_json(WORK / "linear.json", linear_spec(pipeline, model))
    bodies = write_bodies(WORK / "bodies")
    wrk = None if args.load == "python" else ensure_wrk()
    loader = LoadGenerator(wrk, "--load python" if args.load == "python" else "wrk unavailable")
    notes = [] if wrk else [f"load from the Python client ({loader.name}): a lower bound"]
    mlflow = None
    mlflow_python = None
    if "mlflow" in args.peer_names:
        mlflow_python = ensure_venv(MLFLOW_VENV, mlflow_requirements())
        mlflow = (mlflow_python, ensure_mlflow_model(mlflow_python, model))
    nodelay = not args.as_deployed
    peers = build_peers(
        args.peer_names, model, args.workers, mlflow, linear, nodelay, args.baseline
    )
    if nodelay and len(peers) > 1:
        notes.append(
            "the other peers ran with benchmarks/serving/nodelay/sitecustomize.py on PYTHONPATH: "
            "TCP_NODELAY for uvicorn's multi-worker listener (Kludex/uvicorn#3149); on asyncio's "
            "loop each keep-alive answer would wait ~40 ms for a delayed ACK, uvloop sets it "
            "itself (compare --as-deployed). Beryl ran without it: `beryl serve` sets "
            "TCP_NODELAY itself"
        )
    notes += stack_notes(peers)
    return Setup(model, bodies, loader, peers, mlflow_python, notes)


def reference_for(pipeline: Any, model: Model) -> dict[str, Any]:
    classes = [c.item() if hasattr(c, "item") else c for c in pipeline.classes_]
    return {"classes": classes, "positive": classes.index(model.positive_label)}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = datetime.now(UTC).isoformat(timespec="seconds")
    LOAD_AT_START[:] = list(os.getloadavg())
    if LOAD_AT_START[0] > 0.5:
        say(f"WARNING: the machine is busy (load {LOAD_AT_START[0]:.2f}): figures will be noisy")
    ready = setup(args)
    features = ", ".join(ready.model.features)
    say(f"model {ready.model.version} ({features}); load: {ready.loader.name}")
    reference = reference_for(load_pipeline(ready.model), ready.model)
    rounds = [
        [bench_peer(p, ready.bodies, args, ready.loader, reference) for p in ready.peers]
        for _ in range(args.rounds)
    ]
    runs = median_runs(rounds)
    lines = report(runs, args, ready.loader)
    goals = targets(runs)
    lines += ["", f"Targets (single record, {args.connections} connections):"]
    lines += [*target_lines(goals), *(f"note: {note}" for note in ready.notes)]
    say("\n".join(lines))
    missed = any(t["pass"] is False for t in goals)
    profile = None
    if args.profile == "always" or (args.profile == "auto" and missed):
        say("\n== profiling Beryl under the single-record load (py-spy)")
        cpu_ms = runs[0].single.server_cpu_ms_per_request or 0.0
        profile = profile_beryl(ready.peers[0], ready.bodies.single, args, ready.loader, cpu_ms)
        say("\n".join(profile_lines(profile)))
    result = {
        "benchmark": "serving",
        "started_at": started,
        "command": [Path(sys.executable).name, *sys.argv],
        "settings": {
            "duration_s": args.duration,
            "warmup_s": WARMUP_S,
            "connections": args.connections,
            "batch_connections": args.batch_connections,
            "batch_records": BATCH_RECORDS,
            "workers": args.workers,
            "load_generator": ready.loader.name,
            "rounds": args.rounds,
            "tcp_nodelay_workaround": {p.name: p.nodelay_workaround for p in ready.peers},
        },
        "machine": machine_info(ready.loader.wrk, ready.mlflow_python),
        "source": source_state(),
        "model": {"version": ready.model.version, "features": ready.model.features},
        "peers": {run.peer: run.note for run in runs},
        "server_stacks": {p.name: p.stack for p in ready.peers},
        "verification": [run.check for run in runs],
        "results": {
            kind: [{"peer": run.peer, **asdict(getattr(run, kind))} for run in runs]
            for kind in ("single", "batch")
        },
        "rounds": [
            {kind: [{"peer": r.peer, **asdict(getattr(r, kind))} for r in one] for kind in KINDS}
            for one in rounds
        ],
        "targets": goals,
        "profile": profile,
        "notes": ready.notes,
    }
    name = "serving-as-deployed.json" if args.as_deployed else "serving.json"
    path = write_json(Path(args.out) / name, result)
    say(f"\nresults written to {path}")
    return 0 if all(run.check and run.check["ok"] for run in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
