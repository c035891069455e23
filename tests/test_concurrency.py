"""Concurrency: the API under load while production moves, and passes that never overlap."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
from tests.test_api import make_workspace, serving

from beryl import config
from beryl.data.demo import add_batch
from beryl.data.ingestion import ingest
from beryl.errors import EXIT_OK, PipelineBusyError
from beryl.model.deployment import deploy, rollback
from beryl.model.registry import Registry
from beryl.model.training import train

MOVES = 24  # 12 promotions and 12 rollbacks


@dataclass(frozen=True)
class Move:
    started: float
    ended: float
    before: str
    after: str


@dataclass(frozen=True)
class Answer:
    started: float
    ended: float
    status: int
    version: str | None


def allowed_versions(answer: Answer, moves: list[Move], initial: str) -> set[str]:
    """Versions that were in production at some moment while the request was in flight."""
    current = initial
    for move in moves:
        if move.ended <= answer.started:
            current = move.after
    allowed = {current}
    for move in moves:
        if move.started < answer.ended and move.ended > answer.started:
            allowed |= {move.before, move.after}
    return allowed


def test_promotions_and_rollbacks_under_load_fail_no_request(tmp_path: Path) -> None:
    settings, config_path = make_workspace(tmp_path / "ws")
    add_batch(settings.input_folder, "more.csv", rows=400, seed=11)
    ingest(settings)
    train(settings)
    moves: list[Move] = []
    answers: list[Answer] = []
    stop = threading.Event()
    lock = threading.Lock()
    records = [
        {"lastmonth_activity": 20 + i, "lastyear_activity": 300, "number_of_employees": 5}
        for i in range(10)
    ]

    with serving(config_path, "--workers", "2") as url:

        def load() -> None:
            with httpx.Client(base_url=url, timeout=30) as client:
                while not stop.is_set():
                    started = time.monotonic()
                    response = client.post("/prediction", json={"records": records})
                    ended = time.monotonic()
                    version = response.json().get("model_version") if response.is_success else None
                    with lock:
                        answers.append(Answer(started, ended, response.status_code, version))

        workers = [threading.Thread(target=load) for _ in range(3)]
        for worker in workers:
            worker.start()
        try:
            for index in range(MOVES):
                time.sleep(0.2)
                before = Registry(settings.model_folder).require_production()
                started = time.monotonic()
                if index % 2 == 0:
                    after = deploy(settings, "v0002").version
                else:
                    after = rollback(settings).version
                moves.append(Move(started, time.monotonic(), before, after))
            time.sleep(0.3)
        finally:
            stop.set()
            for worker in workers:
                worker.join(timeout=30)

    log = Registry(settings.model_folder).moves()
    assert sum(m.action == "promote" for m in log) >= 13  # v0001 and 12 promotions of v0002
    assert sum(m.action == "rollback" for m in log) == MOVES // 2
    assert len(answers) >= 3 * MOVES, "the load generator barely ran"
    failed = [a for a in answers if a.status != 200]
    print(f"\n{len(answers)} requests during {MOVES} production moves; {len(failed)} failed")
    assert failed == [], f"{len(failed)} of {len(answers)} requests failed"
    wrong = [a for a in answers if a.version not in allowed_versions(a, moves, "v0001")]
    assert wrong == [], f"answers named versions not in production at the time: {wrong[:3]}"
    assert {a.version for a in answers} == {"v0001", "v0002"}


def test_simultaneous_runs_never_overlap(tmp_path: Path) -> None:
    settings, config_path = make_workspace(tmp_path / "ws")
    add_batch(settings.input_folder, "more.csv", rows=3000, seed=12)
    command = [
        sys.executable,
        "-m",
        "beryl",
        "--config",
        str(config_path),
        "run",
        "--json",
        "--no-apicalls",
    ]
    processes = [
        subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(4)
    ]
    outcomes = []
    for process in processes:
        out, err = process.communicate(timeout=300)
        code = process.returncode
        if code == EXIT_OK:
            outcomes.append(json.loads(out)["outcome"])
        else:
            assert code == PipelineBusyError.exit_code, err
            assert "another pass is running" in err
            outcomes.append("busy")
    trained = [o for o in outcomes if o in ("promoted", "kept")]
    assert len(trained) == 1, outcomes
    assert set(outcomes) - {"promoted", "kept"} <= {"busy", "no-new-data"}
    versions = Registry(config.load(config_path).model_folder).ids()
    assert versions == ["v0001", "v0002"]
    runs = json.loads(
        subprocess.run(
            [sys.executable, "-m", "beryl", "--config", str(config_path), "history", "--json"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    passes = sorted(
        (r["started"], r["ended"]) for r in runs if r["command"] == "run" and r["ended"]
    )
    for (_, first_end), (second_start, _) in itertools.pairwise(passes):
        assert first_end <= second_start, "two passes overlapped"
