"""Serving fast path: a fitted binary Beryl pipeline folded into a few plain arrays.

Imputation, scaling, one-hot encoding and the logistic coefficients collapse into
``score = b + Σ a_j·x_j + Σ w_j[category]``, so scoring one record is a few multiplications and
dict look-ups with no pandas and no scikit-learn call. Probabilities match the pipeline's to
rounding (1e-9); classes follow Beryl's decision rule (``beryl.model.predict.DecisionRule``) at
the model's threshold, as the data-only model's do. ``fold`` makes one from a two-class
data-only model (``beryl.model.linear.LinearModel``) and answers ``None`` when folding would
cost precision; callers then score with the data-only model itself.

For example, with the demo schema::

    compiled = CompiledModel.from_pipeline(pipeline, schema)
    record = {"lastmonth_activity": 12.0, "lastyear_activity": None, "number_of_employees": 40}
    compiled.predict([record])  # ([1], [0.867...]): classes, probabilities of positive_label
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy.special import expit

from beryl.data.schema import Schema
from beryl.model.linear import LinearModel, NotLinearError
from beryl.model.predict import DEFAULT_THRESHOLD, DecisionRule
from beryl.model.reasons import is_missing

# Folding the scaler's centring into the intercept costs about 3·2**-53·Σ|mean·coef/scale| of
# absolute precision in the score (under 1e-9 up to this bound); past it the pipeline keeps serving.
_MAX_FOLDED = 1e6


@dataclass(frozen=True, eq=False)
class CompiledModel:
    """A fitted binary Beryl pipeline as plain arrays: score = b + Σ a_j·x_j + Σ w[c][value].

    ``numeric`` values that are missing (None or NaN) take ``fill``; a ``categorical`` value the
    encoder never learned weighs 0, a missing one weighs ``missing_category_weight``. Records
    must hold every feature; categories are matched as text, exactly as given (the API strips
    them and turns numbers into text first). Scores that are not finite (an infinite input, or
    a finite one too extreme for the model) raise ``ValueError``, as the pipeline does.
    """

    numeric: tuple[str, ...]
    fill: np.ndarray
    weights: np.ndarray
    categorical: tuple[str, ...]
    category_weights: tuple[dict[str, float], ...]
    missing_category_weight: tuple[float, ...]
    intercept: float
    classes: tuple[Any, Any]
    positive_index: int
    threshold: float = DEFAULT_THRESHOLD
    _rule: DecisionRule = field(init=False, repr=False, compare=False)
    _numeric_plan: tuple[tuple[str, float, float], ...] = field(
        init=False, repr=False, compare=False
    )
    _categorical_plan: tuple[tuple[str, dict[str, float], float], ...] = field(
        init=False, repr=False, compare=False
    )
    _category_index: tuple[pd.Index, ...] = field(init=False, repr=False, compare=False)
    _category_table: tuple[np.ndarray, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        fill = np.array(self.fill, dtype=np.float64)
        weights = np.array(self.weights, dtype=np.float64)
        if fill.shape != (len(self.numeric),) or weights.shape != (len(self.numeric),):
            raise ValueError("fill and weights need one value per numeric feature")
        counts = {len(self.categorical), len(self.category_weights)}
        if counts != {len(self.missing_category_weight)}:
            raise ValueError("category weights need one entry per categorical feature")
        if self.positive_index not in (0, 1):
            raise ValueError("positive_index must be 0 or 1")
        fill.flags.writeable = False
        weights.flags.writeable = False
        tables = tuple(dict(t) for t in self.category_weights)
        setattr_ = object.__setattr__
        setattr_(self, "fill", fill)
        setattr_(self, "weights", weights)
        setattr_(self, "category_weights", tables)
        setattr_(self, "intercept", float(self.intercept))
        positive = self.classes[self.positive_index]
        negative = self.classes[1 - self.positive_index]
        setattr_(self, "_rule", DecisionRule(positive, negative, self.threshold))
        setattr_(
            self,
            "_numeric_plan",
            tuple(zip(self.numeric, fill.tolist(), weights.tolist(), strict=True)),
        )
        setattr_(
            self,
            "_categorical_plan",
            tuple(
                (name, table, float(missing))
                for name, table, missing in zip(
                    self.categorical, tables, self.missing_category_weight, strict=True
                )
            ),
        )
        # For frames: position of each value among the categories, -1 (the appended 0) if unknown.
        setattr_(self, "_category_index", tuple(pd.Index(list(t), dtype=object) for t in tables))
        setattr_(
            self,
            "_category_table",
            tuple(np.array([*t.values(), 0.0], dtype=np.float64) for t in tables),
        )

    @classmethod
    def from_pipeline(cls, pipeline: Any, schema: Schema) -> CompiledModel | None:
        """Fold a fitted ``build_pipeline`` pipeline; ``None`` when it is any other shape."""
        try:
            return LinearModel.from_pipeline(pipeline, schema).compiled()
        except NotLinearError:
            return None

    def decision(self, rows: Sequence[Mapping[str, Any]]) -> np.ndarray:
        """Scores of dict records (the logistic model's ``decision_function``)."""
        if len(rows) == 1:
            return np.array([self._score(rows[0])], dtype=np.float64)
        scores = np.full(len(rows), self.intercept, dtype=np.float64)
        if self.numeric:
            matrix = np.array(
                [[row[name] for name in self.numeric] for row in rows], dtype=np.float64
            ).reshape(len(rows), len(self.numeric))
            matrix = np.where(np.isnan(matrix), self.fill, matrix)
            scores += matrix @ self.weights
        for name, table, missing in self._categorical_plan:
            scores += np.fromiter(
                (_category_weight(row[name], table, missing) for row in rows),
                dtype=np.float64,
                count=len(rows),
            )
        _check_finite(scores)
        return scores

    def decision_frame(self, frame: pd.DataFrame) -> np.ndarray:
        """Scores of a frame holding the feature columns, computed column by column."""
        scores = np.full(len(frame), self.intercept, dtype=np.float64)
        if self.numeric:
            matrix = frame[list(self.numeric)].to_numpy(dtype=np.float64, na_value=np.nan)
            matrix = np.where(np.isnan(matrix), self.fill, matrix)
            scores += matrix @ self.weights
        for name, index, table, missing in zip(
            self.categorical,
            self._category_index,
            self._category_table,
            self.missing_category_weight,
            strict=True,
        ):
            column = frame[name]
            weights = table[index.get_indexer(pd.Index(column))]
            weights[column.isna().to_numpy()] = missing
            scores += weights
        _check_finite(scores)
        return scores

    def predict(self, rows: Sequence[Mapping[str, Any]]) -> tuple[list[Any], list[float]]:
        """Predicted classes and positive-label probabilities of dict records."""
        if len(rows) == 1:
            score = self._score(rows[0])
            chance = float(expit(score))
            if self.positive_index == 0:
                chance, score = 1.0 - chance, -score
            return [self._rule.label(score)], [chance]
        return self._answer(self.decision(rows))

    def predict_frame(self, frame: pd.DataFrame) -> tuple[list[Any], list[float]]:
        """Predicted classes and positive-label probabilities of a frame's rows."""
        return self._answer(self.decision_frame(frame))

    def _score(self, row: Mapping[str, Any]) -> float:
        total = self.intercept
        for name, fill, weight in self._numeric_plan:
            value = row[name]
            if value is None or value != value:
                value = fill
            total += value * weight
        for name, table, missing in self._categorical_plan:
            total += _category_weight(row[name], table, missing)
        if not math.isfinite(total):
            raise ValueError(_NOT_FINITE)
        return float(total)

    def _answer(self, scores: np.ndarray) -> tuple[list[Any], list[float]]:
        chances = expit(scores)
        if self.positive_index == 0:
            chances, scores = 1.0 - chances, -scores
        return self._rule.labels(scores).tolist(), chances.astype(np.float64).tolist()


_NOT_FINITE = "the model cannot score these records: a score is not finite (inputs too extreme)"


def _check_finite(scores: np.ndarray) -> None:
    if not np.isfinite(scores).all():
        raise ValueError(_NOT_FINITE)


def _category_weight(value: Any, table: dict[str, float], missing: float) -> float:
    weight = table.get(value)
    if weight is not None:
        return weight
    return missing if is_missing(value) else 0.0


def fold(model: LinearModel) -> CompiledModel | None:
    """Fold a two-class data-only model into score arrays; ``None`` when it has more classes
    or when folding the centring would cost precision."""
    if len(model.classes) != 2:
        return None
    schema = model.schema
    coef = model.coef[0]
    width = len(schema.numeric)
    weights = coef[:width] / model.scale
    centring = (model.mean * weights).tolist()
    if math.fsum(abs(c) for c in centring) > _MAX_FOLDED:
        return None
    tables: list[dict[str, float]] = []
    missing: list[float] = []
    offset = width
    for imputed, learned in zip(model.categorical_fill, model.categories, strict=True):
        column = coef[offset : offset + len(learned)].tolist()
        offset += len(learned)
        text = all(isinstance(c, str) for c in learned)
        # A never-observed column (its one category the imputed 0) weighs only when missing.
        tables.append(dict(zip(map(str, learned), column, strict=True)) if text else {})
        # A missing value becomes the imputer's statistic, then goes through the encoder.
        missing.append(next((w for c, w in zip(learned, column, strict=True) if c == imputed), 0.0))
    return CompiledModel(
        numeric=tuple(schema.numeric),
        fill=model.numeric_fill,
        weights=weights,
        categorical=tuple(schema.categorical),
        category_weights=tuple(tables),
        missing_category_weight=tuple(missing),
        intercept=math.fsum([float(model.intercept[0]), *(-c for c in centring)]),
        classes=(model.classes[0], model.classes[1]),
        positive_index=model.positive_index,
        threshold=model.threshold,
    )
