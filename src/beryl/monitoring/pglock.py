"""The pass lock on PostgreSQL: single flight across every machine that shares the history
database (``history_url``).

``PgLock`` is a ``beryl.lock.PassLock`` held as a session-level advisory lock
(``pg_try_advisory_lock``) on a connection of its own for the whole pass. Advisory locks belong
to one database, and the key is derived from the database's name, so the workspaces that share
a database share one lock. A holder that dies loses its session and the server drops the lock
with it; a held lock is ``PipelineBusyError`` at once, as with the lock file. It checks the
schema first, so a command on a database ``beryl history migrate`` has not made stops before it
changes anything::

    with PgLock("postgresql://beryl@db.example.com/beryl").held():
        ...  # no other pass runs on any machine sharing this database
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from beryl.errors import PipelineBusyError
from beryl.monitoring.history import HistoryError
from beryl.monitoring.pgschema import check_schema, database_error
from beryl.postgres import connect, masked

# Computed by the server from the database's name: one lock per database.
_KEY = "hashtextextended('beryl pass lock:' || current_database(), 0)"


class PgLock:
    """``PassLock`` on a PostgreSQL advisory lock (see the module docstring)."""

    def __init__(self, url: str, *, timeout: float = 10.0) -> None:
        self.url = url
        self.timeout = timeout

    def __repr__(self) -> str:
        return f"PgLock({masked(self.url)!r})"

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        import psycopg

        conn = connect(self.url, timeout=self.timeout, error=HistoryError)
        try:
            check_schema(conn, self.url)
            row = conn.execute(f"SELECT pg_try_advisory_lock({_KEY})").fetchone()
        except psycopg.Error as exc:
            conn.close()
            raise database_error(exc, self.url, self.timeout) from exc
        except BaseException:
            conn.close()
            raise
        if not (row and row[0]):
            conn.close()
            raise PipelineBusyError(
                f"another pass is running: the workspace lock in the history database "
                f"{masked(self.url)} is held (by this machine or another)",
                hint="wait for it to finish; overlapping passes are skipped, never run twice",
            )
        try:
            yield
        finally:
            # Unlocked at once, not when the server gets round to ending the session; a
            # session already gone took the lock with it.
            with contextlib.suppress(psycopg.Error):
                conn.execute(f"SELECT pg_advisory_unlock({_KEY})")
            conn.close()
