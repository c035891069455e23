"""The history seam's contract, run against every implementation: SQLite, and PostgreSQL on
a real server (``tests/pg_server.py``, a migrated database per test).

Each implementation in ``IMPLEMENTATIONS`` must pass the same tests: runs with their steps and
outcomes, scores, promotions and drift results read back as written, newest first where it
says so, and concurrent writers losing nothing. Every method of ``HistoryStore`` is called here
(a test checks that).
"""

from __future__ import annotations

import ast
import inspect
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import pytest
from tests.pg_server import shared

from beryl.monitoring.history import History
from beryl.monitoring.pghistory import PgHistory
from beryl.monitoring.results import DriftResult, DriftSample, FeatureDrift
from beryl.monitoring.store import (
    HistoryStore,
    ModelDriftRecord,
    PromotionRecord,
    RunOutcome,
    ScoreRecord,
    StepRecord,
)

IMPLEMENTATIONS: dict[str, Callable[[Path], HistoryStore]] = {
    "sqlite": lambda folder: History(folder / "beryl.sqlite"),
    "postgresql": lambda folder: PgHistory(shared().database_for(folder)),
}
# The session fixture that starts what an implementation needs (a server).
SERVERS = {"postgresql": "postgres"}


@pytest.fixture(params=list(IMPLEMENTATIONS))
def history(request: pytest.FixtureRequest, tmp_path: Path) -> HistoryStore:
    if request.param in SERVERS:
        request.getfixturevalue(SERVERS[request.param])
    made = IMPLEMENTATIONS[request.param](tmp_path)
    assert isinstance(made, HistoryStore)
    return made


def test_an_empty_history_reads_as_empty(history: HistoryStore) -> None:
    assert history.runs() == [] and history.scores() == [] and history.promotions() == []
    assert history.latest_drift() is None and history.last_step("ingest") is None


def test_a_run_records_its_steps_outcome_and_detail(history: HistoryStore) -> None:
    with history.run("run", {"started_by": "test"}) as run:
        with run.step("ingest") as detail:
            detail["rows"] = 3
        with run.step("train"):
            pass
        run.status, run.exit_code, run.summary = "partial", 10, "one file quarantined"
        run.detail = {"outcome": "kept"}
    (record,) = history.runs()
    assert (record.command, record.status, record.exit_code) == ("run", "partial", 10)
    assert record.summary == "one file quarantined" and record.detail == {"outcome": "kept"}
    assert [s.name for s in record.steps] == ["ingest", "train"]
    assert record.steps[0].detail == {"rows": 3} and record.steps[0].status == "ok"
    assert record.ended is not None and record.duration_s is not None
    last = history.last_step("ingest")
    assert last is not None and last.detail == {"rows": 3}


def test_a_failing_run_is_recorded_as_failed_and_the_error_goes_on(history: HistoryStore) -> None:
    with pytest.raises(ValueError, match="boom"), history.run("train") as run, run.step("train"):
        raise ValueError("boom")
    (record,) = history.runs()
    assert record.status == "failed" and "boom" in (record.summary or "")
    assert record.steps[0].status == "failed" and "boom" in record.steps[0].detail["error"]
    assert history.last_step("train") is None  # only successful steps count as timings


def test_runs_are_newest_first_and_limited(history: HistoryStore) -> None:
    for command in ("a", "b", "c"):
        with history.run(command):
            pass
    assert [r.command for r in history.runs(2)] == ["c", "b"]


def test_runs_of_one_command_are_the_latest_of_that_command(history: HistoryStore) -> None:
    for command in ("run", "diagnose", "run", "report", "diagnose", "run"):
        with history.run(command):
            pass
    passes = history.runs(2, "run")
    assert [r.command for r in passes] == ["run", "run"]
    assert [r.id for r in passes] == [r.id for r in history.runs(10) if r.command == "run"][:2]
    assert history.runs(10, "train") == []
    assert len(history.runs(10)) == 6


def test_interrupted_runs_are_closed(history: HistoryStore) -> None:
    history.start_run("run")
    history.start_run("diagnose")
    assert history.close_interrupted(("run",)) == 1
    statuses = {r.command: r.status for r in history.runs()}
    assert statuses == {"run": "interrupted", "diagnose": "running"}


def test_a_run_can_be_written_step_by_step(history: HistoryStore) -> None:
    """``start_run``, ``record_step`` and ``finish_run``: what ``run`` does, called one by one
    (as a process that records a run it did not start in a ``with`` block)."""
    run_id = history.start_run("ingest", {"by": "test"})
    (running,) = history.runs()
    assert (running.id, running.status, running.ended, running.detail) == (
        run_id,
        "running",
        None,
        {"by": "test"},
    )
    history.record_step(run_id, StepRecord("ingest", 0.5, "ok", "2026-01-01T00:00:00Z"))
    history.record_step(
        run_id,
        StepRecord(
            name="scan",
            duration_s=0.25,
            status="failed",
            started="2026-01-01T00:00:01Z",
            detail={"error": "x"},
        ),
    )
    history.finish_run(run_id, RunOutcome("partial", 10, 1.0, summary="one file quarantined"))
    (record,) = history.runs()
    assert (record.status, record.exit_code, record.duration_s) == ("partial", 10, 1.0)
    assert record.summary == "one file quarantined" and record.ended is not None
    assert record.detail == {"by": "test"}  # finish_run without detail keeps the first one
    assert [(s.name, s.status, s.duration_s, s.detail) for s in record.steps] == [
        ("ingest", "ok", 0.5, {}),
        ("scan", "failed", 0.25, {"error": "x"}),
    ]
    assert record.steps[0].started == "2026-01-01T00:00:00Z"
    last = history.last_step("ingest")
    assert last is not None and last.duration_s == 0.5
    assert history.last_step("scan") is None  # failed steps are not timings
    history.finish_run(run_id, RunOutcome("ok", 0, 2.0, detail={"new": 1}))
    assert history.runs()[0].detail == {"new": 1}


def test_scores_and_promotions_are_the_latest_oldest_first(history: HistoryStore) -> None:
    for i in range(5):
        history.record_score(f"v{i:04d}", "candidate", "test data", {"f1": i / 10}, run_id=i)
        history.record_promotion(
            {"time": f"2026-01-0{i + 1}T00:00:00Z", "action": "promote", "to_version": f"v{i:04d}"}
        )
    assert [s.version for s in history.scores(3)] == ["v0002", "v0003", "v0004"]
    assert [p.to_version for p in history.promotions(2)] == ["v0003", "v0004"]
    assert all(isinstance(s, ScoreRecord) for s in history.scores())
    assert all(isinstance(p, PromotionRecord) for p in history.promotions())
    assert history.promotions(1)[0].from_version is None and history.promotions(1)[0].run_id is None


def test_scores_promotions_and_drift_read_back_as_written(history: HistoryStore) -> None:
    history.record_score("v0001", "candidate", "test data", {"f1": 0.7, "n": 10}, run_id=1)
    history.record_score("v0002", "candidate", "test data", {"f1": 0.8}, run_id=2)
    assert [(s.version, s.f1) for s in history.scores()] == [("v0001", 0.7), ("v0002", 0.8)]
    move = {
        "time": "2026-01-01T00:00:00Z",
        "action": "promote",
        "from_version": None,
        "to_version": "v0001",
        "reason": "first",
        "from_f1": None,
        "to_f1": 0.7,
    }
    history.record_promotion(move, run_id=1)
    (promotion,) = history.promotions()
    assert {k: promotion.to_dict()[k] for k in move} == move and promotion.run_id == 1
    feature = FeatureDrift(True, "chi-square", 9.0, 0.01, 0.3, "jensen-shannon", 0.1)
    drift = DriftResult(
        reference=DriftSample(5, ("b1",), "v0001"),
        current=DriftSample(3, ("b2",)),
        dataset_drift=True,
        drift_share=0.5,
        drifted_features=("x",),
        features={"x": replace(feature, new_categories=("new",), new_category_share=0.2)},
    )
    history.record_drift(drift)
    latest = history.latest_drift()
    assert latest is not None and latest.drifted_features == ("x",) and latest.dataset_drift
    assert latest == drift and isinstance(latest, DriftResult)
    history.record_drift(replace(drift, dataset_drift=False, drifted_features=()), run_id=7)
    latest = history.latest_drift()
    assert latest is not None and not latest.dataset_drift  # the latest check wins
    drifts = history.drifts()
    assert [d.run_id for d in drifts] == [None, 7] and drifts[0].result == drift
    assert [d.result.dataset_drift for d in history.drifts(1)] == [False]  # the latest, last


def test_model_drift_checks_read_back_with_their_verdicts(history: HistoryStore) -> None:
    base = {"version": "v0001", "rows": 40, "f1_recorded": 0.8, "tolerance": 0.05}
    history.record_score("v0001", "candidate", "test data", {"f1": 0.8}, run_id=1)
    checks = [
        {"f1": 0.6, **base, "f1_new_data": 0.6, "model_drift": True},  # before verdicts: a flag
        {"f1": 0.79, **base, "f1_new_data": 0.79, "verdict": "not drifted"},
        {**base, "rows": 3, "f1_new_data": None, "verdict": "not tested", "note": "few"},
    ]
    for run_id, metrics in enumerate(checks, start=2):
        history.record_score("v0001", "drift-check", "new batches b", metrics, run_id=run_id)
    read = history.model_drift_checks()
    assert [(c.run_id, c.verdict) for c in read] == [
        (2, "drifted"),
        (3, "not drifted"),
        (4, "not tested"),
    ]
    assert read[1].f1_new_data == 0.79 and read[1].f1_recorded == 0.8 and read[1].rows == 40
    assert read[2].note == "few" and read[2].f1_new_data is None
    assert [c.run_id for c in history.model_drift_checks(1)] == [4]
    assert isinstance(read[0], ModelDriftRecord)


def test_concurrent_writers_lose_nothing(history: HistoryStore) -> None:
    def write(i: int) -> None:
        with history.run(f"job-{i}") as run, run.step("work"):
            history.record_score(f"v{i:04d}", "candidate", "test data", {"f1": i / 100})

    with ThreadPoolExecutor(max_workers=6) as pool:
        list(pool.map(write, range(30)))
    assert len(history.runs(100)) == 30 and len(history.scores()) == 30
    assert all(len(r.steps) == 1 for r in history.runs(100))


def test_every_method_of_the_protocol_is_exercised_here() -> None:
    """A method added to ``HistoryStore`` is added to the contract: each is called above."""
    methods = {
        name
        for name, _ in inspect.getmembers(HistoryStore, inspect.isfunction)
        if not name.startswith("_")
    }
    tree = ast.parse(Path(__file__).read_text(encoding="utf-8"))
    called = {
        node.func.attr
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and isinstance(node.func.value, ast.Name)
        and node.func.value.id == "history"
    }
    assert methods, "the protocol lists no methods"
    assert methods - called == set()


def test_the_outbox_queues_an_event_once_per_endpoint_and_records_each_attempt(
    history: HistoryStore,
) -> None:
    from beryl.monitoring.store import OutboxEntry

    assert history.outbox_entries() == []
    assert history.outbox_since("http://a/hook", "2026-01-01T00:00:00.000000Z") == (
        "2026-01-01T00:00:00.000000Z"
    )
    # the first call fixes it: a later one does not move it
    assert history.outbox_since("http://a/hook", "2027-01-01T00:00:00.000000Z") == (
        "2026-01-01T00:00:00.000000Z"
    )
    event = OutboxEntry("promoted-1", "http://a/hook", "promoted", "2026-02-01T00:00:00Z", "{}")
    assert history.outbox_add(event)
    assert not history.outbox_add(event)  # queued once
    assert history.outbox_add(
        OutboxEntry("promoted-1", "http://b/hook", "promoted", event.time, "{}")
    )
    due = history.outbox_due("2026-03-01T00:00:00Z")
    assert [(e.event_id, e.endpoint) for e in due] == [
        ("promoted-1", "http://a/hook"),
        ("promoted-1", "http://b/hook"),
    ]
    first, second = due
    first.attempts, first.delivered = 1, "2026-03-01T00:00:01Z"
    history.outbox_update(first)
    second.attempts, second.next_attempt, second.last_error = 1, "2026-03-01T00:05:00Z", "HTTP 500"
    history.outbox_update(second)
    assert history.outbox_due("2026-03-01T00:01:00Z") == []  # delivered, and retried later
    (retry,) = history.outbox_due("2026-03-01T00:06:00Z")
    assert (retry.endpoint, retry.attempts, retry.last_error) == ("http://b/hook", 1, "HTTP 500")
    retry.failed = "2026-03-02T00:00:00Z"
    history.outbox_update(retry)
    assert history.outbox_due("2027-01-01T00:00:00Z") == []  # given up: never due again
    assert [e.endpoint for e in history.outbox_entries()] == ["http://a/hook", "http://b/hook"]
