"""The one prediction function: every path that predicts (the API's fast path and route,
``beryl predict``, scoring, diagnostics, reports) calls ``predict``.

The decision rule lives in one place, ``DecisionRule``: a record is predicted as the positive
label when its score for it is above the threshold's (logistic) score; ties go to the other
class. For a two-class model at the default threshold of 0.5 that is "probability of the
positive label above 0.5", computed on the scores, so no rounding of a probability can flip it.
A model's threshold is its own attribute (``LinearModel.threshold``, in its signed file). A
model with more classes predicts the class with the highest score::

    predictions = predict(model, frame)        # a DataFrame with the model's features
    predictions.labels, predictions.chances    # classes; probabilities of positive_label
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

if TYPE_CHECKING:
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
    if not 0.0 < threshold < 1.0:
        raise ValueError(f"a threshold is a probability between 0 and 1 (exclusive): {threshold}")
    return math.log(threshold / (1.0 - threshold))


@dataclass(frozen=True)
class DecisionRule:
    """Beryl's decision for a two-class model: ``positive`` where the score for it is above
    ``threshold``'s score, else ``negative`` (a tie is not positive)."""

    positive: Any
    negative: Any
    threshold: float = DEFAULT_THRESHOLD
    cut: float = field(init=False, repr=False)
    _table: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "cut", threshold_score(self.threshold))
        pair = (self.negative, self.positive)
        whole = all(isinstance(c, int) and not isinstance(c, bool) for c in pair)
        table = np.array(pair, dtype=None if whole else object)
        table.flags.writeable = False
        object.__setattr__(self, "_table", table)

    def label(self, positive_score: float) -> Any:
        """The class of one record, from its score for the positive label."""
        return self.positive if positive_score > self.cut else self.negative

    def labels(self, positive_scores: np.ndarray) -> np.ndarray:
        """The classes of many records (an integer array for integer classes, else objects)."""
        return self._table[(np.asarray(positive_scores) > self.cut).astype(np.intp)]


def predict(
    model: LinearModel,
    data: pd.DataFrame | Sequence[Mapping[str, Any]],
    *,
    compiled: CompiledModel | None = None,
) -> Predictions:
    """Predictions of ``model`` for a frame (its feature columns) or validated dict records.

    ``compiled``, the model's folded form when it has one, scores records without pandas;
    both forms apply the model's ``DecisionRule`` and give the same answers.
    """
    if not isinstance(data, pd.DataFrame):
        if compiled is not None:
            labels, chances = compiled.predict(data)
            return Predictions(labels, chances)
        data = _frame(model, data)
    elif compiled is not None:
        labels, chances = compiled.predict_frame(data)
        return Predictions(labels, chances)
    labels_array, chances_array = model.predict_frame(data)
    return Predictions(
        [_plain(v) for v in labels_array.tolist()], chances_array.astype(float).tolist()
    )


def _frame(model: LinearModel, records: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """Validated records as the frame the model scores: numeric features as float64."""
    frame = pd.DataFrame(list(records), columns=model.schema.features)
    for column in model.schema.numeric:
        frame[column] = frame[column].astype("float64")
    return frame


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value
