"""The one prediction function: every path that predicts (the API's fast path and route,
``beryl predict``, scoring, diagnostics, reports) calls ``predict``; every path that gives reason
codes (``POST /prediction`` with ``explain``, ``beryl predict --explain``) calls ``explain``.

The decision rule lives in one place, ``DecisionRule``: a record is predicted as the positive
label when its score for it is above the threshold's (logistic) score; ties go to the other
class. For a two-class model at the default threshold of 0.5 that is "probability of the
positive label above 0.5", computed on the scores, so no rounding of a probability can flip it.
A model's threshold is its own attribute (``LinearModel.threshold``, in its signed file). A
model with more classes predicts the class with the highest score::

    predictions = predict(model, frame)        # a DataFrame with the model's features
    predictions.labels, predictions.chances    # classes; probabilities of positive_label

Reason codes of a two-class model are exact: per record, the contribution of every feature to
the logit of the positive label (``LinearModel.contributions``), the ``count`` largest by size::

    reasons = explain(model, frame, 3)         # Explanations: one Explanation per record
    reasons[0].reasons                         # (Reason(feature, contribution, value), ...)
    reasons[0].logit                           # base_value + every feature's contribution
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, overload

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from beryl.model.compiled import CompiledModel
    from beryl.model.linear import LinearModel

DEFAULT_THRESHOLD = 0.5
_MOST_REASONS = 1 << 31  # a larger count asks for every feature: kept as a plain int


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


# -- reason codes ---------------------------------------------------------------------------------
class ExplainError(ValueError):
    """Reason codes that cannot be given: a count that is not a whole number of at least 1, or a
    model with more than two classes. The message starts with a verb: callers put the field's
    name in front (``explain ...``, ``--explain ...``)."""


@dataclass(frozen=True)
class Reason:
    """One feature's part in a record's logit for the positive label."""

    feature: str
    contribution: float  # to the logit of the positive label
    value: Any  # the record's value of the feature, None when missing (the model imputed it)

    def to_dict(self) -> dict[str, Any]:
        return {"feature": self.feature, "value": self.value, "contribution": self.contribution}


@dataclass(frozen=True)
class Explanation:
    """A record's reason codes: ``base_value`` plus every feature's contribution is ``logit``;
    ``reasons`` are the largest contributions by size (ties in feature order)."""

    base_value: float
    logit: float  # of the positive label: log(p / (1 - p))
    reasons: tuple[Reason, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "base_value": self.base_value,
            "logit": self.logit,
            "reasons": [reason.to_dict() for reason in self.reasons],
        }


@dataclass(frozen=True, eq=False)
class Explanations(Sequence[Explanation]):
    """Reason codes of many records as arrays; indexing (or ``records()``) gives each record's
    ``Explanation``. ``top[i]`` holds the positions in ``features`` of record i's reasons, and
    ``contributions[i]`` their contributions, largest by size first."""

    features: tuple[str, ...]
    base_value: float
    logits: np.ndarray  # (records,)
    top: np.ndarray  # (records, reasons): positions in ``features``
    contributions: np.ndarray  # (records, reasons)
    # The records explained, for ``Reason.value``: a frame, or validated dict records.
    source: pd.DataFrame | Sequence[Mapping[str, Any]] = field(repr=False)

    def __len__(self) -> int:
        return len(self.logits)

    @overload
    def __getitem__(self, index: int) -> Explanation: ...

    @overload
    def __getitem__(self, index: slice) -> Sequence[Explanation]: ...

    def __getitem__(self, index: int | slice) -> Explanation | Sequence[Explanation]:
        if isinstance(index, slice):
            return self.records()[index]
        row = range(len(self))[index]
        if isinstance(self.source, pd.DataFrame):
            values = [self.source[f].iat[row] for f in self.features]
        else:
            values = [self.source[row][f] for f in self.features]
        return self._record(row, [_value(v) for v in values])

    def __iter__(self) -> Iterator[Explanation]:
        return iter(self.records())

    def records(self) -> list[Explanation]:
        """Every record's ``Explanation`` (each feature's values converted once)."""
        columns = self._columns()
        return [self._record(row, [c[row] for c in columns]) for row in range(len(self))]

    def to_dicts(self) -> list[dict[str, Any]]:
        """Every record's ``Explanation.to_dict()``, made straight from the arrays (what the API
        answers: no objects in between)."""
        features, base, columns = self.features, self.base_value, self._columns()
        return [
            {
                "base_value": base,
                "logit": logit,
                "reasons": [
                    {"feature": features[j], "value": columns[j][row], "contribution": c}
                    for j, c in zip(positions, contributions, strict=True)
                ],
            }
            for row, (logit, positions, contributions) in enumerate(
                zip(
                    self.logits.tolist(),
                    self.top.tolist(),
                    self.contributions.tolist(),
                    strict=True,
                )
            )
        ]

    def _columns(self) -> list[list[Any]]:
        """Each feature's values, one per record, as ``Reason.value`` has them."""
        if isinstance(self.source, pd.DataFrame):
            return [[_value(v) for v in self.source[f].tolist()] for f in self.features]
        return [[_value(record[f]) for record in self.source] for f in self.features]

    def _record(self, row: int, values: list[Any]) -> Explanation:
        """Record ``row``'s explanation; ``values``: its value of each feature."""
        positions, contributions = self.top[row].tolist(), self.contributions[row].tolist()
        return Explanation(
            self.base_value,
            float(self.logits[row]),
            tuple(
                Reason(self.features[j], c, values[j])
                for j, c in zip(positions, contributions, strict=True)
            ),
        )


def explain_count(value: Any) -> int:
    """How many reasons per record a caller asked for: a whole number of at least 1, given as an
    integer or as its digits in text (a query string, a command-line option). Anything else
    (0, negative, fractional, true/false, other text) is ``ExplainError``. Not clamped here:
    ``explain`` gives at most one reason per feature."""
    count = 0
    if isinstance(value, str):
        text = value.strip()
        if text.isascii() and text.isdigit():
            digits = text.lstrip("0")
            count = _MOST_REASONS if len(digits) > 9 else int(digits or "0")
    elif isinstance(value, int) and not isinstance(value, bool):
        count = min(value, _MOST_REASONS)
    if count < 1:
        raise ExplainError(
            f"must be a whole number of at least 1 (reasons per record), got {_shown(value)}"
        )
    return count


def check_explainable(model: LinearModel) -> None:
    """``ExplainError`` unless the model has two classes (the only ones with one logit)."""
    if len(model.classes) != 2:
        raise ExplainError(
            f"needs a two-class model; this model has {len(model.classes)} classes "
            f"({', '.join(map(str, model.classes))})"
        )


def explain(
    model: LinearModel, data: pd.DataFrame | Sequence[Mapping[str, Any]], count: int
) -> Explanations:
    """Reason codes of a two-class ``model`` for a frame (its feature columns) or validated dict
    records: per record the base value, its logit for the positive label and the ``count``
    features (at most all of them) that move it most, with their exact contributions.

    Dict records are explained without pandas (``LinearModel.record_contributions``), with the
    same numbers as the same records in a frame. ``ExplainError`` for a model with more classes
    or a count below 1; ``ValueError`` for records too extreme to score, as ``predict``.
    """
    check_explainable(model)
    _check_reasons(count)
    if isinstance(data, pd.DataFrame):
        contributions, logits, base = model.contributions(data)
    else:  # no DataFrame for records: the same arithmetic, so the same numbers
        contributions, logits, base = model.record_contributions(data)
    features = tuple(model.schema.features)
    size = min(count, len(features))
    # Stable: equal sizes keep the features' order.
    top = np.argsort(-np.abs(contributions), axis=1, kind="stable")[:, :size]
    return Explanations(
        features=features,
        base_value=float(base),
        logits=logits,
        top=top,
        contributions=np.take_along_axis(contributions, top, axis=1),
        source=data,
    )


# Up to this many dict records are explained in plain Python: arrays cost more than the sums.
_PLAIN_RECORDS = 16


def explain_dicts(
    model: LinearModel, data: pd.DataFrame | Sequence[Mapping[str, Any]], count: int
) -> list[dict[str, Any]]:
    """``explain(model, data, count).to_dicts()``: the same dicts, the same errors. A few dict
    records (what a single API request sends) are explained without arrays."""
    if isinstance(data, pd.DataFrame) or len(data) > _PLAIN_RECORDS:
        return explain(model, data, count).to_dicts()
    check_explainable(model)
    _check_reasons(count)
    contributions, logits, base = model.plain_contributions(data)
    features = tuple(model.schema.features)
    size = min(count, len(features))
    answers = []
    for record, parts, logit in zip(data, contributions, logits, strict=True):
        # Largest by size first; equal sizes keep the features' order (as ``explain``'s sort).
        top = sorted(range(len(parts)), key=lambda j: -abs(parts[j]))[:size]
        reasons = [
            {"feature": features[j], "value": _value(record[features[j]]), "contribution": parts[j]}
            for j in top
        ]
        answers.append({"base_value": base, "logit": logit, "reasons": reasons})
    return answers


def _check_reasons(count: Any) -> None:
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ExplainError(f"must be a whole number of at least 1, got {_shown(count)}")


def _value(value: Any) -> Any:
    """A record's value as JSON has it: None when missing, plain Python numbers and text."""
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return None
    return _plain(value)


def _shown(value: Any) -> str:
    """A caller's value in a message, cut short."""
    try:
        text = repr(value)
    except ValueError:  # an integer too long to print
        text = "a number too long to print"
    return text if len(text) <= 40 else f"{text[:37]}..."
