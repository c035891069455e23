"""The pass-lock seam's contract, run against every implementation: a lock file, and an
advisory lock on a real PostgreSQL server (``tests/pg_server.py``, a database per test)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from tests.pg_server import shared

from beryl.errors import PipelineBusyError
from beryl.lock import FileLock, PassLock
from beryl.monitoring.pglock import PgLock

IMPLEMENTATIONS: dict[str, Callable[[Path], PassLock]] = {
    "file": lambda d: FileLock(d / ".lock"),
    "postgresql": lambda d: PgLock(shared().database_for(d)),
}
# How another process takes the same lock (for the implementations above).
HOLDER = {
    "file": "from beryl.lock import FileLock; lock = FileLock(Path(sys.argv[1]) / '.lock')",
    "postgresql": (
        "from beryl.monitoring.pglock import PgLock; "
        "lock = PgLock((Path(sys.argv[1]) / 'history_url').read_text())"
    ),
}
# The session fixture that starts what an implementation needs (a server).
SERVERS = {"postgresql": "postgres"}


@pytest.fixture(params=list(IMPLEMENTATIONS))
def kind(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param in SERVERS:
        request.getfixturevalue(SERVERS[request.param])
    IMPLEMENTATIONS[request.param](tmp_path)  # what a holder process finds in tmp_path
    return str(request.param)


def test_held_once_at_a_time_in_one_process(kind: str, tmp_path: Path) -> None:
    first, second = IMPLEMENTATIONS[kind](tmp_path), IMPLEMENTATIONS[kind](tmp_path)
    assert isinstance(first, PassLock)
    with first.held(), pytest.raises(PipelineBusyError), second.held():
        pass
    with second.held():  # released when the block ended
        pass


def test_released_when_the_block_fails(kind: str, tmp_path: Path) -> None:
    lock = IMPLEMENTATIONS[kind](tmp_path)
    with pytest.raises(RuntimeError), lock.held():
        raise RuntimeError("the pass failed")
    with lock.held():
        pass


def _holder(kind: str, tmp_path: Path) -> subprocess.Popen[str]:
    code = textwrap.dedent(
        f"""
        import sys, time
        from pathlib import Path
        {HOLDER[kind]}
        with lock.held():
            print("held", flush=True)
            time.sleep(60)
        """
    )
    process = subprocess.Popen(
        [sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    assert process.stdout is not None and process.stdout.readline().strip() == "held"
    return process


def test_another_process_holding_it_makes_this_one_busy(kind: str, tmp_path: Path) -> None:
    holder = _holder(kind, tmp_path)
    try:
        with pytest.raises(PipelineBusyError), IMPLEMENTATIONS[kind](tmp_path).held():
            pass
    finally:
        holder.kill()
        holder.wait()
        assert holder.stdout is not None
        holder.stdout.close()


def test_a_killed_holder_releases_it(kind: str, tmp_path: Path) -> None:
    holder = _holder(kind, tmp_path)
    holder.kill()
    holder.wait()
    assert holder.stdout is not None
    holder.stdout.close()
    deadline = time.monotonic() + 10
    while True:
        try:
            with IMPLEMENTATIONS[kind](tmp_path).held():
                break
        except PipelineBusyError:
            assert time.monotonic() < deadline, "the lock outlived its holder"
            time.sleep(0.05)
