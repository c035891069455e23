"""Scoring: F1 for the positive label (and the other usual metrics) on labelled data."""

from __future__ import annotations

import hashlib
import warnings
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
from beryl.cleaning import clean_dataset, read_csv_bytes
from beryl.config import Settings
from beryl.dataset import Dataset
from beryl.errors import DataError, EmptyDatasetError
from beryl.registry import LATEST_SCORE_FILE, ModelCard, Registry
from beryl.schema import Schema


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


def compute_metrics(model: Any, frame: pd.DataFrame, schema: Schema) -> dict[str, Any]:
    """F1, precision, recall, accuracy, ROC AUC and the confusion matrix for the positive label."""
    if frame.empty:
        raise EmptyDatasetError("no labelled rows to score on")
    truth = frame[schema.target].to_numpy()
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


def schema_for(settings: Settings) -> Schema:
    schema = Dataset(settings.output_folder).schema
    if schema is None:
        raise EmptyDatasetError(
            f"no data has been ingested into {settings.output_folder} yet",
            hint="run `beryl ingest` first",
        )
    return schema


def evaluate(settings: Settings, registry: Registry, version: str) -> dict[str, Any]:
    """Metrics of one version on the configured test data (nothing is written)."""
    card = registry.card(version)
    schema = Schema.from_dict(card.schema)
    frame, digest = read_labelled(settings.test_data, schema)
    metrics = compute_metrics(registry.model(version), frame, schema)
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
