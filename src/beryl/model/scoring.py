"""Scoring: F1 for the positive label (and the other usual metrics) on labelled data."""

from __future__ import annotations

import hashlib
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
from beryl.data.cleaning import clean_dataset, read_csv_bytes
from beryl.data.dataset import Dataset
from beryl.data.schema import Schema
from beryl.errors import DataError, EmptyDatasetError
from beryl.model.registry import LATEST_SCORE_FILE, ModelCard, Registry


def csv_files(path: Path) -> list[Path]:
    """The CSV files a path names: the file itself, or the regular ``*.csv`` files of a folder."""
    if path.is_file():
        return [path]
    if path.is_dir():
        return sorted(
            p
            for p in path.iterdir()
            if p.suffix.lower() == ".csv" and p.is_file() and not p.is_symlink()
        )
    raise DataError(f"{path} does not exist", hint="fix test_data_path in config.json")


def read_labelled(path: Path, schema: Schema) -> tuple[pd.DataFrame, str]:
    """Read and clean labelled CSV data (a file or a folder); returns it with a content hash."""
    files = csv_files(path)
    if not files:
        raise EmptyDatasetError(f"no CSV files in {path}", hint="put labelled test data there")
    digest = hashlib.sha256()
    frames = []
    for file in files:
        data = file.read_bytes()
        digest.update(data)
        raw = read_csv_bytes(data, str(file), schema.text_columns)
        frames.append(clean_dataset(raw, schema, str(file)))
    return pd.concat(frames, ignore_index=True), digest.hexdigest()


def predict_proba_positive(model: Any, frame: pd.DataFrame, positive_label: Any) -> np.ndarray:
    """Probability of the positive class for each row."""
    classes = list(model.classes_)
    proba = model.predict_proba(frame)
    return np.asarray(proba[:, classes.index(positive_label)], dtype=float)


def compute_metrics(
    model: Any, frame: pd.DataFrame, schema: Schema, source: str = "the labelled rows"
) -> dict[str, Any]:
    """F1, precision, recall, accuracy, ROC AUC and the confusion matrix for the positive label.

    Labels the model does not know are refused: scored as negatives, they would silently
    change every figure.
    """
    if frame.empty:
        raise EmptyDatasetError("no labelled rows to score on")
    truth = frame[schema.target].to_numpy()
    _check_labels(truth, list(model.classes_), schema, source)
    predicted = model.predict(frame[schema.features])
    positive = schema.positive_label
    y_true = truth == positive
    y_pred = np.asarray(predicted) == positive
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        f1 = f1_score(y_true, y_pred, zero_division=0.0)
        precision = precision_score(y_true, y_pred, zero_division=0.0)
        recall = recall_score(y_true, y_pred, zero_division=0.0)
    roc_auc: float | None = None
    if 0 < y_true.sum() < len(y_true) and positive in list(model.classes_):
        scores = predict_proba_positive(model, frame[schema.features], positive)
        roc_auc = float(roc_auc_score(y_true, scores))
    matrix = confusion_matrix(y_true, y_pred, labels=[False, True])
    return {
        "f1": float(f1),
        "precision": float(precision),
        "recall": float(recall),
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "roc_auc": roc_auc,
        "confusion_matrix": matrix.tolist(),
        "confusion_labels": ["not " + str(positive), str(positive)],
        "positive_label": positive,
        "n": len(frame),
    }


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


def evaluate(settings: Settings, registry: Registry, version: str) -> dict[str, Any]:
    """Metrics of one version on the configured test data (nothing is written)."""
    card = registry.card(version)
    schema = Schema.from_dict(card.schema)
    frame, digest = read_labelled(settings.test_data, schema)
    metrics = compute_metrics(registry.model(version), frame, schema, str(settings.test_data))
    metrics["test_data"] = {"path": str(settings.test_data), "sha256": digest, "rows": len(frame)}
    metrics["scored_at"] = utc_now()
    return metrics


def score(settings: Settings, version: str | None = None) -> ModelCard:
    """Score a version (default: the latest trained) on the test data and record the metrics."""
    registry = Registry(settings.model_folder)
    version = version or registry.latest()
    metrics = evaluate(settings, registry, version)
    card = registry.record_metrics(version, metrics)
    atomic_write_text(settings.model_folder / LATEST_SCORE_FILE, f"{metrics['f1']}\n")
    return card
