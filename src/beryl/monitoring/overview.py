"""What the monitoring dashboard shows, gathered from the registry, the history and the dataset
(``beryl.monitoring.dashboard`` draws it)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from beryl._io import utc_now
from beryl.config import Settings
from beryl.data.manifest import FileRecord
from beryl.errors import BerylError, EmptyDatasetError
from beryl.monitoring.dashboard import (
    ConfusionMatrix,
    DashboardData,
    ModelQuality,
    ProductionModel,
    VersionRow,
)
from beryl.monitoring.diagnostics import ProfileSource, profile
from beryl.monitoring.livereport import LiveSummary, live_summary
from beryl.monitoring.panels import BatchRow, Decision, FileRow, Timeline
from beryl.monitoring.store import ScoreRecord
from beryl.workspace import Workspace

_REFUSED = ("quarantined", "duplicate-file")
_FIGURES = ("f1", "precision", "recall")


def timeline(
    workspace: Workspace | Settings,
    *,
    scores: Sequence[ScoreRecord] | None = None,
    quarantined: Sequence[FileRecord] | None = None,
) -> Timeline:
    """The monitoring history the dashboard and the report draw: model and data drift by pass,
    the last decision, the files not ingested as they are, and the dataset's batches.

    ``scores`` and ``quarantined`` (the history's scores, ``outstanding_quarantine``) are read
    here unless the caller already holds them."""
    from beryl.data.scan import outstanding_quarantine

    workspace = Workspace.of(workspace)
    history, dataset = workspace.history, workspace.dataset
    if quarantined is None:
        quarantined = outstanding_quarantine(workspace)
    waiting = {r.name for r in quarantined}
    files = [
        FileRow(r.name, r.status, r.reason, r.time, r.name in waiting and r.status == _REFUSED[0])
        for r in dataset.files
        if r.status in _REFUSED
    ]
    files.sort(key=lambda row: str(row.time or ""), reverse=True)  # newest first,
    files.sort(key=lambda row: not row.waiting)  # the files still waiting above the others
    batches = [BatchRow(b.id, b.created, b.rows, len(b.files)) for b in dataset.batches]
    return Timeline(
        model_drift=history.model_drift_checks(),
        drifts=history.drifts(),
        decision=last_decision(workspace, history.scores() if scores is None else scores),
        files=files,
        batches=batches,
    )


def last_decision(workspace: Workspace, scores: Sequence[ScoreRecord]) -> Decision | None:
    """The latest trained version's decision, and the figures of the candidate and of the
    production model it was compared with in the same pass (``scores`` say which; the figures
    are their cards')."""
    registry = workspace.registry
    ids = registry.ids()
    if not ids:
        return None
    latest = ids[-1]
    card = registry.card(latest)
    decided = card.decision
    if not decided:
        return None
    run_id = decided.get("run")
    compared = next(
        (
            s.version
            for s in reversed(scores)
            if s.role == "production" and s.run_id == run_id and s.version != latest
        ),
        None,
    )
    figures = {"candidate": {k: card.metrics.get(k) for k in _FIGURES}}
    if compared is not None:
        metrics = registry.card(compared).metrics
        figures["production"] = {k: metrics.get(k) for k in _FIGURES}
    return Decision(
        run_id=run_id,
        outcome=str(decided.get("outcome", "")),
        reason=str(decided.get("reason", "")),
        candidate=latest,
        production=compared,
        figures=figures,
        time=card.created,
    )


LiveSource = Callable[[Workspace], LiveSummary]


def dashboard_data(
    workspace: Workspace | Settings,
    *,
    runs: int = 15,
    profile_of: ProfileSource = profile,
    live_of: LiveSource = live_summary,
) -> DashboardData:
    """Everything the monitoring dashboard shows, from what the loop recorded and what the API
    and ``beryl predict`` were asked (``live_of``: the API's cached reader)."""
    workspace = Workspace.of(workspace)
    live, live_note = None, None
    if workspace.settings.live.enabled:
        try:
            live = live_of(workspace)
        except (BerylError, OSError) as exc:  # the rest of the page is still worth showing
            live_note = f"Live monitoring could not be read: {exc}"
    registry, history = workspace.registry, workspace.history
    scores = history.scores()  # read once: the F1 chart and the last decision
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
            positive=str(metrics.get("positive_label", prod_card.schema.get("positive_label"))),
        )
    since = None
    if prod_card is not None:
        since = next(
            (m.time for m in reversed(registry.moves()) if m.to_version == production), None
        )
    from beryl.data.scan import outstanding_quarantine

    quarantined = outstanding_quarantine(workspace)  # read once: the warnings and the files
    warnings = [
        f"Input file {q.name} is quarantined: {q.reason} (since {q.time}; fix or remove it)"
        for q in quarantined
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
        scores=scores,
        promotions=history.promotions(),
        drift=history.latest_drift(),
        missing_percent=missing,
        runs=[run for run in history.runs(runs) if run.command == "run"],
        confusion_matrix=matrix,
        quality=quality,
        warnings=warnings,
        timeline=timeline(workspace, scores=scores, quarantined=quarantined),
        live=live,
        live_note=live_note,
    )
