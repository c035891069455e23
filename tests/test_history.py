"""Tests for beryl.monitoring.history: runs, steps, scores, promotions and drift in SQLite,
concurrently."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest

from beryl.errors import DataError
from beryl.monitoring.history import History, HistoryError
from beryl.monitoring.results import DriftResult, DriftSample, FeatureDrift


@pytest.fixture
def history(tmp_path: Path) -> History:
    return History(tmp_path / "beryl.sqlite")


def test_run_records_steps_durations_and_status(history: History) -> None:
    with history.run("run", detail={"trigger": "test"}) as run:
        with run.step("ingest") as detail:
            time.sleep(0.02)
            detail["files"] = 3
        with run.step("train"):
            pass
        run.summary = "trained v0001"
    records = history.runs()
    assert len(records) == 1
    record = records[0]
    assert record.id == run.run_id
    assert (record.command, record.status, record.exit_code) == ("run", "ok", 0)
    assert record.summary == "trained v0001"
    assert record.ended is not None and record.started <= record.ended
    assert record.duration_s is not None and record.duration_s >= 0.02
    assert [s.name for s in record.steps] == ["ingest", "train"]
    assert all(s.status == "ok" for s in record.steps)
    ingest_step = record.steps[0]
    assert ingest_step.duration_s is not None and ingest_step.duration_s >= 0.02
    assert ingest_step.detail == {"files": 3}
    assert run.timings["ingest"] == ingest_step.duration_s
    assert record.duration_s >= ingest_step.duration_s


def test_run_status_and_exit_code_can_be_set_by_the_body(history: History) -> None:
    with history.run("run") as run:
        run.status = "partial"
        run.exit_code = 10
        run.detail["quarantined"] = ["bad.csv"]
    record = history.runs()[0]
    assert (record.status, record.exit_code) == ("partial", 10)
    assert record.detail == {"quarantined": ["bad.csv"]}


def test_failing_body_is_recorded_as_failed_and_re_raised(history: History) -> None:
    with pytest.raises(DataError, match="broken input"), history.run("ingest") as run:
        with run.step("scan"):
            pass
        with run.step("ingest"):
            raise DataError("broken input")
    record = history.runs()[0]
    assert record.status == "failed"
    assert record.exit_code == DataError.exit_code == 3
    assert record.summary is not None and "broken input" in record.summary
    assert [(s.name, s.status) for s in record.steps] == [("scan", "ok"), ("ingest", "failed")]
    assert "broken input" in record.steps[1].detail["error"]
    assert history.last_step("ingest") is None  # a failed step is not a timing
    assert history.last_step("scan") is not None


def test_plain_exception_fails_with_exit_code_one(history: History) -> None:
    with pytest.raises(RuntimeError), history.run("train"):
        raise RuntimeError("boom")
    record = history.runs()[0]
    assert (record.status, record.exit_code, record.summary) == ("failed", 1, "boom")


def test_runs_are_newest_first_and_limited(history: History) -> None:
    for index in range(5):
        with history.run(f"cmd{index}"):
            pass
    assert [r.command for r in history.runs(limit=3)] == ["cmd4", "cmd3", "cmd2"]


def test_last_step_is_the_latest_successful_one(history: History) -> None:
    for seconds in (0.0, 0.03):
        with history.run("ingest") as run, run.step("ingest"):
            time.sleep(seconds)
    with pytest.raises(ValueError), history.run("ingest") as run, run.step("ingest"):
        raise ValueError("no")
    last = history.last_step("ingest")
    assert last is not None and last.status == "ok"
    assert last.duration_s is not None and last.duration_s >= 0.03
    assert history.last_step("train") is None


def test_scores_round_trip(history: History) -> None:
    metrics = {"f1": 0.8, "precision": 0.75, "confusion_matrix": [[1, 2], [3, 4]]}
    history.record_score("v0001", "candidate", "testdata.csv", metrics, run_id=7)
    history.record_score("v0000", "production", "testdata.csv", {"f1": None})
    scores = history.scores()
    assert [(s.version, s.role, s.f1, s.run_id) for s in scores] == [
        ("v0001", "candidate", 0.8, 7),
        ("v0000", "production", None, None),
    ]
    assert scores[0].data == "testdata.csv"


def test_promotions_round_trip(history: History) -> None:
    move = {
        "time": "2024-05-01T12:00:00Z",
        "action": "promote",
        "from_version": "v0001",
        "to_version": "v0002",
        "reason": "F1 0.80 > 0.70",
        "from_f1": 0.7,
        "to_f1": 0.8,
    }
    history.record_promotion(move, run_id=3)
    history.record_promotion(
        {"time": "2024-05-02T00:00:00Z", "action": "promote", "to_version": "v0001"}
    )
    stored = history.promotions()
    assert stored[0].to_dict() == {**move, "run_id": 3}
    assert stored[1].from_version is None and stored[1].to_version == "v0001"


DRIFTED = FeatureDrift(
    drifted=True,
    test="kolmogorov-smirnov",
    statistic=0.4,
    p_value=0.001,
    distance=0.3,
    distance_name="psi",
    threshold=0.1,
    reference_mean=10.0,
    current_mean=14.5,
)
DRIFT = DriftResult(
    reference=DriftSample(rows=300, batches=("b1",), model_version="v0001"),
    current=DriftSample(rows=100, batches=("b2",)),
    dataset_drift=True,
    drift_share=0.5,
    drifted_features=("lastmonth_activity",),
    features={"lastmonth_activity": DRIFTED},
)


def test_drift_round_trip(history: History) -> None:
    assert history.latest_drift() is None
    history.record_drift(replace(DRIFT, dataset_drift=False, drift_share=0.0))
    history.record_drift(DRIFT)
    assert history.latest_drift() == DRIFT
    with sqlite3.connect(history.path) as conn:
        rows = conn.execute("SELECT dataset_drift, drift_share FROM drift ORDER BY id").fetchall()
    assert rows == [(0, 0.0), (1, 0.5)]


# What earlier versions of Beryl wrote (a dict from ``drift.compare``): read as a ``DriftResult``.
EARLIER_RESULT = {
    "reference": {"rows": 300, "model_version": "v0001", "batches": ["b1"]},
    "current": {"rows": 100, "batches": ["b2"]},
    "dataset_drift": True,
    "drift_share": 0.5,
    "drifted_features": ["lastmonth_activity"],
    "features": {
        "lastmonth_activity": {
            "drifted": True,
            "test": "kolmogorov-smirnov",
            "statistic": 0.4,
            "p_value": 0.001,
            "distance": 0.3,
            "distance_name": "psi",
            "threshold": 0.1,
            "reference_mean": 10.0,
            "current_mean": 14.5,
        },
        "plan": {
            "drifted": False,
            "test": "chi-square",
            "statistic": None,
            "p_value": None,
            "distance": None,
            "distance_name": "jensen-shannon",
            "threshold": None,
            "note": "not tested: 3 rows, fewer than min_rows=30",
        },
    },
}


def test_a_drift_result_written_by_an_earlier_version_reads_back_the_same(
    history: History,
) -> None:
    with history.run("x"):  # the tables exist
        pass
    with sqlite3.connect(history.path) as conn:
        conn.execute(
            "INSERT INTO drift (time, dataset_drift, drift_share, result) VALUES (?, 1, 0.5, ?)",
            ("2026-01-01T00:00:00Z", json.dumps(EARLIER_RESULT)),
        )
    latest = history.latest_drift()
    assert latest is not None
    data = latest.to_dict()
    # what the earlier version wrote reads back unchanged; the verdicts are added to it
    assert data.pop("verdict") == "drifted" and data.pop("note") == "plan not tested: " + (
        EARLIER_RESULT["features"]["plan"]["note"].removeprefix("not tested: ")
    )
    verdicts = {name: f.pop("verdict") for name, f in data["features"].items()}
    assert verdicts == {"lastmonth_activity": "drifted", "plan": "not tested"} | {
        name: "not drifted"
        for name in EARLIER_RESULT["features"]
        if name not in ("lastmonth_activity", "plan")
    }
    assert data == EARLIER_RESULT
    assert latest.features["lastmonth_activity"] == DRIFTED
    plan = latest.features["plan"]
    assert not plan.tested and not plan.drifted and plan.note is not None


def test_a_drift_record_that_is_no_drift_result_is_a_damaged_history(history: History) -> None:
    history.record_drift(DRIFT)
    with sqlite3.connect(history.path) as conn:
        conn.execute("UPDATE drift SET result = ?", (json.dumps({"columns": {}}),))
    with pytest.raises(HistoryError, match=r"damaged record.*not a data-drift result"):
        history.latest_drift()


def test_database_is_in_wal_mode(history: History) -> None:
    with history.run("x"):
        pass
    with sqlite3.connect(history.path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_unopenable_database_is_a_history_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(HistoryError):
        History(blocker / "beryl.sqlite").start_run("x")


def write_runs(path: Path, writer: str, count: int) -> None:
    history = History(path)  # each writer has its own object, as separate processes would
    for index in range(count):
        with history.run(f"{writer}-{index}") as run:
            with run.step("ingest"):
                pass
            with run.step("train"):
                pass
        history.record_score(f"v{index:04d}", writer, "test", {"f1": 0.5})


def test_threads_writing_at_once_lose_nothing(tmp_path: Path) -> None:
    path = tmp_path / "beryl.sqlite"
    History(path).scores()  # the database exists (see the fresh-database test below)
    errors: list[BaseException] = []
    barrier = threading.Barrier(6)

    def work(name: str) -> None:
        try:
            barrier.wait()
            write_runs(path, name, 15)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(f"t{i}",)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    history = History(path)
    runs = history.runs(limit=1000)
    assert len(runs) == 90
    assert {r.command for r in runs} == {f"t{i}-{j}" for i in range(6) for j in range(15)}
    assert all(r.status == "ok" and len(r.steps) == 2 for r in runs)
    assert len(history.scores(limit=1000)) == 90


WORKER = textwrap.dedent(
    """
    import sys
    import time
    from pathlib import Path
    from beryl.monitoring.history import History

    path, name, count = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    history = History(path)
    print("ready", flush=True)
    go = path.with_name("go")
    while not go.exists():
        time.sleep(0.005)
    for index in range(count):
        with history.run(f"{name}-{index}") as run:
            with run.step("ingest"):
                pass
        history.record_score("v0001", name, "test", {"f1": 0.5})
    """
)


def test_processes_writing_at_once_lose_nothing(tmp_path: Path) -> None:
    path = tmp_path / "beryl.sqlite"
    History(path).scores()  # the database exists (see the fresh-database test below)
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, str(path), f"p{i}", "40"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(3)
    ]
    outcomes: list[tuple[int, str, str]] = []
    try:
        for worker in workers:  # every worker has imported beryl: start all writers at once
            assert worker.stdout is not None
            assert worker.stdout.readline().strip() == "ready"
        (tmp_path / "go").touch()
        write_runs(path, "main", 20)
    finally:
        (tmp_path / "go").touch()
        for worker in workers:
            stdout, stderr = worker.communicate(timeout=120)
            outcomes.append((worker.returncode, stdout, stderr))
    for returncode, _, stderr in outcomes:
        assert "locked" not in stderr
        assert returncode == 0, stderr
    history = History(path)
    runs = history.runs(limit=1000)
    assert len(runs) == 3 * 40 + 20
    assert {r.command for r in runs if r.command.startswith("p1-")} == {
        f"p1-{j}" for j in range(40)
    }
    assert all(r.status == "ok" for r in runs)
    assert len(history.scores(limit=1000)) == 3 * 40 + 20


def test_first_use_waits_for_another_process_initialising_a_new_database(tmp_path: Path) -> None:
    path = tmp_path / "beryl.sqlite"
    # Another writer (as a second Beryl process creating the same history database) holds
    # the write lock of the new, not yet WAL, database for a moment.
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")
    releaser = threading.Timer(0.3, lambda: other.execute("COMMIT"))
    releaser.start()
    try:
        history = History(path, timeout=10)
        started = time.perf_counter()
        run_id = history.start_run("run")
        assert time.perf_counter() - started >= 0.2  # it waited for the other writer
        assert [r.id for r in history.runs()] == [run_id]
    finally:
        releaser.join()
        other.close()


def test_killed_runs_are_closed_as_interrupted(history: History) -> None:
    killed = history.start_run("run")
    reading = history.start_run("diagnose")
    assert history.close_interrupted(("run", "ingest")) == 1
    runs = {r.id: r for r in history.runs()}
    assert runs[killed].status == "interrupted" and runs[killed].ended is not None
    assert runs[reading].status == "running"  # not a workspace-changing command
    assert history.close_interrupted(("run",)) == 0
