"""What the monitoring dashboard shows, gathered from the registry, the history and the dataset
(``beryl.monitoring.dashboard`` draws it)."""

from __future__ import annotations

from beryl._io import utc_now
from beryl.config import Settings
from beryl.errors import EmptyDatasetError
from beryl.monitoring.dashboard import (
    ConfusionMatrix,
    DashboardData,
    ModelQuality,
    ProductionModel,
    VersionRow,
)
from beryl.monitoring.diagnostics import ProfileSource, profile, quarantined_files
from beryl.workspace import Workspace


def dashboard_data(
    workspace: Workspace | Settings, *, runs: int = 15, profile_of: ProfileSource = profile
) -> DashboardData:
    """Everything the monitoring dashboard shows, from what the loop recorded."""
    workspace = Workspace.of(workspace)
    registry, history = workspace.registry, workspace.history
    production = registry.production()
    cards = registry.cards()
    prod_card = next((card for card in cards if card.id == production), None)
    try:
        missing = profile_of(workspace)["missing_percent"]
    except EmptyDatasetError:
        missing = {}
    matrix = None
    if prod_card is not None and prod_card.metrics.get("confusion_matrix"):
        matrix = ConfusionMatrix(
            matrix=prod_card.metrics["confusion_matrix"],
            labels=prod_card.metrics.get("confusion_labels", []),
            version=prod_card.id,
        )
    quality = None
    if prod_card is not None and prod_card.metrics:
        from beryl.model.tuning import describe

        metrics = prod_card.metrics
        quality = ModelQuality(
            version=prod_card.id,
            threshold=metrics.get("threshold", prod_card.tuning.get("threshold")),
            chosen=describe(prod_card.tuning),
            metrics={k: metrics.get(k) for k in ("precision", "recall", "f1", "brier")},
            reliability=metrics.get("reliability") or [],
        )
    since = None
    if prod_card is not None:
        since = next(
            (m.time for m in reversed(registry.moves()) if m.to_version == production), None
        )
    warnings = [
        f"Input file {q['name']} is quarantined: {q['reason']} (since {q['time']}; fix or "
        "remove it)"
        for q in quarantined_files(workspace)
    ]
    overlap = (prod_card.metrics.get("test_overlap") or {}) if prod_card else {}
    if overlap.get("shared"):
        warnings.append(
            f"{overlap['shared']} of {overlap['rows']} test rows ({overlap['share']:.0%}) are also "
            f"in {production}'s training data: its test score is flattered (was test data copied "
            "into the input folder?)"
        )
    return DashboardData(
        title=f"Beryl — workspace {workspace.root}",
        generated_at=utc_now(),
        production=None
        if prod_card is None
        else ProductionModel(version=prod_card.id, f1=prod_card.f1, since=since),
        versions=[
            VersionRow(
                id=card.id,
                created=card.created,
                f1=card.f1,
                rows=card.training.get("rows"),
                production=card.id == production,
            )
            for card in reversed(cards)
        ],
        scores=history.scores(),
        promotions=history.promotions(),
        drift=history.latest_drift(),
        missing_percent=missing,
        runs=[run for run in history.runs(runs) if run.command == "run"],
        confusion_matrix=matrix,
        quality=quality,
        warnings=warnings,
    )
