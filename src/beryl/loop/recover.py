"""Repair what a killed pass or a damaged file left, before a command changes the workspace.

``recover`` runs under the workspace lock at the start of every workspace-changing command (the
loop's own passes included): each store repairs itself (dataset, registry, deployment), then the
records are brought up to the promotion log: killed runs are marked interrupted, moves missing
from the history are recorded, and a report older than the production model a pass promoted is
written again.
"""

from __future__ import annotations

from beryl.config import Settings
from beryl.errors import IntegrityError
from beryl.model.pointer import Move
from beryl.monitoring.reporting import (
    REPORT_FILE,
    REPORT_RECORD,
    build_report,
    report_version,
)
from beryl.workspace import Workspace

# Commands that change the workspace and hold its lock while they run.
EXCLUSIVE_COMMANDS = (
    *("run", "ingest", "train", "score", "deploy", "promote", "rollback", "report"),
    *("sign", "retype", "set-aside", "webhooks"),
)


def recover(workspace: Workspace | Settings) -> list[str]:
    """Repair what a killed pass may have left (call under the workspace lock); what was done."""
    from beryl.model.deployment import repair as repair_deployment

    workspace = Workspace.of(workspace)
    repaired = workspace.dataset.repair(workspace.settings.write_csv_snapshot)
    workspace.forget_dataset()
    repaired += workspace.registry.repair()
    repaired += repair_deployment(workspace)
    repaired += _repair_records(workspace)
    return repaired


def _repair_records(workspace: Workspace) -> list[str]:
    """Bring the history and the report up to the promotion log after a killed pass."""
    from beryl.loop.promotion import record

    registry, history = workspace.registry, workspace.history
    repaired = []
    closed = history.close_interrupted(EXCLUSIVE_COMMANDS)
    if closed:
        repaired.append(f"marked {closed} killed run(s) as interrupted")
    recorded = {(p.time, p.to_version) for p in history.promotions(limit=100_000)}
    moves = registry.moves()
    for move in moves:
        if (move.time, move.to_version) not in recorded:
            record(workspace, move)
            repaired.append(f"recorded the {move.action} to {move.to_version} in the history")
    try:
        production = registry.production()
    except IntegrityError:  # a pointer the log cannot restore: refused by the commands that use it
        production = None
    if (
        production is not None
        and moves
        and _by_a_pass(moves[-1])
        and _stale_report(workspace, production)
    ):
        build_report(workspace, production)
        repaired.append(f"rewrote the report for {production}")
    return repaired


def _by_a_pass(move: Move) -> bool:
    """The move was made by a pass of the loop (which writes a report after it)."""
    return move.run_id is not None


def _stale_report(workspace: Workspace, production: str) -> bool:
    """A report exists in the model folder and is torn or describes another version (a pass
    asked not to report writes none, and none is written for it)."""
    folder = workspace.settings.model_folder
    exists = (folder / REPORT_FILE).exists() or (folder / REPORT_RECORD).exists()
    return exists and report_version(workspace) != production
