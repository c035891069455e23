"""The data-drift result as it crosses module boundaries: made by ``drift``, kept by the history,
answered by ``GET /drift`` and drawn by the dashboard and the report.

Its JSON (``to_dict``) is the shape the history has always stored and the API has always
answered; ``from_dict`` reads what any version wrote::

    result = check_batches(workspace, ["b1"], ["b2"], reference_label="v0001")
    result.dataset_drift, result.features["lastmonth_activity"].distance
    DriftResult.from_dict(result.to_dict()) == result

A feature's verdict has three states: drifted, not drifted, and not tested (``tested`` is False
and ``note`` says why: too few rows).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

DRIFTED, NOT_DRIFTED, NOT_TESTED = "drifted", "not drifted", "not tested"


@dataclass(frozen=True)
class FeatureDrift:
    """One feature's test and distance: numeric features carry the two means, categorical ones
    the categories the reference never saw."""

    drifted: bool
    test: str
    statistic: float | None
    p_value: float | None
    distance: float | None
    distance_name: str
    threshold: float | None
    reference_mean: float | None = None
    current_mean: float | None = None
    new_categories: tuple[str, ...] | None = None
    new_category_share: float | None = None
    note: str | None = None  # why the feature was not tested

    @property
    def tested(self) -> bool:
        """Whether a test was run (a feature with too few rows is neither drifted nor stable)."""
        return self.p_value is not None

    @property
    def verdict(self) -> str:
        if not self.tested:
            return NOT_TESTED
        return DRIFTED if self.drifted else NOT_DRIFTED

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "verdict": self.verdict,
            "drifted": self.drifted,
            "test": self.test,
            "statistic": self.statistic,
            "p_value": self.p_value,
            "distance": self.distance,
            "distance_name": self.distance_name,
            "threshold": self.threshold,
        }
        extras = {
            "reference_mean": self.reference_mean,
            "current_mean": self.current_mean,
            "new_categories": None if self.new_categories is None else list(self.new_categories),
            "new_category_share": self.new_category_share,
            "note": self.note,
        }
        return data | {k: v for k, v in extras.items() if v is not None}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FeatureDrift:
        new = data.get("new_categories")
        return cls(
            drifted=bool(data["drifted"]),
            test=str(data["test"]),
            statistic=_number(data.get("statistic")),
            p_value=_number(data.get("p_value")),
            distance=_number(data.get("distance")),
            distance_name=str(data.get("distance_name") or "distance"),
            threshold=_number(data.get("threshold")),
            reference_mean=_number(data.get("reference_mean")),
            current_mean=_number(data.get("current_mean")),
            new_categories=None if new is None else tuple(str(c) for c in new),
            new_category_share=_number(data.get("new_category_share")),
            note=None if data.get("note") is None else str(data["note"]),
        )


@dataclass(frozen=True)
class DriftSample:
    """The rows compared on one side: the reference names the model trained on them."""

    rows: int
    batches: tuple[str, ...] = ()
    model_version: str | None = None

    def to_dict(self) -> dict[str, Any]:
        version = {} if self.model_version is None else {"model_version": self.model_version}
        return {"rows": self.rows, **version, "batches": list(self.batches)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DriftSample:
        version = data.get("model_version")
        return cls(
            rows=int(data["rows"]),
            batches=tuple(str(b) for b in data.get("batches") or ()),
            model_version=None if version is None else str(version),
        )


@dataclass(frozen=True)
class DriftResult:
    """Per-feature drift of a batch against a reference, and the dataset-level verdict."""

    reference: DriftSample
    current: DriftSample
    dataset_drift: bool
    drift_share: float
    drifted_features: tuple[str, ...]
    features: Mapping[str, FeatureDrift] = field(default_factory=dict)

    @property
    def untested_features(self) -> tuple[str, ...]:
        """Features with too few rows to test: neither drifted nor stable."""
        return tuple(name for name, f in self.features.items() if not f.tested)

    @property
    def verdict(self) -> str:
        """``drifted``, ``not drifted``, or ``not tested`` when no feature could be tested."""
        if self.features and len(self.untested_features) == len(self.features):
            return NOT_TESTED
        return DRIFTED if self.dataset_drift else NOT_DRIFTED

    @property
    def note(self) -> str | None:
        """Why the verdict leaves features out (None when every feature was tested)."""
        untested = self.untested_features
        if not untested:
            return None
        why = next((f.note for f in self.features.values() if f.note and not f.tested), None)
        why = why.removeprefix("not tested: ") if why else None
        which = (
            "no feature tested"
            if len(untested) == len(self.features)
            else f"{', '.join(untested)} not tested"
        )
        return which + (f": {why}" if why else "")

    def headline(self) -> dict[str, Any]:
        """The verdict without the per-feature detail (what a run's record keeps)."""
        return {
            "verdict": self.verdict,
            "dataset_drift": self.dataset_drift,
            "drift_share": self.drift_share,
            "drifted_features": list(self.drifted_features),
            "note": self.note,
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "reference": self.reference.to_dict(),
            "current": self.current.to_dict(),
            **self.headline(),
            "features": {name: f.to_dict() for name, f in self.features.items()},
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DriftResult:
        """A result as ``to_dict`` wrote it; ``ValueError`` names what does not fit."""
        try:
            return cls(
                reference=DriftSample.from_dict(data["reference"]),
                current=DriftSample.from_dict(data["current"]),
                dataset_drift=bool(data["dataset_drift"]),
                drift_share=float(data["drift_share"]),
                drifted_features=tuple(str(n) for n in data["drifted_features"]),
                features={
                    str(name): FeatureDrift.from_dict(feature)
                    for name, feature in (data.get("features") or {}).items()
                },
            )
        except (KeyError, TypeError, AttributeError, ValueError) as exc:
            raise ValueError(f"not a data-drift result ({type(exc).__name__}: {exc})") from exc

    @classmethod
    def of(
        cls,
        features: Mapping[str, FeatureDrift],
        reference: DriftSample,
        current: DriftSample,
        dataset_drift_share: float,
    ) -> DriftResult:
        """The result of these features: the dataset drifts when at least
        ``dataset_drift_share`` of the features that could be tested drifted (none tested:
        the verdict is "not tested", never "not drifted")."""
        drifted = tuple(name for name, f in features.items() if f.drifted)
        tested = sum(f.tested for f in features.values())
        share = len(drifted) / tested if tested else 0.0
        return cls(
            reference=reference,
            current=current,
            dataset_drift=bool(tested) and share >= dataset_drift_share,
            drift_share=share,
            drifted_features=drifted,
            features=dict(features),
        )


def _number(value: Any) -> float | None:
    return None if value is None else float(value)
