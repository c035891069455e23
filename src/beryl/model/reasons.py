"""A two-class linear model's reason codes as plain numbers (``LinearModel.contributions``)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from beryl.model.linear import LinearModel


def is_missing(value: Any) -> bool:
    """What ``DataFrame.notna`` counts as missing, for one value."""
    return (
        value is None
        or value is pd.NA
        or value is pd.NaT
        or (isinstance(value, float) and math.isnan(value))
    )


@dataclass(frozen=True)
class ReasonPlan:
    """A two-class model's reason codes as plain numbers, made once per model: per numeric
    feature (name, fill, mean, scale, coefficient, reference); per categorical feature (name,
    fill, weight of each category, ``Σ coef · reference`` over its columns); the intercept, the
    base value and the sign that turns the score for ``classes[1]`` into the positive label's."""

    numeric: tuple[tuple[str, float, float, float, float, float], ...]
    categorical: tuple[tuple[str, Any, dict[Any, float], float], ...]
    intercept: float
    base: float
    sign: float

    @classmethod
    def of(cls, model: LinearModel) -> ReasonPlan:
        coef = model.coef[0]
        reference = cast(np.ndarray, model.reference)
        width = len(model.schema.numeric)
        numeric = tuple(
            zip(
                model.schema.numeric,
                model.numeric_fill.tolist(),
                model.mean.tolist(),
                model.scale.tolist(),
                coef[:width].tolist(),
                reference[:width].tolist(),
                strict=True,
            )
        )
        categorical = []
        offset = width
        for name, fill, known in zip(
            model.schema.categorical, model.categorical_fill, model.categories, strict=True
        ):
            block = slice(offset, offset + len(known))
            weights = dict(zip(known, coef[block].tolist(), strict=True))
            categorical.append((name, fill, weights, math.fsum(coef[block] * reference[block])))
            offset += len(known)
        intercept = float(model.intercept[0])
        return cls(
            numeric=numeric,
            categorical=tuple(categorical),
            intercept=intercept,
            base=math.fsum([intercept, *(coef * reference).tolist()]),
            sign=1.0 if model.positive_index == 1 else -1.0,
        )

    def plain(self, rows: Sequence[Mapping[str, Any]]) -> tuple[list[list[float]], list[float]]:
        """Each record's contributions (schema order) and score for ``classes[1]``, in plain
        Python; a score that is not finite raises ``ValueError``, as ``decision_function``."""
        parts: list[list[float]] = []
        scores: list[float] = []
        for row in rows:
            total, record = self.intercept, []
            for name, fill, mean, scale, weight, reference in self.numeric:
                value = row[name]
                scaled = ((fill if is_missing(value) else float(value)) - mean) / scale
                total += scaled * weight
                record.append((scaled - reference) * weight)
            for name, fill, weights, shift in self.categorical:
                value = row[name]
                found = weights.get(fill if is_missing(value) else value, 0.0)
                total += found
                record.append(found - shift)
            parts.append(record)
            scores.append(total)
        if not all(math.isfinite(score) for score in scores):
            raise ValueError(
                "the model cannot score these records: a score is not finite (inputs too extreme)"
            )
        return parts, scores

    def finish(
        self, contributions: np.ndarray, scores: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, float]:
        """Contributions, logits and base value for the positive label, checked finite."""
        if not np.isfinite(contributions).all():
            raise ValueError(NOT_EXPLAINABLE)
        return self.sign * contributions, self.sign * scores, self.sign * self.base


NOT_EXPLAINABLE = (
    "the model cannot explain these records: a contribution is not finite (inputs too extreme)"
)
