"""What a pass checks about production before it trains: which batches it has judged, and
whether production still scores on the newly ingested rows (model drift)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from beryl.data.dataset import Dataset
from beryl.data.schema import Schema
from beryl.model.registry import Registry
from beryl.monitoring.results import DRIFTED, NOT_DRIFTED, NOT_TESTED


@dataclass(frozen=True)
class ModelDriftCheck:
    """The production model's F1 on newly ingested labelled rows against its recorded F1.

    ``verdict`` is DRIFTED, NOT_DRIFTED or NOT_TESTED (``note`` says why: too few new rows for
    an F1 that means anything, or no recorded F1 to compare with); ``model_drift`` is True only
    when DRIFTED."""

    version: str
    rows: int
    f1_new_data: float | None
    f1_recorded: float | None
    batches: list[str]
    tolerance: float
    model_drift: bool
    verdict: str = NOT_DRIFTED
    note: str | None = None

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def trained_on_production(registry: Registry, production: str) -> set[str]:
    """The batches the production model was trained on."""
    return set(registry.card(production).training.get("batches", []))


def covered_batches(registry: Registry, production: str | None) -> set[str]:
    """Batches already judged: production's training data, and the latest scored candidate's.

    A candidate that was kept out of production is not trained again on the same data: only a
    new batch makes a new candidate.
    """
    covered: set[str] = set()
    if production is not None:
        covered |= trained_on_production(registry, production)
    ids = registry.ids()
    if ids:
        latest = registry.card(ids[-1])
        if latest.decision:  # a pass decided about it (a kill before the decision: not judged)
            covered |= set(latest.training.get("batches", []))
    return covered


def model_drift(
    registry: Registry,
    production: str,
    dataset: Dataset,
    batches: list[str],
    tolerance: float,
    min_rows: int = 1,
) -> ModelDriftCheck:
    """Score the production model on the newly ingested labelled rows.

    Model drift: its F1 there is lower than its recorded F1 by more than ``tolerance``. Fewer
    than ``min_rows`` rows (``drift.min_rows``), or no recorded F1, is not tested: the F1 of a
    handful of rows says nothing about the model.
    """
    from beryl.model.scoring import compute_metrics

    card = registry.card(production)
    schema = Schema.from_dict(card.schema)
    frame = dataset.read(columns=[*schema.features, schema.target], batches=batches)
    recorded = card.f1
    f1 = None
    if len(frame):
        metrics = compute_metrics(registry.model(production), frame, schema, "the new batches")
        f1 = float(metrics["f1"])
    verdict, note = NOT_DRIFTED, None
    if len(frame) < min_rows:
        verdict = NOT_TESTED
        note = f"only {len(frame)} new labelled rows, fewer than min_rows={min_rows}"
    elif recorded is None:
        verdict, note = NOT_TESTED, f"{production} has no recorded F1 to compare with"
    elif f1 is not None and f1 < recorded - tolerance:
        verdict = DRIFTED
    return ModelDriftCheck(
        version=production,
        rows=len(frame),
        f1_new_data=f1,
        f1_recorded=recorded,
        batches=batches,
        tolerance=tolerance,
        model_drift=verdict == DRIFTED,
        verdict=verdict,
        note=note,
    )
