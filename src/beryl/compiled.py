"""Serving fast path: a fitted binary Beryl pipeline folded into a few plain arrays.

Imputation, scaling, one-hot encoding and the logistic coefficients collapse into
``score = b + Σ a_j·x_j + Σ w_j[category]``, so scoring one record is a few multiplications and
dict look-ups with no pandas and no scikit-learn call. Predictions and probabilities match the
pipeline's to rounding (1e-9); ``CompiledModel.from_pipeline`` answers ``None`` for anything it
cannot reproduce exactly, and callers then keep using the pipeline.

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
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer, OneHotEncoder, StandardScaler

from beryl.schema import Schema
from beryl.training import as_object

# Folding the scaler's centring into the intercept costs about 3·2**-53·Σ|mean·coef/scale| of
# absolute precision in the score (under 1e-9 up to this bound); past it the pipeline keeps serving.
_MAX_FOLDED = 1e6


class _NotCompilable(Exception):
    """The pipeline is not the shape Beryl builds, or folding it would lose precision."""


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
            return _compile(pipeline, schema)
        except _NotCompilable:
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
                chance = 1.0 - chance
            return [self.classes[1] if score > 0 else self.classes[0]], [chance]
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
            chances = 1.0 - chances
        negative, positive = self.classes
        predictions = [positive if s else negative for s in (scores > 0).tolist()]
        return predictions, chances.astype(np.float64).tolist()


_NOT_FINITE = "the model cannot score these records: a score is not finite (inputs too extreme)"


def _check_finite(scores: np.ndarray) -> None:
    if not np.isfinite(scores).all():
        raise ValueError(_NOT_FINITE)


def _category_weight(value: Any, table: dict[str, float], missing: float) -> float:
    weight = table.get(value)
    if weight is not None:
        return weight
    return missing if _is_missing(value) else 0.0


def _is_missing(value: Any) -> bool:
    """What ``as_object`` (``DataFrame.notna``) counts as missing, for one value."""
    return (
        value is None
        or value is pd.NA
        or value is pd.NaT
        or (isinstance(value, float) and math.isnan(value))
    )


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def _require(condition: bool) -> None:
    if not condition:
        raise _NotCompilable


def _columns(columns: Any) -> list[str]:
    _require(isinstance(columns, list) and all(isinstance(c, str) for c in columns))
    return list(columns)


def _imputer_fill(imputer: Any, width: int) -> np.ndarray:
    """The fitted imputer's per-column fill values; it must keep every column and add none."""
    _require(type(imputer) is SimpleImputer and not imputer.add_indicator)
    missing = imputer.missing_values
    _require(isinstance(missing, float) and math.isnan(missing))
    statistics = np.asarray(imputer.statistics_)
    _require(statistics.shape == (width,))
    # Without keep_empty_features a column never observed has a NaN statistic and is dropped.
    _require(not any(_is_missing(v) for v in statistics.tolist()))
    return statistics


@dataclass
class _Folded:
    numeric: list[str] = field(default_factory=list)
    fill: list[float] = field(default_factory=list)
    weights: list[float] = field(default_factory=list)
    centring: list[float] = field(default_factory=list)  # mean·coef/scale, folded into b
    categorical: list[str] = field(default_factory=list)
    category_weights: list[dict[str, float]] = field(default_factory=list)
    missing_weights: list[float] = field(default_factory=list)


def _fold_numeric(block: Any, columns: list[str], coef: np.ndarray, out: _Folded) -> None:
    _require(type(block) is Pipeline and len(block.steps) == 2)
    imputer, scaler = (step for _, step in block.steps)
    fill = _imputer_fill(imputer, len(columns)).astype(np.float64)
    _require(type(scaler) is StandardScaler and scaler.n_features_in_ == len(columns))
    mean = np.asarray(scaler.mean_, dtype=np.float64) if scaler.with_mean else np.zeros(len(coef))
    scale = np.asarray(scaler.scale_, dtype=np.float64) if scaler.with_std else np.ones(len(coef))
    _require(mean.shape == coef.shape and scale.shape == coef.shape)
    weights = coef / scale
    out.numeric += columns
    out.fill += fill.tolist()
    out.weights += weights.tolist()
    out.centring += (mean * weights).tolist()


def _fold_categorical(block: Any, columns: list[str], coef: np.ndarray, out: _Folded) -> None:
    _require(type(block) is Pipeline and len(block.steps) == 3)
    objects, imputer, encoder = (step for _, step in block.steps)
    _require(
        type(objects) is FunctionTransformer
        and objects.func is as_object
        and not objects.kw_args
        and not objects.validate
    )
    fill = _imputer_fill(imputer, len(columns)).tolist()
    _require(
        type(encoder) is OneHotEncoder
        and encoder.handle_unknown == "ignore"
        and encoder.drop is None
        and encoder.min_frequency is None
        and encoder.max_categories is None
        and len(encoder.categories_) == len(columns)
    )
    offset = 0
    for imputed, categories in zip(fill, encoder.categories_, strict=True):
        learned = [_plain(c) for c in categories.tolist()]
        weights = coef[offset : offset + len(learned)].tolist()
        offset += len(learned)
        if all(isinstance(c, str) for c in learned):
            out.category_weights.append(dict(zip(map(str, learned), weights, strict=True)))
        else:
            # Only a never-observed column (keep_empty_features: 0 is its one category) is served.
            _require(learned == [imputed] and not isinstance(imputed, str))
            out.category_weights.append({})
        # A missing value becomes the imputer's statistic, then goes through the encoder.
        out.missing_weights.append(
            next((w for c, w in zip(learned, weights, strict=True) if c == imputed), 0.0)
        )
    _require(offset == len(coef))
    out.categorical += columns


def _compile(pipeline: Any, schema: Schema) -> CompiledModel:
    _require(type(pipeline) is Pipeline and len(pipeline.steps) == 2)
    features, model = (step for _, step in pipeline.steps)
    _require(type(features) is ColumnTransformer and type(model) is LogisticRegression)
    _require(features.transformer_weights is None and hasattr(model, "classes_"))
    classes = tuple(_plain(c) for c in model.classes_.tolist())
    coef = np.asarray(model.coef_, dtype=np.float64)
    intercept = np.asarray(model.intercept_, dtype=np.float64)
    _require(len(classes) == 2 and coef.ndim == 2 and coef.shape[0] == 1)
    _require(intercept.shape == (1,))
    positive = [i for i, c in enumerate(classes) if c == schema.positive_label]
    _require(len(positive) == 1)
    _require(hasattr(features, "transformers_"))
    coef = coef[0]
    out = _Folded()
    offset = 0
    for _name, block, selection in features.transformers_:
        if isinstance(block, str):
            _require(block == "drop")
            continue
        columns = _columns(selection)
        if not columns:
            continue
        _require(type(block) is Pipeline)
        last = block.steps[-1][1]
        if type(last) is StandardScaler:
            width = len(columns)
            _fold_numeric(block, columns, coef[offset : offset + width], out)
        elif type(last) is OneHotEncoder and hasattr(last, "categories_"):
            width = sum(len(c) for c in last.categories_)
            _fold_categorical(block, columns, coef[offset : offset + width], out)
        else:
            raise _NotCompilable
        offset += width
    _require(offset == len(coef))
    _require(out.numeric == list(schema.numeric) and out.categorical == list(schema.categorical))
    _require(math.fsum(abs(c) for c in out.centring) <= _MAX_FOLDED)
    return CompiledModel(
        numeric=tuple(out.numeric),
        fill=np.array(out.fill, dtype=np.float64),
        weights=np.array(out.weights, dtype=np.float64),
        categorical=tuple(out.categorical),
        category_weights=tuple(out.category_weights),
        missing_category_weight=tuple(out.missing_weights),
        intercept=math.fsum([float(intercept[0]), *(-c for c in out.centring)]),
        classes=(classes[0], classes[1]),
        positive_index=positive[0],
    )
