"""Where production moves: the one place that moves the pointer, deploys and records the move.

A pass promotes through ``promote``; ``beryl deploy``, ``beryl models promote`` and ``beryl models
rollback`` go through ``deploy`` and ``rollback``. Each move is logged by the registry (signed),
materialised in ``prod_deployment_path`` and recorded in the history, and a repair that finds a
logged move missing from the history records it with ``record``.
"""

from __future__ import annotations

from dataclasses import asdict

from beryl.config import Settings
from beryl.model.deployment import Deployment
from beryl.model.registry import Move
from beryl.workspace import Workspace


def record(workspace: Workspace, move: Move, run_id: int | None = None) -> None:
    """Record a move of the production pointer in the history (under ``run_id``, by default
    the pass that made it)."""
    workspace.history.record_promotion(asdict(move), move.run_id if run_id is None else run_id)


def deploy(
    workspace: Workspace | Settings,
    version: str | None = None,
    *,
    reason: str = "deployed by hand",
    run_id: int | None = None,
) -> Deployment:
    """Put ``version`` (default: the latest) into production, materialise it, record the move
    (``run_id``: the command's run in the history; the logged move names only a pass's run)."""
    from beryl.model.deployment import deploy as move_and_materialise

    workspace = Workspace.of(workspace)
    deployment = move_and_materialise(workspace, version, reason)
    if deployment.move is not None:
        record(workspace, deployment.move, run_id)
    return deployment


def rollback(
    workspace: Workspace | Settings,
    *,
    reason: str = "rolled back by hand",
    run_id: int | None = None,
) -> Deployment:
    """Put the version production replaced back into production, and record the move."""
    from beryl.model.deployment import rollback as move_back

    workspace = Workspace.of(workspace)
    deployment = move_back(workspace, reason)
    if deployment.move is not None:
        record(workspace, deployment.move, run_id)
    return deployment
