"""The lock seam: one pass (or workspace-changing command) at a time, however it is started.

``PassLock`` is what the loop needs from a lock: ``held()`` either holds it for the block or
raises ``PipelineBusyError`` at once (a tick that finds a pass running is skipped, never queued).
``FileLock`` is today's implementation: an OS lock on a file in the workspace, released by the
kernel when its holder dies. The contract tests in ``tests/test_lock_contract.py`` run against
the protocol, so a database lock (for replicas on several machines) runs them unchanged::

    with workspace.lock.held():
        ...  # no other pass runs in this workspace
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol, runtime_checkable

from beryl.errors import PipelineBusyError, StateError, describe_os_error


@runtime_checkable
class PassLock(Protocol):
    """A single-flight lock around a pass."""

    def held(self) -> contextlib.AbstractContextManager[None]:
        """Hold the lock for the block; ``PipelineBusyError`` at once when another holds it."""


class FileLock:
    """``PassLock`` on a lock file (``filelock``: ``flock`` on POSIX, released on death)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        from filelock import FileLock as _FileLock
        from filelock import Timeout

        lock = _FileLock(str(self.path), timeout=0)
        try:
            lock.acquire()
        except Timeout as exc:
            raise PipelineBusyError(
                f"another pass is running in {self.path.parent} (lock {self.path})",
                hint="wait for it to finish; overlapping passes are skipped, never run twice",
            ) from exc
        except OSError as exc:
            message, hint = describe_os_error(exc, self.path)
            raise StateError(f"cannot take the workspace lock: {message}", hint=hint) from exc
        try:
            yield
        finally:
            lock.release()
