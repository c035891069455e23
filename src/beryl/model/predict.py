"""The one prediction function: every path that predicts (the API's fast path and route,
``beryl predict``, scoring, diagnostics, reports) calls ``predict``.

The decision rule lives in one place, ``decide``: a record is predicted as the positive label
when its score for it is above the threshold's (logistic) score; ties go to the other class. For
a two-class model at the default threshold of 0.5 that is "probability of the positive label
above 0.5", computed on the scores, so no rounding of a probability can flip it. A model with
more classes predicts the class with the highest score::

    predictions = predict(model, frame)        # a DataFrame with the model's features
    predictions.labels, predictions.chances    # classes; probabilities of positive_label
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import pandas as pd

    from beryl.model.compiled import CompiledModel
    from beryl.model.linear import LinearModel

DEFAULT_THRESHOLD = 0.5


@dataclass(frozen=True)
class Predictions:
    """Predicted classes and the probability of the positive label, one per record."""

    labels: list[Any]
    chances: list[float]

    def __len__(self) -> int:
        return len(self.labels)


def threshold_score(threshold: float = DEFAULT_THRESHOLD) -> float:
    """The logistic score at which a probability equals ``threshold``."""
    return math.log(threshold / (1.0 - threshold))


def decide(
    positive_scores: np.ndarray, positive: Any, negative: Any, threshold: float
) -> np.ndarray:
    """The decision rule: ``positive`` where the score for it is above the threshold's score."""
    chosen = np.asarray(positive_scores) > threshold_score(threshold)
    labels = np.empty(len(chosen), dtype=object)
    labels[chosen] = positive
    labels[~chosen] = negative
    return labels


def predict(
    model: LinearModel,
    data: pd.DataFrame | Sequence[Mapping[str, Any]],
    *,
    compiled: CompiledModel | None = None,
) -> Predictions:
    """Predictions of ``model`` for a frame (its feature columns) or validated dict records.

    ``compiled``, the model's folded form when it has one, scores records without pandas;
    both forms apply ``decide`` and give the same answers.
    """
    import pandas as pd

    if not isinstance(data, pd.DataFrame):
        if compiled is not None:
            labels, chances = compiled.predict(data)
            return Predictions(list(labels), list(chances))
        data = _frame(model, data)
    elif compiled is not None:
        labels, chances = compiled.predict_frame(data)
        return Predictions(list(labels), list(chances))
    labels_array, chances_array = model.predict_frame(data)
    return Predictions(
        [_plain(v) for v in labels_array.tolist()], chances_array.astype(float).tolist()
    )


def _frame(model: LinearModel, records: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """Validated records as the frame the model scores: numeric features as float64."""
    import pandas as pd

    frame = pd.DataFrame(list(records), columns=model.schema.features)
    for column in model.schema.numeric:
        frame[column] = frame[column].astype("float64")
    return frame


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value
