"""The history database: every run, its steps and timings, scores, drift results and promotions.

SQLite in WAL mode, in the workspace (``beryl.sqlite``). This module owns it: nothing else writes
SQL to it but the statements it shares with the PostgreSQL store (``beryl.monitoring.sqlhistory``).
Writers from several processes (a pass and the API) wait for each other instead of failing.
It implements ``beryl.monitoring.store.HistoryStore``, whose records it returns (re-exported
here); the entry points build it once, in the ``Workspace``.

    history = History(settings.history_db)
    with history.run("ingest") as run:
        with run.step("ingest"):
            ...
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from beryl.errors import StateBusyError, StateError, describe_os_error
from beryl.monitoring.sqlhistory import OUTBOX_TABLES, Fetch, SqlHistory
from beryl.monitoring.store import (
    HistoryStore,
    PromotionRecord,
    RunContext,
    RunOutcome,
    RunRecord,
    ScoreRecord,
    StepRecord,
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
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,"""
_SCHEMA += OUTBOX_TABLES.format(exists="IF NOT EXISTS ")


class HistoryError(StateError):
    """The history database cannot be opened, read or written."""


class HistoryBusyError(HistoryError, StateBusyError):
    """Another process held the history database longer than this reader waits."""


class History(SqlHistory):
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
    def _reading(self) -> Iterator[Fetch | None]:
        """Reads on a read-only connection (never creates or changes a file); None: no
        database yet.

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

            def fetch(sql: str, params: tuple[Any, ...]) -> list[sqlite3.Row]:
                return conn.execute(sql, params).fetchall()

            yield fetch if tables else None  # a database another process is still creating
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
            return int(conn.execute(sql, params).rowcount)

    def _insert(self, sql: str, params: tuple[Any, ...]) -> int:
        with self._connect() as conn:
            return int(conn.execute(sql, params).lastrowid or 0)

    def _in(self, column: str, values: Sequence[Any]) -> tuple[str, tuple[Any, ...]]:
        return f"{column} IN ({','.join('?' * len(values))})", tuple(values)
