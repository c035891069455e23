"""What the two history stores share: every statement, written once with ``?`` parameter marks,
and the rows they read back turned into records. A store (``History`` on SQLite,
``PgHistory`` on PostgreSQL) adds only how a statement reaches its database: connecting,
errors, the form of ``column IN (...)`` and how it takes REAL values and limits::

    class History(SqlHistory):
        def _execute(self, sql, params=()): ...  # and _insert, _reading, _in
"""

from __future__ import annotations

import abc
import contextlib
import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from beryl._io import utc_now
from beryl.monitoring.results import DriftResult
from beryl.monitoring.store import (
    DriftRecord,
    ModelDriftRecord,
    OutboxEntry,
    PromotionRecord,
    RunContext,
    RunOutcome,
    RunRecord,
    ScoreRecord,
    StepRecord,
    recorded_run,
)

__all__ = ["Fetch", "SqlHistory"]

_T = TypeVar("_T")

Fetch = Callable[[str, tuple[Any, ...]], Sequence[Any]]
"""Run one reading statement: its rows, each indexed by column name."""

# The outbox's tables after their id column, the same in both databases' schemas.
OUTBOX_TABLES = """
    event_id TEXT NOT NULL,
    endpoint TEXT NOT NULL,
    type TEXT NOT NULL,
    time TEXT NOT NULL,
    payload TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt TEXT NOT NULL,
    delivered TEXT,
    failed TEXT,
    last_error TEXT,
    UNIQUE (event_id, endpoint)
);
CREATE INDEX {exists}outbox_due ON outbox (next_attempt) WHERE delivered IS NULL;
CREATE TABLE {exists}outbox_since (
    endpoint TEXT PRIMARY KEY,
    since TEXT NOT NULL
);
"""

_IN_CHUNK = 500  # the ids one ``IN`` list holds: well under SQLite's bound on parameters


class SqlHistory(abc.ABC):
    """``HistoryStore`` on a SQL database with Beryl's tables; a subclass connects to it."""

    @abc.abstractmethod
    def _execute(self, sql: str, params: tuple[Any, ...] = ()) -> int:
        """Run one writing statement; the number of rows it changed."""

    @abc.abstractmethod
    def _insert(self, sql: str, params: tuple[Any, ...]) -> int:
        """Run one INSERT; the id of the row it made."""

    @abc.abstractmethod
    def _reading(self) -> contextlib.AbstractContextManager[Fetch | None]:
        """Reading statements on one connection (None: no database yet); a ``ValueError``
        raised inside, a record that does not parse, leaves it as a damaged-record error."""

    @abc.abstractmethod
    def _in(self, column: str, values: Sequence[Any]) -> tuple[str, tuple[Any, ...]]:
        """The condition that ``column`` is one of ``values``, and its parameters."""

    def _real(self, value: Any) -> Any:
        """A value for a REAL column, as the database takes it."""
        return value

    def _limit(self, limit: int) -> Any:
        """The parameter of a LIMIT; a negative limit is no limit."""
        return limit

    # -- runs and steps -------------------------------------------------------------------------
    def start_run(self, command: str, detail: dict[str, Any] | None = None) -> int:
        return self._insert(
            "INSERT INTO runs (command, started, detail) VALUES (?, ?, ?)",
            (command, utc_now(), json.dumps(detail or {}, default=str)),
        )

    def finish_run(self, run_id: int, outcome: RunOutcome) -> None:
        detail = outcome.detail
        self._execute(
            "UPDATE runs SET ended = ?, duration_s = ?, status = ?, exit_code = ?, summary = ?,"
            " detail = COALESCE(?, detail) WHERE id = ?",
            (
                utc_now(),
                self._real(outcome.duration_s),
                outcome.status,
                int(outcome.exit_code),
                outcome.summary,
                json.dumps(detail, default=str) if detail is not None else None,
                run_id,
            ),
        )

    def record_step(self, run_id: int, step: StepRecord) -> None:
        self._execute(
            "INSERT INTO steps (run_id, name, started, duration_s, status, detail)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (
                run_id,
                step.name,
                step.started,
                self._real(step.duration_s),
                step.status,
                json.dumps(step.detail, default=str),
            ),
        )

    def run(
        self, command: str, detail: dict[str, Any] | None = None
    ) -> contextlib.AbstractContextManager[RunContext]:
        """Record a run; its outcome is 'ok' unless the body raises or sets another status."""
        return recorded_run(self, command, detail)

    def close_interrupted(self, commands: tuple[str, ...]) -> int:
        """Mark runs of these commands still 'running' as 'interrupted' (their process died).

        Call only while holding the workspace lock, so none of them can really be running.
        """
        condition, values = self._in("command", commands)
        return self._execute(
            "UPDATE runs SET status = 'interrupted', ended = ?,"  # noqa: S608
            " summary = 'ended without finishing (the process was killed)'"
            f" WHERE status = 'running' AND {condition}",
            (utc_now(), *values),
        )

    def runs(self, limit: int = 20, command: str | None = None) -> list[RunRecord]:
        """The most recent runs (of ``command`` only, when given), newest first, with their
        steps."""
        with self._reading() as fetch:
            if fetch is None:
                return []
            if command is None:
                rows = fetch("SELECT * FROM runs ORDER BY id DESC LIMIT ?", (self._limit(limit),))
            else:
                rows = fetch(
                    "SELECT * FROM runs WHERE command = ? ORDER BY id DESC LIMIT ?",
                    (command, self._limit(limit)),
                )
            steps: dict[int, list[StepRecord]] = {row["id"]: [] for row in rows}
            ids = list(steps)
            for start in range(0, len(ids), _IN_CHUNK):
                condition, values = self._in("run_id", ids[start : start + _IN_CHUNK])
                query = f"SELECT * FROM steps WHERE {condition} ORDER BY id"  # noqa: S608
                for step in fetch(query, values):
                    steps[step["run_id"]].append(_step(step))
            return [_run(row, steps[row["id"]]) for row in rows]

    def last_step(self, name: str) -> StepRecord | None:
        """The latest successful step of that name (e.g. the last ingestion's timing)."""
        with self._reading() as fetch:
            if fetch is None:
                return None
            rows = fetch(
                "SELECT * FROM steps WHERE name = ? AND status = 'ok' ORDER BY id DESC LIMIT 1",
                (name,),
            )
            return _step(rows[0]) if rows else None

    # -- scores, promotions, drift --------------------------------------------------------------
    def record_score(
        self, version: str, role: str, data: str, metrics: dict[str, Any], run_id: int | None = None
    ) -> None:
        """Record a model's metrics: role is e.g. 'candidate', 'production', 'drift-check'."""
        self._execute(
            "INSERT INTO scores (run_id, time, version, role, data, f1, metrics)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                run_id,
                utc_now(),
                version,
                role,
                data,
                self._real(metrics.get("f1")),
                json.dumps(metrics, default=str),
            ),
        )

    def scores(self, limit: int = 500) -> list[ScoreRecord]:
        """The latest ``limit`` scores, oldest first."""
        return self._latest(
            "SELECT run_id, time, version, role, data, f1 FROM scores ORDER BY id DESC LIMIT ?",
            limit,
            lambda r: ScoreRecord(**dict(r)),
        )

    def record_promotion(self, move: Mapping[str, Any], run_id: int | None = None) -> None:
        self._execute(
            "INSERT INTO promotions (run_id, time, action, from_version, to_version, from_f1,"
            " to_f1, reason) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                run_id,
                move["time"],
                move["action"],
                move.get("from_version"),
                move["to_version"],
                self._real(move.get("from_f1")),
                self._real(move.get("to_f1")),
                move.get("reason"),
            ),
        )

    def promotions(self, limit: int = 500) -> list[PromotionRecord]:
        """The latest ``limit`` moves of the production pointer, oldest first."""
        return self._latest(
            "SELECT run_id, time, action, from_version, to_version, from_f1, to_f1, reason"
            " FROM promotions ORDER BY id DESC LIMIT ?",
            limit,
            lambda r: PromotionRecord(**dict(r)),
        )

    def record_drift(self, result: DriftResult, run_id: int | None = None) -> None:
        data = result.to_dict()
        self._execute(
            "INSERT INTO drift (run_id, time, reference, current, dataset_drift, drift_share,"
            " result) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                run_id,
                utc_now(),
                json.dumps(data["reference"]),
                json.dumps(data["current"]),
                int(result.dataset_drift),
                self._real(result.drift_share),
                json.dumps(data),
            ),
        )

    def latest_drift(self) -> DriftResult | None:
        """The latest drift check (a record that is no drift result is a damaged database)."""
        latest = self._latest(
            "SELECT result FROM drift ORDER BY id DESC LIMIT ?",
            1,
            lambda r: DriftResult.from_dict(json.loads(r["result"])),
        )
        return latest[0] if latest else None

    def drifts(self, limit: int = 50) -> list[DriftRecord]:
        """The latest ``limit`` data-drift checks, oldest first."""
        return self._latest(
            "SELECT run_id, time, result FROM drift ORDER BY id DESC LIMIT ?",
            limit,
            lambda r: DriftRecord(
                r["run_id"], r["time"], DriftResult.from_dict(json.loads(r["result"]))
            ),
        )

    def model_drift_checks(self, limit: int = 100) -> list[ModelDriftRecord]:
        """The latest ``limit`` model-drift checks (``drift-check`` scores), oldest first."""
        return self._latest(
            "SELECT run_id, time, version, metrics FROM scores WHERE role = 'drift-check'"
            " ORDER BY id DESC LIMIT ?",
            limit,
            lambda r: ModelDriftRecord.from_score(
                r["run_id"], r["time"], r["version"], json.loads(r["metrics"] or "{}")
            ),
        )

    # -- the outbox of events (beryl.monitoring.webhooks) --------------------------------------
    def outbox_since(self, endpoint: str, now: str) -> str:
        """When ``endpoint`` started getting events (``now`` on its first call): older records
        are never sent to it."""
        self._execute(
            "INSERT INTO outbox_since (endpoint, since) VALUES (?, ?) ON CONFLICT DO NOTHING",
            (endpoint, now),
        )
        with self._reading() as fetch:
            assert fetch is not None
            rows = fetch("SELECT since FROM outbox_since WHERE endpoint = ?", (endpoint,))
            return str(rows[0]["since"])

    def outbox_add(self, entry: OutboxEntry) -> bool:
        """Queue one event for one endpoint; False when it was queued before (nothing done)."""
        return (
            self._execute(
                "INSERT INTO outbox (event_id, endpoint, type, time, payload, attempts,"
                " next_attempt) VALUES (?, ?, ?, ?, ?, 0, ?) ON CONFLICT DO NOTHING",
                (entry.event_id, entry.endpoint, entry.type, entry.time, entry.payload, entry.time),
            )
            > 0
        )

    def outbox_due(self, now: str, limit: int = 100) -> list[OutboxEntry]:
        """Queued deliveries whose next attempt is due, oldest first."""
        return self._outbox(
            "WHERE delivered IS NULL AND failed IS NULL AND next_attempt <= ? ORDER BY id LIMIT ?",
            (now, self._limit(limit)),
        )

    def outbox_entries(self, limit: int = 100) -> list[OutboxEntry]:
        """The latest ``limit`` deliveries, whatever their state, oldest first."""
        return self._outbox("ORDER BY id DESC LIMIT ?", (self._limit(limit),))[::-1]

    def outbox_update(self, entry: OutboxEntry) -> None:
        """Record an attempt: its count, the next one, and delivered, failed or the error."""
        self._execute(
            "UPDATE outbox SET attempts = ?, next_attempt = ?, delivered = ?, failed = ?,"
            " last_error = ? WHERE id = ?",
            (
                entry.attempts,
                entry.next_attempt,
                entry.delivered,
                entry.failed,
                entry.last_error,
                entry.id,
            ),
        )

    def _outbox(self, where: str, params: tuple[Any, ...]) -> list[OutboxEntry]:
        with self._reading() as fetch:
            if fetch is None:
                return []
            rows = fetch(
                "SELECT id, event_id, endpoint, type, time, payload, attempts, next_attempt,"  # noqa: S608
                f" delivered, failed, last_error FROM outbox {where}",
                params,
            )
            return [OutboxEntry(**dict(row)) for row in rows]

    def _latest(self, sql: str, limit: int, record: Callable[[Any], _T]) -> list[_T]:
        """The rows ``sql`` reads newest first, up to ``limit``, as records oldest first."""
        with self._reading() as fetch:
            if fetch is None:
                return []
            return [record(row) for row in fetch(sql, (self._limit(limit),))[::-1]]


def _run(row: Mapping[str, Any], steps: list[StepRecord]) -> RunRecord:
    return RunRecord(
        id=row["id"],
        command=row["command"],
        started=row["started"],
        ended=row["ended"],
        duration_s=row["duration_s"],
        status=row["status"],
        exit_code=row["exit_code"],
        summary=row["summary"],
        detail=json.loads(row["detail"] or "{}"),
        steps=steps,
    )


def _step(row: Mapping[str, Any]) -> StepRecord:
    return StepRecord(
        name=row["name"],
        duration_s=row["duration_s"],
        status=row["status"],
        started=row["started"],
        detail=json.loads(row["detail"] or "{}"),
    )
