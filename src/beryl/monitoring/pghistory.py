"""The history database on PostgreSQL (``history_url`` in config.json): one history for every
machine that runs the loop on a workspace, with the pass lock in the same database
(``beryl.monitoring.pglock``).

It keeps what the SQLite store keeps, the same way: ids in the order rows were written, runs
newest first, scores, promotions and drift checks the latest ``limit`` oldest first, details
and metrics as the JSON text the SQLite store writes. Its schema is made only by
``beryl history migrate`` (``beryl.monitoring.pgschema``); the first use checks it, and a
database without the current schema is refused in one line naming that command::

    history = PgHistory("postgresql://beryl@db.example.com/beryl")
    with history.run("ingest") as run:
        ...
"""

from __future__ import annotations

import contextlib
import os
import select
import threading
import time
import weakref
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from beryl.monitoring.history import HistoryError
from beryl.monitoring.pgschema import check_schema, database_error
from beryl.monitoring.sqlhistory import Fetch, SqlHistory
from beryl.postgres import connect, masked

if TYPE_CHECKING:
    import psycopg

__all__ = ["PgHistory"]


def _clean(params: tuple[Any, ...]) -> tuple[Any, ...]:
    """Text PostgreSQL can store: a NUL character (which SQLite keeps) becomes U+FFFD."""
    return tuple(p.replace("\x00", "\ufffd") if isinstance(p, str) else p for p in params)


def _pg(sql: str) -> str:
    """A statement written with ``?`` parameter marks (none of them has a ``?`` or ``%`` of its
    own) in psycopg's ``%s`` style."""
    return sql.replace("?", "%s")


class _Idle:
    """The connections a store keeps between its calls, so a call costs a statement and not a
    login: at most ``_KEEP`` of them, none idle longer than ``_IDLE_S``, none the server has
    closed or written to meanwhile (its socket is readable), none used across a fork."""

    _KEEP = 4
    _IDLE_S = 30.0

    def __init__(self) -> None:
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._kept: list[tuple[float, psycopg.Connection[Any]]] = []

    def take(self) -> psycopg.Connection[Any] | None:
        with self._lock:
            while self._kept and os.getpid() == self._pid:
                since, conn = self._kept.pop()
                if time.monotonic() - since < self._IDLE_S and _quiet(conn):
                    return conn
                conn.close()
        return None

    def give(self, conn: psycopg.Connection[Any]) -> None:
        from psycopg.pq import TransactionStatus

        if os.getpid() == self._pid and conn.info.transaction_status == TransactionStatus.IDLE:
            with self._lock:
                if len(self._kept) < self._KEEP:
                    self._kept.append((time.monotonic(), conn))
                    return
        conn.close()

    def close(self) -> None:
        with self._lock:
            kept, self._kept = self._kept, []
        if os.getpid() == self._pid:  # never another process's sessions
            for _, conn in kept:
                conn.close()


def _quiet(conn: psycopg.Connection[Any]) -> bool:
    """An idle connection with nothing to read: the server has not ended its session."""
    if conn.closed or conn.broken:
        return False
    try:
        readable, _, _ = select.select([conn.fileno()], [], [], 0)
    except (OSError, ValueError):
        return False
    return not readable


class PgHistory(SqlHistory):
    """``HistoryStore`` on PostgreSQL: statements bounded by ``timeout`` seconds, on a few
    connections kept between calls."""

    def __init__(self, url: str, *, timeout: float = 60.0) -> None:
        self.url = url
        self.timeout = timeout
        self._ready = False
        self._idle = _Idle()
        weakref.finalize(self, self._idle.close)

    def __repr__(self) -> str:
        return f"PgHistory({masked(self.url)!r})"

    def close(self) -> None:
        """Close the connections kept for the next calls (a later call opens one again)."""
        self._idle.close()

    @contextlib.contextmanager
    def _connect(self) -> Iterator[psycopg.Connection[Any]]:
        conn = self._idle.take() or connect(self.url, timeout=self.timeout, error=HistoryError)
        import psycopg

        try:
            if not self._ready:
                check_schema(conn, self.url)
                self._ready = True
            yield conn
        except psycopg.Error as exc:
            conn.close()
            raise database_error(exc, self.url, self.timeout) from exc
        except ValueError as exc:  # a recorded detail that is not JSON, or not a drift result
            conn.close()
            raise HistoryError(
                f"history database {masked(self.url)} holds a damaged record: {exc}"
            ) from exc
        except BaseException:
            conn.close()
            raise
        self._idle.give(conn)

    def _execute(self, sql: str, params: tuple[Any, ...] = ()) -> int:
        with self._connect() as conn:
            return int(conn.execute(_pg(sql), _clean(params)).rowcount)

    def _insert(self, sql: str, params: tuple[Any, ...]) -> int:
        with self._connect() as conn:
            row = conn.execute(_pg(sql + " RETURNING id"), _clean(params)).fetchone()
            return int(row[0]) if row else 0

    @contextlib.contextmanager
    def _reading(self) -> Iterator[Fetch]:
        from psycopg.rows import dict_row

        with self._connect() as conn:
            cursor = conn.cursor(row_factory=dict_row)

            def fetch(sql: str, params: tuple[Any, ...]) -> list[dict[str, Any]]:
                return cursor.execute(_pg(sql), params).fetchall()

            yield fetch

    def _in(self, column: str, values: Sequence[Any]) -> tuple[str, tuple[Any, ...]]:
        return f"{column} = ANY(?)", (list(values),)

    def _real(self, value: Any) -> float | None:
        return None if value is None else float(value)

    def _limit(self, limit: int) -> int | None:
        return None if limit < 0 else limit  # a negative limit is no limit, as in SQLite
