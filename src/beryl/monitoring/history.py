"""The history database: every run, its steps and timings, scores, drift results and promotions.

SQLite in WAL mode, in the workspace (``beryl.sqlite``). This module owns it: nothing else writes
SQL. Writers from several processes (a pass and the API) wait for each other instead of failing.
It implements ``beryl.monitoring.store.HistoryStore``, whose records it returns (re-exported
here); the entry points build it once, in the ``Workspace``.

    history = History(settings.history_db)
    with history.run("ingest") as run:
        with run.step("ingest"):
            ...
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from beryl._io import utc_now
from beryl.errors import StateBusyError, StateError, describe_os_error
from beryl.monitoring.results import DriftResult
from beryl.monitoring.store import (
    DriftRecord,
    HistoryStore,
    ModelDriftRecord,
    PromotionRecord,
    RunContext,
    RunOutcome,
    RunRecord,
    ScoreRecord,
    StepRecord,
    recorded_run,
)

__all__ = [
    "History",
    "HistoryBusyError",
    "HistoryError",
    "HistoryStore",
    "PromotionRecord",
    "RunContext",
    "RunOutcome",
    "RunRecord",
    "ScoreRecord",
    "StepRecord",
]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    command TEXT NOT NULL,
    started TEXT NOT NULL,
    ended TEXT,
    duration_s REAL,
    status TEXT NOT NULL DEFAULT 'running',
    exit_code INTEGER,
    summary TEXT,
    detail TEXT
);
CREATE TABLE IF NOT EXISTS steps (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id INTEGER NOT NULL REFERENCES runs(id),
    name TEXT NOT NULL,
    started TEXT NOT NULL,
    duration_s REAL,
    status TEXT NOT NULL DEFAULT 'running',
    detail TEXT
);
CREATE INDEX IF NOT EXISTS steps_by_name ON steps(name, id);
CREATE TABLE IF NOT EXISTS scores (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id INTEGER,
    time TEXT NOT NULL,
    version TEXT NOT NULL,
    role TEXT NOT NULL,
    data TEXT NOT NULL,
    f1 REAL,
    metrics TEXT
);
CREATE TABLE IF NOT EXISTS promotions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id INTEGER,
    time TEXT NOT NULL,
    action TEXT NOT NULL,
    from_version TEXT,
    to_version TEXT NOT NULL,
    from_f1 REAL,
    to_f1 REAL,
    reason TEXT
);
CREATE TABLE IF NOT EXISTS drift (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id INTEGER,
    time TEXT NOT NULL,
    reference TEXT,
    current TEXT,
    dataset_drift INTEGER,
    drift_share REAL,
    result TEXT NOT NULL
);
"""


class HistoryError(StateError):
    """The history database cannot be opened, read or written."""


class HistoryBusyError(HistoryError, StateBusyError):
    """Another process held the history database longer than this reader waits."""


class History:
    """Access to the workspace's history database."""

    def __init__(self, path: Path, *, timeout: float = 60.0) -> None:
        self.path = path
        self.timeout = timeout
        self._ready = False

    @contextlib.contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, timeout=self.timeout, isolation_level=None)
        except OSError as exc:
            message, hint = describe_os_error(exc, self.path)
            raise HistoryError(f"cannot open history database: {message}", hint=hint) from exc
        except sqlite3.Error as exc:
            raise self._error(exc) from exc
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(self.timeout * 1000)}")
            if not self._ready:
                self._initialise(conn)
            conn.row_factory = sqlite3.Row
            yield conn
        except sqlite3.Error as exc:
            raise self._error(exc) from exc
        finally:
            conn.close()

    @contextlib.contextmanager
    def _reader(self) -> Iterator[sqlite3.Connection | None]:
        """A read-only connection (never creates or changes a file); None: no database yet.

        On a workspace nobody may write to, WAL's shared-memory file cannot be made, so the
        database is then read as immutable.
        """
        if not self.path.exists():
            yield None
            return
        uri = self.path.resolve().as_uri()
        writable = os.access(self.path.parent, os.W_OK) and os.access(self.path, os.W_OK)
        try:
            conn = sqlite3.connect(
                f"{uri}?mode=ro" + ("" if writable else "&immutable=1"),
                uri=True,
                timeout=self.timeout,
                isolation_level=None,
            )
        except sqlite3.Error as exc:
            raise HistoryError(f"cannot open history database {self.path}: {exc}") from exc
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(self.timeout * 1000)}")
            conn.row_factory = sqlite3.Row
            tables = conn.execute("SELECT name FROM sqlite_master WHERE name = 'runs'").fetchall()
            yield conn if tables else None  # a database another process is still creating
        except sqlite3.Error as exc:
            raise self._error(exc) from exc
        except ValueError as exc:  # a recorded detail that is not JSON
            raise HistoryError(
                f"history database {self.path} holds a damaged record: {exc}"
            ) from exc
        finally:
            conn.close()

    def _error(self, exc: sqlite3.Error) -> HistoryError:
        text = str(exc)
        closed = [
            p
            for p in (self.path, self.path.parent)
            if p.exists() and not os.access(p, os.W_OK | (os.X_OK if p.is_dir() else 0))
        ]
        if closed and ("unable to open" in text or "readonly" in text):
            if os.statvfs(closed[0]).f_flag & os.ST_RDONLY:
                return HistoryError(
                    f"{closed[0]} is on a read-only file system (the history database cannot "
                    "be written)",
                    hint="read-only commands work there: history, models list, diagnose, "
                    "predict, serve; run the others where the workspace can be written",
                )
            return HistoryError(
                f"permission denied: {closed[0]} (the history database cannot be written)",
                hint="give the user running Beryl write access to it, or run Beryl as its "
                "owner; on a read-only workspace, read-only commands work",
            )
        if "locked" in text or "busy" in text:
            return HistoryBusyError(
                f"history database {self.path} is held by another process ({text})",
                hint="try again in a moment",
            )
        if "disk is full" in text or "disk I/O error" in text:
            return HistoryError(
                f"no space left on the disk holding {self.path} ({text})",
                hint="free some space there, then run the command again; the history is as it was",
            )
        if "readonly" in text or "read-only" in text:
            return HistoryError(
                f"history database {self.path} cannot be written: {text}",
                hint="the workspace is read-only (or the file is not yours): read-only commands "
                "work there; run the others where it can be written",
            )
        if "unable to open" in text:
            return HistoryError(
                f"cannot open history database {self.path}: {text}",
                hint="check that the workspace folder exists and that you may write to it",
            )
        if "no such table" in text:
            return HistoryError(
                f"history database {self.path} has none of Beryl's tables ({text})",
                hint="a command that writes history (e.g. `beryl run`) creates them",
            )
        return HistoryError(
            f"history database {self.path}: {text}",
            hint="if the file is damaged, move it aside; Beryl starts a new history",
        )

    def _initialise(self, conn: sqlite3.Connection) -> None:
        """Switch to WAL and create the tables, waiting for a writer that holds the database.

        Changing the journal mode does not wait on SQLite's busy timeout, so it is retried here.
        """
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                conn.execute("PRAGMA journal_mode = WAL")
                conn.executescript(_SCHEMA)
                break
            except sqlite3.OperationalError as exc:
                busy = "locked" in str(exc) or "busy" in str(exc)
                if not busy or time.monotonic() > deadline:
                    raise
                time.sleep(0.02)
        self._ready = True

    def _execute(self, sql: str, params: tuple[Any, ...] = ()) -> int:
        with self._connect() as conn:
            cursor = conn.execute(sql, params)
            return int(cursor.lastrowid or 0)

    # -- runs and steps -------------------------------------------------------------------------
    def start_run(self, command: str, detail: dict[str, Any] | None = None) -> int:
        return self._execute(
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
                outcome.duration_s,
                outcome.status,
                outcome.exit_code,
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
                step.duration_s,
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
        marks = ",".join("?" * len(commands))
        with self._connect() as conn:
            cursor = conn.execute(
                f"UPDATE runs SET status = 'interrupted', ended = ?, summary = "  # noqa: S608
                f"'ended without finishing (the process was killed)' "
                f"WHERE status = 'running' AND command IN ({marks})",
                (utc_now(), *commands),
            )
            return int(cursor.rowcount)

    def runs(self, limit: int = 20, command: str | None = None) -> list[RunRecord]:
        """The most recent runs (of ``command`` only, when given), newest first, with their
        steps."""
        with self._reader() as conn:
            if conn is None:
                return []
            if command is None:
                query, args = "SELECT * FROM runs ORDER BY id DESC LIMIT ?", (limit,)
            else:
                query = "SELECT * FROM runs WHERE command = ? ORDER BY id DESC LIMIT ?"
                args = (command, limit)  # type: ignore[assignment]
            rows = conn.execute(query, args).fetchall()
            return [
                RunRecord(
                    id=row["id"],
                    command=row["command"],
                    started=row["started"],
                    ended=row["ended"],
                    duration_s=row["duration_s"],
                    status=row["status"],
                    exit_code=row["exit_code"],
                    summary=row["summary"],
                    detail=json.loads(row["detail"] or "{}"),
                    steps=[
                        _step(s)
                        for s in conn.execute(
                            "SELECT * FROM steps WHERE run_id = ? ORDER BY id", (row["id"],)
                        )
                    ],
                )
                for row in rows
            ]

    def last_step(self, name: str) -> StepRecord | None:
        """The latest successful step of that name (e.g. the last ingestion's timing)."""
        with self._reader() as conn:
            if conn is None:
                return None
            row = conn.execute(
                "SELECT * FROM steps WHERE name = ? AND status = 'ok' ORDER BY id DESC LIMIT 1",
                (name,),
            ).fetchone()
            return None if row is None else _step(row)

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
                metrics.get("f1"),
                json.dumps(metrics, default=str),
            ),
        )

    def scores(self, limit: int = 500) -> list[ScoreRecord]:
        """The latest ``limit`` scores, oldest first."""
        rows = self._latest(
            "SELECT run_id, time, version, role, data, f1 FROM scores ORDER BY id DESC LIMIT ?",
            limit,
        )
        return [ScoreRecord(**dict(r)) for r in rows]

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
                move.get("from_f1"),
                move.get("to_f1"),
                move.get("reason"),
            ),
        )

    def promotions(self, limit: int = 500) -> list[PromotionRecord]:
        """The latest ``limit`` moves of the production pointer, oldest first."""
        rows = self._latest(
            "SELECT run_id, time, action, from_version, to_version, from_f1, to_f1, reason"
            " FROM promotions ORDER BY id DESC LIMIT ?",
            limit,
        )
        return [PromotionRecord(**dict(r)) for r in rows]

    def _latest(self, sql: str, limit: int) -> list[sqlite3.Row]:
        with self._reader() as conn:
            return [] if conn is None else conn.execute(sql, (limit,)).fetchall()[::-1]

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
                result.drift_share,
                json.dumps(data),
            ),
        )

    def latest_drift(self) -> DriftResult | None:
        """The latest drift check (a record that is no drift result is a damaged database)."""
        with self._reader() as conn:
            if conn is None:
                return None
            row = conn.execute("SELECT result FROM drift ORDER BY id DESC LIMIT 1").fetchone()
            return None if row is None else DriftResult.from_dict(json.loads(row["result"]))

    def drifts(self, limit: int = 50) -> list[DriftRecord]:
        """The latest ``limit`` data-drift checks, oldest first."""
        rows = self._latest(
            "SELECT run_id, time, result FROM drift ORDER BY id DESC LIMIT ?", limit
        )
        return [
            DriftRecord(r["run_id"], r["time"], DriftResult.from_dict(json.loads(r["result"])))
            for r in rows
        ]

    def model_drift_checks(self, limit: int = 100) -> list[ModelDriftRecord]:
        """The latest ``limit`` model-drift checks (``drift-check`` scores), oldest first."""
        rows = self._latest(
            "SELECT run_id, time, version, metrics FROM scores WHERE role = 'drift-check'"
            " ORDER BY id DESC LIMIT ?",
            limit,
        )
        return [
            ModelDriftRecord.from_score(
                r["run_id"], r["time"], r["version"], json.loads(r["metrics"] or "{}")
            )
            for r in rows
        ]


def _step(row: sqlite3.Row) -> StepRecord:
    return StepRecord(
        name=row["name"],
        duration_s=row["duration_s"],
        status=row["status"],
        started=row["started"],
        detail=json.loads(row["detail"] or "{}"),
    )
