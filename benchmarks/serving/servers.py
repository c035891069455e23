"""The peers and how each starts: Beryl as shipped (and from an earlier revision), MLflow in a venv
of its own, and the two uvicorn apps in ``peers/``; what HTTP stack each one's uvicorn picks.

The ``-granian`` peers serve Beryl's app (the factory every ``beryl serve`` worker runs) and the
bare ASGI app with granian, a server written in Rust, to see what another server would give:
granian is installed (without dependencies: Beryl's venv has its click and uvloop) into
``benchmarks/.cache/granian`` and found through ``PYTHONPATH``."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.common import (
    CACHE,
    baseline_source,
    free_port,
    run_checked,
    say,
    server,
    versions,
)
from benchmarks.serving.workspace import WORK, Model

HERE = Path(__file__).resolve().parent
MLFLOW_VENV = CACHE / "mlflow-venv"
GRANIAN = CACHE / "granian"
GRANIAN_REQUIREMENT = "granian>=2.5"
NODELAY = HERE / "nodelay"  # sitecustomize.py: the uvicorn#3149 work-around, for the other peers
PEER_NAMES = ("beryl", "mlflow", "plain-fastapi", "bare-asgi", "beryl-granian", "bare-asgi-granian")
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


# -- venvs and the MLflow model -------------------------------------------------------------------
def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def base_python() -> str:
    """The interpreter behind Beryl's venv: peers' venvs get the same Python version."""
    return str(getattr(sys, "_base_executable", sys.executable))


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
    same = [f"{name}=={version}" for name, version in versions(SAME_AS_BERYL).items() if version]
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


def mlflow_versions(python: Path | None) -> dict[str, Any] | None:
    """The libraries of MLflow's venv, for the JSON (None when MLflow was not run)."""
    if python is None:
        return None
    code = (
        "import json, sys\nfrom importlib import metadata\n"
        "print(json.dumps({n: metadata.version(n) for n in sys.argv[1:]}))"
    )
    data: dict[str, Any] = json.loads(run_checked([str(python), "-c", code, *MLFLOW_LIBRARIES]))
    return data


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
    server: str = "uvicorn"  # or "granian"


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


def ensure_granian() -> Path:
    """granian installed into ``GRANIAN`` (once), without its dependencies."""
    stamp = GRANIAN / ".bench-requirements"
    if not (stamp.exists() and stamp.read_text() == GRANIAN_REQUIREMENT):
        say(f"setup: installing {GRANIAN_REQUIREMENT} into {GRANIAN}")
        pip = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--upgrade"]
        run_checked([*pip, "--target", str(GRANIAN), GRANIAN_REQUIREMENT])
        stamp.write_text(GRANIAN_REQUIREMENT)
    return GRANIAN


def granian_peer(name: str, target: str, workers: int, env: dict[str, str]) -> Peer:
    """``target`` (``module:factory`` or ``module:app``) served by granian with uvloop."""
    port = free_port()
    argv = [sys.executable, "-m", "granian", "--interface", "asgi", "--loop", "uvloop", "--no-ws"]
    argv += ["--host", "127.0.0.1", "--port", str(port), "--workers", str(workers)]
    argv += ["--log-level", "warning", *(["--factory"] if name == "beryl-granian" else [])]
    path = os.pathsep.join([str(ensure_granian()), str(HERE / "peers")])
    return Peer(
        name,
        [*argv, target],
        f"http://127.0.0.1:{port}/prediction",
        f"http://127.0.0.1:{port}/health",
        env={**env, "PYTHONPATH": path},
        note=f"granian --interface asgi --loop uvloop {target}",
        server="granian",
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
    makers["beryl-granian"] = lambda: granian_peer(
        "beryl-granian",
        "beryl.api.server:app_from_environment",
        workers,
        {"BERYL_CONFIG": str(model.config)},
    )
    makers["bare-asgi-granian"] = lambda: granian_peer(
        "bare-asgi-granian", "bare_asgi:app", workers, {"BENCH_LINEAR_MODEL": str(linear)}
    )
    if mlflow is not None:
        makers["mlflow"] = lambda: mlflow_peer(*mlflow, workers)
    peers = [makers[name]() for name in names]
    if baseline is not None:
        peers.insert(1, beryl_peer(model, workers, baseline))
    for peer in peers:
        peer.stack = uvicorn_stack(peer.python) if peer.server == "uvicorn" else granian_stack()
        if peer.server == "uvicorn" and not peer.name.startswith("beryl"):  # it sets it itself
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


def granian_stack() -> dict[str, Any]:
    from importlib import metadata

    env = {**os.environ, "PYTHONPATH": str(GRANIAN)}
    granian = run_checked([sys.executable, "-m", "granian", "--version"], env).split()[-1]
    return {"server": "granian", "granian": granian, "loop_version": metadata.version("uvloop")}


def stack_label(stack: dict[str, Any]) -> str:
    if stack.get("server") == "granian":
        return f"granian {stack['granian']}, its own HTTP parser, uvloop {stack['loop_version']}"
    http = f"{stack['http']} {stack['http_version'] or ''}".strip()
    loop = f"{stack['loop']} {stack['loop_version'] or ''}".strip()
    return f"uvicorn {stack['uvicorn']}, {http}, {loop}"


def stack_notes(peers: list[Peer]) -> list[str]:
    """One line per peer: its uvicorn stack and TCP_NODELAY source; a warning when stacks differ."""
    lines = []
    for peer in peers:
        if peer.server == "granian":
            lines.append(f"{peer.name}: {stack_label(peer.stack)}")
            continue
        nodelay = (
            "TCP_NODELAY from nodelay/sitecustomize.py"
            if peer.nodelay_workaround
            else "TCP_NODELAY set by `beryl serve` itself (no work-around)"
            if peer.name.startswith("beryl")
            else "no TCP_NODELAY work-around"
        )
        lines.append(f"{peer.name}: {stack_label(peer.stack)}; {nodelay}")
    kinds = {(p.stack["http"], p.stack["loop"]) for p in peers if p.server == "uvicorn"}
    if len(kinds) > 1:
        lines.append("WARNING: the peers do not run the same uvicorn HTTP parser and event loop")
    else:
        lines.append("every peer runs the same uvicorn HTTP parser and event loop")
    return lines


def running(peer: Peer) -> contextlib.AbstractContextManager[subprocess.Popen[bytes]]:
    """Start the peer in its own process group, wait until it answers, stop it afterwards."""
    log = WORK / "logs" / f"{peer.name}.log"
    return server(peer.name, peer.argv, peer.ready_url, log, env=peer.env, cwd=WORK)
