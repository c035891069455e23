"""Scoring: F1 for the positive label (and the other usual metrics) on labelled data.

The test data is read once per pass and every version is scored on that one frame::

    test_data = read_test_data(workspace, schema)      # frame, sha256, path, schema
    candidate = evaluate(workspace, "v0007", test_data)
    production = evaluate(workspace, "v0006", test_data)

Predictions come from ``beryl.model.predict.predict``, so the figures follow the same decision
rule as the API and ``beryl predict``.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd
from sklearn.exceptions import UndefinedMetricWarning
from sklearn.metrics import (
    accuracy_score,
    confusion_matrix,
    f1_score,
    precision_score,
    recall_score,
    roc_auc_score,
)

from beryl._io import atomic_write_text, utc_now
from beryl.config import Settings
from beryl.data.csvfiles import read_labelled
from beryl.data.dataset import Dataset
from beryl.data.schema import Schema
from beryl.errors import DataError, EmptyDatasetError
from beryl.model.card import ModelCard
from beryl.model.linear import LinearModel
from beryl.model.predict import predict
from beryl.model.registry import LATEST_SCORE_FILE
from beryl.workspace import Workspace


@dataclass(frozen=True, eq=False)
class TestData:
    """The labelled test data, read and cleaned once for a schema."""

    __test__: ClassVar[bool] = False  # not a pytest test class

    frame: pd.DataFrame
    sha256: str  # of the files' bytes, in order
    path: Path
    schema: Schema

    def describe(self) -> dict[str, Any]:
        """What a model card records about the data it was scored on."""
        return {"path": str(self.path), "sha256": self.sha256, "rows": len(self.frame)}


def read_test_data(workspace: Workspace | Settings, schema: Schema) -> TestData:
    """Read and clean the configured test data (a CSV file or a folder of them) for ``schema``."""
    workspace = Workspace.of(workspace)
    path = workspace.settings.test_data
    frame, digest = read_labelled(path, schema)
    return TestData(frame=frame, sha256=digest, path=path, schema=schema)


def compute_metrics(
    model: LinearModel, frame: pd.DataFrame, schema: Schema, source: str = "the labelled rows"
) -> dict[str, Any]:
    """F1, precision, recall, accuracy, ROC AUC and the confusion matrix for the positive label
    at the model's threshold, and how well its probabilities are calibrated (Brier score and
    a reliability curve).

    Labels the model does not know are refused: scored as negatives, they would silently
    change every figure.
    """
    if frame.empty:
        raise EmptyDatasetError("no labelled rows to score on")
    truth = frame[schema.target].to_numpy()
    _check_labels(truth, list(model.classes), schema, source)
    predictions = predict(model, frame[schema.features])
    positive = schema.positive_label
    y_true = truth == positive
    y_pred = np.fromiter((label == positive for label in predictions.labels), bool, len(truth))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        f1 = f1_score(y_true, y_pred, zero_division=0.0)
        precision = precision_score(y_true, y_pred, zero_division=0.0)
        recall = recall_score(y_true, y_pred, zero_division=0.0)
    roc_auc: float | None = None
    if 0 < y_true.sum() < len(y_true):
        roc_auc = float(roc_auc_score(y_true, np.asarray(predictions.chances)))
    matrix = confusion_matrix(y_true, y_pred, labels=[False, True])
    chances = np.asarray(predictions.chances, dtype=np.float64)
    return {
        "f1": float(f1),
        "precision": float(precision),
        "recall": float(recall),
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "roc_auc": roc_auc,
        "confusion_matrix": matrix.tolist(),
        "confusion_labels": class_names(model.classes, positive),
        "positive_label": positive,
        "threshold": model.threshold,
        "brier": float(np.mean((chances - y_true) ** 2)),
        "reliability": reliability(y_true, chances),
        "n": len(frame),
    }


def class_names(classes: Sequence[Any], positive: Any) -> list[str]:
    """The two classes' names, negative first, as the target column spells them: the same in
    the confusion matrix, the classification report, the predictions and the metrics."""
    others = [str(c) for c in classes if c != positive]
    return [others[0] if len(others) == 1 else f"not {positive}", str(positive)]


RELIABILITY_BINS = 10


def reliability(
    truth: np.ndarray, chances: np.ndarray, bins: int = RELIABILITY_BINS
) -> list[dict[str, Any]]:
    """Predicted probability against the observed rate of the positive label, in equal-width
    bins of the probability (the empty ones left out): a calibrated model's points lie on the
    diagonal."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(chances, edges[1:-1], right=True), 0, bins - 1)
    curve = []
    for index in range(bins):
        inside = which == index
        count = int(inside.sum())
        if count:
            curve.append(
                {
                    "low": float(edges[index]),
                    "high": float(edges[index + 1]),
                    "rows": count,
                    "predicted": float(chances[inside].mean()),
                    "observed": float(truth[inside].mean()),
                }
            )
    return curve


def _check_labels(truth: np.ndarray, classes: list[Any], schema: Schema, source: str) -> None:
    known = set(classes)
    unknown = [i for i, label in enumerate(truth.tolist()) if label not in known]
    if unknown:
        values = sorted({repr(truth[i]) for i in unknown})[:5]
        rows = ", ".join(str(i + 1) for i in unknown[:5]) + (" …" if len(unknown) > 5 else "")
        raise DataError(
            f"{source}: {len(unknown)} row(s) have label(s) {', '.join(values)} in "
            f"{schema.target!r} that the model does not know (its classes: "
            f"{', '.join(map(repr, classes))}); rows {rows}",
            hint="fix those labels in the test data, or check positive_label",
        )


@dataclass(frozen=True)
class Overlap:
    """Test rows that are also in the training data (by row hash): they flatter the score."""

    rows: int
    shared: int

    @property
    def share(self) -> float:
        return self.shared / self.rows if self.rows else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"rows": self.rows, "shared": self.shared, "share": self.share}

    def warning(self) -> str | None:
        if not self.shared:
            return None
        return (
            f"{self.shared} of {self.rows} test rows ({self.share:.0%}) are also in the training "
            "data: the test score is flattered (was test data copied into the input folder?)"
        )


def overlap_with_training(dataset: Dataset, frame: pd.DataFrame, schema: Schema) -> Overlap:
    """How many rows of the labelled test frame the dataset also holds (same row hash)."""
    from beryl.data.cleaning import to_arrow
    from beryl.data.rowhash import row_hashes

    if frame.empty or not dataset.batches:
        return Overlap(len(frame), 0)
    hashes = row_hashes(to_arrow(frame[schema.columns], schema))
    shared = np.zeros(len(hashes), dtype=bool)
    for run in dataset.hash_runs():
        if len(run):
            position = np.minimum(np.searchsorted(run, hashes), len(run) - 1)
            shared |= run[position] == hashes
    return Overlap(len(frame), int(shared.sum()))


def evaluate(
    workspace: Workspace | Settings, version: str, test_data: TestData | None = None
) -> dict[str, Any]:
    """Metrics of one version on the configured test data (nothing is written).

    ``test_data`` read once serves every version trained with its schema; a version with
    another schema (a column re-typed since) reads the files again for its own.
    """
    workspace = Workspace.of(workspace)
    model = workspace.registry.model(version)
    if test_data is None or test_data.schema != model.schema:
        test_data = read_test_data(workspace, model.schema)
    metrics = compute_metrics(model, test_data.frame, model.schema, str(test_data.path))
    metrics["test_data"] = test_data.describe()
    metrics["scored_at"] = utc_now()
    return metrics


def score(
    workspace: Workspace | Settings, version: str | None = None, test_data: TestData | None = None
) -> ModelCard:
    """Score a version (default: the latest trained) on the test data and record the metrics."""
    workspace = Workspace.of(workspace)
    registry = workspace.registry
    version = version or registry.latest()
    metrics = evaluate(workspace, version, test_data)
    card = registry.record_metrics(version, metrics)
    atomic_write_text(workspace.settings.model_folder / LATEST_SCORE_FILE, f"{metrics['f1']}\n")
    return card
