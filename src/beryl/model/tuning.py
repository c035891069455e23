"""Choosing the model's settings by cross-validation on the training data only.

Attrition data is imbalanced, and at a threshold of 0.5 a logistic regression predicts too few
leavers, which costs F1, the metric Beryl promotes on. ``search`` picks, from the training rows
alone (the test data stays the honest judge of promotion):

- ``class_weight`` and ``C`` from a small grid (``tuning.class_weight`` x ``tuning.C``), each
  combination scored by its cross-validated F1 at its own best threshold (the first in grid
  order among those within ``F1_TOLERANCE`` of the best); a parameter the ``model`` section of
  config.json sets is kept, not searched;
- the decision threshold that maximises F1 on the out-of-fold scores of the chosen setting;
- whether to calibrate: a sigmoid (Platt) map of the score, kept only when it lowers the
  cross-validated Brier score. Being linear in the score, it folds into the model's
  coefficients, so the served model stays one logistic regression.

On large data the search runs on a stratified sample of ``tuning.search_rows`` rows; the final
model is then fitted on every row with the chosen setting (``beryl.model.engine``).
"""

from __future__ import annotations

import itertools
import math
import warnings
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import pandas as pd

from beryl.data.schema import Schema

if TYPE_CHECKING:
    from beryl.config import TuningSettings

SEED = 0
CALIBRATION_GAIN = 0.01  # calibrate when it lowers the cross-validated Brier score by 1 %
# A setting must beat the grid's first (scikit-learn's defaults, as the grid lists them) by
# more than this cross-validated F1 to be chosen: smaller gaps are the folds' noise.
F1_TOLERANCE = 0.002
SEARCHED = ("class_weight", "C")


@dataclass(frozen=True)
class Candidate:
    """One setting of the grid and how it scored out of fold."""

    params: dict[str, Any]
    f1: float  # at its best threshold
    f1_at_half: float  # at the threshold of 0.5
    threshold: float


@dataclass(frozen=True)
class Calibration:
    """The sigmoid map of the positive score (``a * score + b``), and whether it was kept."""

    method: str  # "sigmoid" or "none"
    a: float = 1.0
    b: float = 0.0
    brier_raw: float | None = None  # cross-validated Brier score without it
    brier_calibrated: float | None = None  # and with it


@dataclass(frozen=True)
class Tuning:
    """What the search chose and why: recorded in the model card (``card.tuning``)."""

    enabled: bool
    params: dict[str, Any] = field(default_factory=dict)  # the chosen class_weight and C
    threshold: float = 0.5  # on the positive probability of the final (calibrated) model
    folds: int = 0
    search_rows: int = 0
    candidates: list[Candidate] = field(default_factory=list)
    calibration: Calibration = field(default_factory=lambda: Calibration("none"))
    note: str = ""  # why nothing was tuned, when nothing was

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def cv_f1(self) -> float | None:
        """The chosen setting's cross-validated F1 at the chosen threshold."""
        chosen = [c for c in self.candidates if c.params == self.params]
        return chosen[0].f1 if chosen else None


class FoldScorer(Protocol):
    """What the engine lends the search: the preprocessing of one fold, fitted once on its
    training rows (it does not depend on the searched settings), then an estimator per setting
    scoring the held rows for ``classes[1]`` (``decision_function``)."""

    def prepare(self, train: pd.DataFrame, labels: pd.Series, held: pd.DataFrame) -> Any: ...

    def score(self, params: dict[str, Any], prepared: Any) -> np.ndarray: ...


def describe(tuning: dict[str, Any]) -> list[str]:
    """How a version's settings were chosen (its card's ``tuning``), in a few lines of plain
    text for the CLI and the report; none for a card from before tuning."""
    if not tuning:
        return []
    threshold = f"decision threshold {tuning.get('threshold', 0.5):.3f}"
    if not tuning.get("enabled"):
        return [f"Not tuned ({tuning.get('note', 'off')}); {threshold}."]
    chosen = ", ".join(f"{k}={v}" for k, v in tuning["params"].items()) or "as configured"
    candidates = tuning.get("candidates", [])
    best = next((c for c in candidates if c["params"] == tuning["params"]), None)
    lines = [
        f"Chosen by {tuning['folds']}-fold cross-validation on {tuning['search_rows']} training "
        f"rows: {chosen}; {threshold}."
    ]
    if best is not None:
        lines.append(
            f"  cross-validated F1 {best['f1']:.4f} at that threshold, {best['f1_at_half']:.4f} "
            "at 0.5"
        )
    for c in candidates:
        setting = ", ".join(f"{k}={v}" for k, v in c["params"].items()) or "as configured"
        lines.append(f"  tried {setting}: F1 {c['f1']:.4f} (at 0.5: {c['f1_at_half']:.4f})")
    calibration = tuning.get("calibration", {})
    raw, calibrated = calibration.get("brier_raw"), calibration.get("brier_calibrated")
    if raw is not None and calibrated is not None:
        verdict = "kept" if calibration.get("method") == "sigmoid" else "not kept"
        lines.append(
            f"  sigmoid calibration {verdict}: cross-validated Brier score {calibrated:.4f} "
            f"with it, {raw:.4f} without"
        )
    if tuning.get("scale_features") is False:
        lines.append("  numeric features not scaled (scale_features: false)")
    return lines


def untuned(note: str) -> Tuning:
    return Tuning(enabled=False, note=note)


def grid(settings: TuningSettings, fixed: dict[str, Any]) -> list[dict[str, Any]]:
    """The settings to try: the grid's values for what ``fixed`` (config.json) leaves open."""
    axes: dict[str, list[Any]] = {}
    if "class_weight" not in fixed:
        axes["class_weight"] = list(settings.class_weight)
    if "C" not in fixed:
        axes["C"] = list(settings.C)
    names = list(axes)
    return [dict(zip(names, values, strict=True)) for values in itertools.product(*axes.values())]


def search(
    schema: Schema,
    frame: pd.DataFrame,
    settings: TuningSettings,
    fixed: dict[str, Any],
    scorer: FoldScorer,
) -> Tuning:
    """Choose the grid setting, threshold and calibration by stratified k-fold cross-validation
    on ``frame`` (the training rows); ``scorer`` fits and scores one fold."""
    labels = frame[schema.target]
    classes = sorted(pd.unique(labels).tolist(), key=str)
    if len(classes) != 2:
        return untuned(f"{len(classes)} classes: the threshold is tuned for two")
    positive = (labels == schema.positive_label).to_numpy()
    smaller = int(min(positive.sum(), (~positive).sum()))
    folds = min(settings.folds, smaller)
    if folds < 2:
        return untuned(f"only {smaller} row(s) of the smaller class: too few to cross-validate")
    sample = _stratified_sample(frame, positive, settings.search_rows)
    if len(sample) < len(frame):
        positive = (sample[schema.target] == schema.positive_label).to_numpy()
    # decision_function scores classes[1]; the positive label's score is its negation if it is
    # classes[0] (the order scikit-learn sorts the labels in).
    sign = 1.0 if _sorted_classes(labels)[1] == schema.positive_label else -1.0
    splits = _splits(positive, folds)
    features, target = sample[schema.features], sample[schema.target]
    prepared = [
        scorer.prepare(features.iloc[train], target.iloc[train], features.iloc[held])
        for train, held in splits
    ]
    candidates, out_of_fold = [], {}
    for params in grid(settings, fixed):
        scores = sign * _out_of_fold(scorer, params, prepared, splits, len(sample))
        cut, f1 = best_cut(positive, scores)
        candidates.append(Candidate(params, f1, _f1(positive, scores > 0.0), _probability(cut)))
        out_of_fold[len(candidates) - 1] = scores
    top = max(c.f1 for c in candidates)
    best = next(i for i, c in enumerate(candidates) if c.f1 >= top - F1_TOLERANCE)
    chosen, scores = candidates[best], out_of_fold[best]
    calibration = _calibration(scores, positive, splits, settings.calibration)
    cut, _ = best_cut(positive, calibration.a * scores + calibration.b)
    return Tuning(
        enabled=True,
        params=chosen.params,
        threshold=_probability(cut),
        folds=folds,
        search_rows=len(sample),
        candidates=candidates,
        calibration=calibration,
    )


def best_cut(positive: np.ndarray, scores: np.ndarray) -> tuple[float, float]:
    """The score above which predicting positive maximises F1 on these rows, and that F1.

    The cut lies halfway between the lowest score predicted positive and the score below it,
    so that a model scoring new rows a little differently keeps the same side on average.
    """
    from sklearn.metrics import precision_recall_curve

    precision, recall, thresholds = precision_recall_curve(positive, scores)
    with np.errstate(divide="ignore", invalid="ignore"):
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    index = int(np.argmax(f1[:-1]))  # the last point (recall 0) has no threshold
    lowest_positive = float(thresholds[index])
    below = scores[scores < lowest_positive]
    cut = (lowest_positive + float(below.max())) / 2 if below.size else lowest_positive - 1.0
    return cut, float(f1[index])


def _calibration(
    scores: np.ndarray, positive: np.ndarray, splits: list[tuple[np.ndarray, np.ndarray]], mode: str
) -> Calibration:
    """Fit the sigmoid map on out-of-fold scores and keep it if cross-validation says so."""
    if mode == "never":
        return Calibration("none")
    raw = _brier(positive, _expit(scores))
    calibrated = np.empty_like(scores)
    for train, held in splits:
        a, b = _platt(scores[train], positive[train])
        calibrated[held] = _expit(a * scores[held] + b)
    brier = _brier(positive, calibrated)
    a, b = _platt(scores, positive)
    keep = a > 0 and (mode == "always" or brier < raw * (1.0 - CALIBRATION_GAIN))
    if not keep:
        return Calibration("none", brier_raw=raw, brier_calibrated=brier)
    return Calibration("sigmoid", a, b, brier_raw=raw, brier_calibrated=brier)


def _platt(scores: np.ndarray, positive: np.ndarray) -> tuple[float, float]:
    from sklearn.linear_model import LogisticRegression

    fit = LogisticRegression(C=1e6, max_iter=1000).fit(scores.reshape(-1, 1), positive)
    return float(fit.coef_[0, 0]), float(fit.intercept_[0])


def _out_of_fold(
    scorer: FoldScorer,
    params: dict[str, Any],
    prepared: list[Any],
    splits: list[tuple[np.ndarray, np.ndarray]],
    rows: int,
) -> np.ndarray:
    from sklearn.exceptions import ConvergenceWarning

    scores = np.empty(rows)
    for fold, (_, held) in zip(prepared, splits, strict=True):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            scores[held] = scorer.score(params, fold)
    return scores


def _splits(positive: np.ndarray, folds: int) -> list[tuple[np.ndarray, np.ndarray]]:
    from sklearn.model_selection import StratifiedKFold

    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=SEED)
    return list(splitter.split(np.zeros(len(positive)), positive))


def _stratified_sample(frame: pd.DataFrame, positive: np.ndarray, rows: int) -> pd.DataFrame:
    """At most ``rows`` rows with the classes in the proportions of ``frame`` (fixed seed)."""
    if len(frame) <= rows:
        return frame
    from sklearn.model_selection import train_test_split

    kept, _ = train_test_split(
        np.arange(len(frame)), train_size=rows, stratify=positive, random_state=SEED
    )
    return frame.iloc[np.sort(kept)]


def _sorted_classes(labels: pd.Series) -> list[Any]:
    return sorted(pd.unique(labels).tolist())


def _f1(positive: np.ndarray, predicted: np.ndarray) -> float:
    from sklearn.metrics import f1_score

    return float(f1_score(positive, predicted, zero_division=0.0))


def _brier(positive: np.ndarray, probabilities: np.ndarray) -> float:
    return float(np.mean((probabilities - positive) ** 2))


def _expit(scores: np.ndarray) -> np.ndarray:
    from scipy.special import expit

    return np.asarray(expit(scores))


def _probability(cut: float) -> float:
    """The positive probability at a score, kept strictly between 0 and 1."""
    probability = 1.0 / (1.0 + math.exp(-cut)) if cut > -700 else 0.0
    return min(max(probability, 1e-9), 1.0 - 1e-9)
