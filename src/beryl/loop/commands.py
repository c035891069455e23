"""How a command runs against a workspace: under the lock with a repair first, and recorded.

``exclusive`` is for commands that change the workspace: it holds the workspace lock (never
beside a pass), repairs what a killed pass left, and records the command as a run with one timed
step in the history. ``recorded`` is for commands that change nothing: it records them when the
history can be written and lets them run on a read-only workspace otherwise::

    with exclusive(workspace, "train") as (run, detail):
        card = train(workspace)
        detail.update(version=card.id)
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

from beryl._io import utc_now
from beryl.errors import StateError
from beryl.monitoring.store import RunContext, StepRecord
from beryl.workspace import Workspace

log = logging.getLogger(__name__)

Note = Callable[[str], None]


class Unrecorded:
    """Stands in for a recorded run when the history cannot be written."""

    run_id = 0
    status = "ok"
    exit_code = 0
    summary = ""
    detail: dict[str, Any] = {}  # noqa: RUF012  (never written to: a read-only stand-in)


Run = RunContext | Unrecorded


@contextlib.contextmanager
def locked_run(workspace: Workspace, command: str, *, repair: bool = True) -> Iterator[RunContext]:
    """Hold the lock, repair (unless ``repair`` is False) and record ``command`` as a run."""
    from beryl.loop.recover import recover

    with workspace.lock.held(), workspace.synced():
        started, started_at = time.perf_counter(), utc_now()
        try:
            repaired = recover(workspace) if repair else []
            with workspace.history.run(command) as run:
                if repaired:
                    duration = time.perf_counter() - started
                    step = StepRecord("recover", duration, "ok", started_at, {"repaired": repaired})
                    workspace.history.record_step(run.run_id, step)
                yield run
        finally:
            _send_events(workspace, started_at)
            _track(workspace)


def _send_events(workspace: Workspace, started_at: str) -> None:
    """Queue and deliver the webhook events of what the command did (never failing it: an
    event that is not delivered now stays due in the outbox)."""
    if not workspace.settings.webhooks:
        return
    from beryl.monitoring.webhooks import sweep

    try:
        sweep(workspace, started=started_at)
    except Exception as exc:  # the history or a receiver failing must not fail the command
        log.warning("webhook events not sent now (they stay due): %s", exc)


def _track(workspace: Workspace) -> None:
    """Log what the history holds and MLflow lacks (never failing the command; an MLflow
    that is down is reported once and caught up with later)."""
    if workspace.settings.mlflow.tracking_uri is None:
        return
    from beryl.monitoring.tracking import track

    track(workspace)


@contextlib.contextmanager
def exclusive(
    workspace: Workspace, command: str, *, repair: bool = True
) -> Iterator[tuple[RunContext, dict[str, Any]]]:
    """``locked_run`` with one timed step named after the command."""
    with locked_run(workspace, command, repair=repair) as run, run.step(command) as detail:
        yield run, detail


@contextlib.contextmanager
def recorded(
    workspace: Workspace, command: str, *, note: Note | None = None
) -> Iterator[tuple[Run, dict[str, Any]]]:
    """Record a command that changes nothing; on a history that cannot be written, run it
    unrecorded (and say so through ``note``)."""
    with contextlib.ExitStack() as stack:
        try:
            run = stack.enter_context(workspace.history.run(command))
        except StateError as exc:
            if note is not None:
                note(f"not recorded in the history ({exc.message})")
            yield Unrecorded(), {}
            return
        yield run, stack.enter_context(run.step(command))
