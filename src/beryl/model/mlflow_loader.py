"""The ``python_function`` flavour of a Beryl model exported for MLflow.

``beryl models export VERSION --format mlflow`` copies this file into the model directory's
``code/`` folder, and MLflow imports it from there: it needs scikit-learn, pandas and numpy,
never Beryl. ``mlflow.pyfunc.load_model(path).predict(frame)`` returns one row per record with
``label`` (decided at the version's threshold, as Beryl decides) and ``probability`` (of the
positive label), as Beryl's ``/prediction`` does.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd


class AttritionModel:
    """The exported estimator with the columns and decision Beryl gave it."""

    def __init__(self, estimator: Any, details: dict[str, Any]) -> None:
        self.estimator = estimator
        self.numeric = list(details["numeric_features"])
        self.categorical = list(details["categorical_features"])
        self.positive = list(details["classes"]).index(details["positive_label"])

    def predict(self, data: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        frame = data if isinstance(data, pd.DataFrame) else pd.DataFrame(data)
        missing = [c for c in self.numeric + self.categorical if c not in frame.columns]
        if missing:
            raise ValueError(f"the records lack the feature columns {', '.join(missing)}")
        inputs = pd.DataFrame(index=frame.index)
        for name in self.numeric:
            inputs[name] = pd.to_numeric(frame[name], errors="raise").astype(np.float64)
        for name in self.categorical:
            column = frame[name].astype(object)
            inputs[name] = column.where(column.notna(), np.nan)  # None, NaN and pd.NA alike
        labels = self.estimator.predict(inputs)
        chances = self.estimator.predict_proba(inputs)[:, self.positive]
        return pd.DataFrame({"label": labels, "probability": chances}, index=frame.index)


def _load_pyfunc(path: str) -> AttritionModel:
    """MLflow's entry point: ``path`` is the model directory."""
    folder = Path(path)
    details = json.loads((folder / "beryl.json").read_text())
    with (folder / "model.pkl").open("rb") as handle:
        estimator = pickle.load(handle)  # the estimator of this export: plain scikit-learn
    return AttritionModel(estimator, details)
