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

Prints both tables and the targets (Beryl ≥ 20× MLflow's requests/s; ≥ 0.8× bare ASGI's, by
requests/s and by server CPU per request; p99 ≤ 0.1× MLflow's; and with the options below
reason codes and live monitoring within their budgets, granian worth the default or not) and
writes ``<out>/serving.json``. When a target is missed (or with
``--profile always``) Beryl is profiled under the same load with py-spy.

With ``--explain K`` Beryl is also measured, on the same server, with the same bodies asking for
K reason codes per record (``"explain": K``): a row ``beryl explain=K`` in both tables, whose
"Beryl÷peer" ratio is how much faster Beryl answers without reasons, and a target line: its
server CPU per single-record request within 1.2× of Beryl's without.

``--peers`` may add ``beryl-granian`` and ``bare-asgi-granian``: Beryl's app (the factory each
``beryl serve`` worker runs) and the bare ASGI app served by granian instead of uvicorn, and a
target line: granian would be worth the default at 1.3× ``beryl serve``'s requests/s with a p99
no worse.

With ``--live`` Beryl is also served with live monitoring switched off (``"live": {"enabled":
false}`` in a second config file of the same workspace): a peer ``beryl live-off`` right after
Beryl in every round, and a target line: Beryl's server CPU per single-record request, live
monitoring on (as shipped) over off, within the 5% budget.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

if not __package__:  # run as a script (`python benchmarks/serving/run.py`): find `benchmarks`
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from benchmarks.common import RESULTS, machine_info, say, source_state, write_json
from benchmarks.serving.goals import (
    LIVE_OFF,
    explain_target,
    granian_target,
    live_lines,
    live_target,
)
from benchmarks.serving.load import WARMUP_S, LoadGenerator, ensure_wrk, measure, wrk_version
from benchmarks.serving.profiling import profile_beryl, profile_lines
from benchmarks.serving.report import (
    KINDS,
    PeerRun,
    load_line,
    median_runs,
    report,
    target_lines,
    targets,
)
from benchmarks.serving.servers import (
    MLFLOW_VENV,
    PEER_NAMES,
    Peer,
    beryl_peer,
    build_peers,
    ensure_mlflow_model,
    ensure_venv,
    mlflow_requirements,
    mlflow_versions,
    running,
    stack_notes,
    uvicorn_stack,
)
from benchmarks.serving.verify import ask, ask_explained, compare, reference_for
from benchmarks.serving.workspace import (
    BATCH_RECORDS,
    VERIFY_RECORDS,
    WORK,
    Bodies,
    Model,
    ensure_cache,
    ensure_workspace,
    linear_spec,
    load_pipeline,
    write_bodies,
)


# -- one peer in one round ------------------------------------------------------------------------
def bench_peer(
    peer: Peer,
    bodies: Bodies,
    args: argparse.Namespace,
    loader: LoadGenerator,
    reference: dict[str, Any],
    features: int,
) -> list[PeerRun]:
    """Start one peer, check its answers against Beryl's, measure both tables, stop it; for
    Beryl with ``--explain K`` also both tables with K reason codes per record."""
    say(f"\n== {peer.name}: {' '.join(peer.argv[1:4])} ...")
    with running(peer) as process:
        answer = ask(peer, bodies.verify, reference["classes"], reference["positive"])
        if peer.name == "beryl":
            reference["answer"] = answer
        check = compare(peer.name, answer, reference["answer"])
        say(_verified(peer.name, check))
        single = bodies.path("single", peer.mlflow_format)
        batch = bodies.path("batch", peer.mlflow_format)
        one = measure(loader, process, peer.url, single, args.connections, args.duration)
        say(load_line("1 record", one))
        many = measure(loader, process, peer.url, batch, args.batch_connections, args.duration)
        say(load_line(f"{BATCH_RECORDS} records", many))
        runs = [PeerRun(peer.name, peer.note, check, one, many)]
        if peer.name == "beryl" and bodies.explain is not None:
            runs.append(bench_explained(peer, process, bodies, args, loader, reference, features))
    return runs


def bench_explained(
    peer: Peer,
    process: Any,
    bodies: Bodies,
    args: argparse.Namespace,
    loader: LoadGenerator,
    reference: dict[str, Any],
    features: int,
) -> PeerRun:
    """Beryl on the same server with the same bodies asking for ``bodies.explain`` reasons."""
    assert bodies.explain is not None
    name = f"beryl explain={bodies.explain}"
    answer, problems = ask_explained(peer, bodies.verify, bodies.explain, features)
    check = compare(name, answer, reference["answer"])
    check["reason_problems"] = problems[:5]
    check["ok"] = check["ok"] and not problems
    say(_verified(name, check) + (f"; reasons: {problems[0]}" if problems else ""))
    single, batch = bodies.path("single", False, True), bodies.path("batch", False, True)
    one = measure(loader, process, peer.url, single, args.connections, args.duration)
    say(load_line("1 record", one))
    many = measure(loader, process, peer.url, batch, args.batch_connections, args.duration)
    say(load_line(f"{BATCH_RECORDS} records", many))
    note = f'{peer.note} with "explain": {bodies.explain} in every body'.strip()
    return PeerRun(name, note, check, one, many)


def _verified(name: str, check: dict[str, Any]) -> str:
    mark = "ok" if check["ok"] else "MISMATCH"
    return (
        f"verify {name:<16} {VERIFY_RECORDS} records, 1-record and 50-record requests: "
        f"max |Δp| = {check['max_abs_probability_gap']:.2e}, "
        f"predictions equal: {check['predictions_equal']} -> {mark}"
    )


# -- the command ----------------------------------------------------------------------------------
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per measured run")
    parser.add_argument("--connections", type=int, default=32, help="single-record table")
    parser.add_argument("--batch-connections", type=int, default=8, help="1,000-record table")
    parser.add_argument("--workers", type=int, default=2, help="server workers of every peer")
    parser.add_argument("--out", default=str(RESULTS))
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
        "--explain",
        type=int,
        default=None,
        metavar="K",
        help="also measure Beryl with K reason codes per record (a row 'beryl explain=K')",
    )
    parser.add_argument(
        "--live",
        action="store_true",
        help=f"also serve Beryl with live monitoring off (a peer {LIVE_OFF!r}): its cost",
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
    if args.explain is not None and args.explain < 1:
        parser.error("--explain must be at least 1")
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
    bodies = write_bodies(WORK / "bodies", args.explain)
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
    if args.live:
        peers.insert(1, live_off_peer(model, args.workers))
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


# -- live monitoring on and off ----------------------------------------------------------------
def live_off_peer(model: Model, workers: int) -> Peer:
    """``beryl serve`` on the same workspace from a config with live monitoring switched off."""
    config = json.loads(model.config.read_text())
    config["live"] = {**config.get("live", {}), "enabled": False}
    off = write_json(model.config.with_name("config-live-off.json"), config)
    peer = beryl_peer(replace(model, config=off), workers)
    peer.name = LIVE_OFF
    peer.note = 'beryl serve with "live": {"enabled": false} (the same workspace)'
    peer.stack = uvicorn_stack(peer.python)
    return peer


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = datetime.now(UTC).isoformat(timespec="seconds")
    load_at_start = os.getloadavg()
    if load_at_start[0] > 0.5:
        say(f"WARNING: the machine is busy (load {load_at_start[0]:.2f}): figures will be noisy")
    ready = setup(args)
    features = ", ".join(ready.model.features)
    say(f"model {ready.model.version} ({features}); load: {ready.loader.name}")
    reference = reference_for(load_pipeline(ready.model), ready.model)
    features = len(ready.model.features)
    rounds = [
        [
            run
            for p in ready.peers
            for run in bench_peer(p, ready.bodies, args, ready.loader, reference, features)
        ]
        for _ in range(args.rounds)
    ]
    runs = median_runs(rounds)
    lines = report(runs, args, ready.loader)
    goals = targets(runs)
    live = live_target(runs)
    if live is not None:
        lines += live_lines(live, args)
        goals.append(live)
    goals += [goal for goal in (explain_target(runs), granian_target(runs)) if goal is not None]
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
    machine = machine_info(load_at_start)
    machine["mlflow_venv"] = mlflow_versions(ready.mlflow_python)
    machine["wrk"] = wrk_version(ready.loader.wrk)
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
            "explain": args.explain,
            "live_off_peer": args.live,
            "workers": args.workers,
            "load_generator": ready.loader.name,
            "rounds": args.rounds,
            "tcp_nodelay_workaround": {p.name: p.nodelay_workaround for p in ready.peers},
        },
        "machine": machine,
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
