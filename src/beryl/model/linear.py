"""The data-only model: a fitted Beryl pipeline as plain numbers, exact and safe to load.

Beryl's pipeline is imputation, scaling and one-hot encoding in front of a logistic regression,
so every fitted model is a handful of arrays: per numeric feature its fill value, mean and
scale; per categorical feature its fill value and categories; the coefficients and intercepts.
``LinearModel`` holds exactly those, scores frames with them as the pipeline does (to rounding,
tested to 1e-9), and round-trips through JSON. Serving, prediction and scoring load it instead of
unpickling, so a model file can be read without running any code it contains. Its decision is
Beryl's rule (``beryl.model.predict.DecisionRule``) at its own ``threshold``, which the file
holds (0.5 for a file written before it did).

A two-class model's score is exactly a sum over its features, so it explains itself: each
feature contributes ``coef · (transformed value - reference)`` to the logit of the positive label
(summed over a categorical feature's one-hot columns), and the contributions plus the base value
``intercept + coef · reference`` are the logit. ``reference`` is the training mean of each
transformed column (``with_reference``; zeros for a file written before it was kept, which makes
the base value the intercept)::

    model = LinearModel.from_pipeline(pipeline, schema).with_reference(training_frame)
    labels, chances = model.predict_frame(frame)   # predicted classes, P(positive_label)
    contributions, logits, base = model.contributions(frame)  # per row and feature
    LinearModel.from_dict(model.to_dict())         # the same model, from data only
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import pandas as pd

from beryl.data.schema import Schema
from beryl.model.predict import DEFAULT_THRESHOLD, DecisionRule, ExplainError
from beryl.model.reasons import NOT_EXPLAINABLE, ReasonPlan

if TYPE_CHECKING:
    from beryl.model.compiled import CompiledModel

FORMAT = "beryl-linear-model"
FORMAT_VERSION = 1


class NotLinearError(ValueError):
    """The pipeline is not the shape Beryl builds, or a model file does not hold a valid model."""


def _require(condition: bool, why: str) -> None:
    if not condition:
        raise NotLinearError(why)


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


@dataclass(frozen=True, eq=False)
class LinearModel:
    """A fitted Beryl pipeline as arrays; see the module docstring."""

    schema: Schema
    classes: tuple[Any, ...]
    numeric_fill: np.ndarray  # per numeric feature, in schema order
    mean: np.ndarray
    scale: np.ndarray
    categorical_fill: tuple[Any, ...]  # per categorical feature, in schema order
    categories: tuple[tuple[Any, ...], ...]
    coef: np.ndarray  # (1, width) for two classes, else (classes, width)
    intercept: np.ndarray  # (1,) or (classes,)
    threshold: float = DEFAULT_THRESHOLD  # two classes: P(positive_label) above it is positive
    # Per transformed column (numeric features, then each one-hot column), its training mean;
    # None (a file from before it was kept): zeros.
    reference: np.ndarray | None = None

    def __post_init__(self) -> None:
        n_numeric, n_categorical = len(self.schema.numeric), len(self.schema.categorical)
        for name in ("numeric_fill", "mean", "scale"):
            array = np.array(getattr(self, name), dtype=np.float64)
            _require(array.shape == (n_numeric,), f"{name} needs one value per numeric feature")
            array.flags.writeable = False
            object.__setattr__(self, name, array)
        _require(
            len(self.categorical_fill) == n_categorical == len(self.categories),
            "categorical fill values and categories need one entry per categorical feature",
        )
        _require(len(self.classes) >= 2, "a model needs at least two classes")
        _require(len(set(self.classes)) == len(self.classes), "classes are repeated")
        _require(
            sum(c == self.schema.positive_label for c in self.classes) == 1,
            f"positive_label {self.schema.positive_label!r} is not one of the classes",
        )
        width = n_numeric + sum(len(c) for c in self.categories)
        rows = 1 if len(self.classes) == 2 else len(self.classes)
        coef = np.array(self.coef, dtype=np.float64)
        intercept = np.array(self.intercept, dtype=np.float64)
        _require(coef.shape == (rows, width), f"coefficients must be {rows} x {width}")
        _require(intercept.shape == (rows,), f"intercepts must be {rows}")
        reference = (
            np.zeros(width)
            if self.reference is None
            else np.array(self.reference, dtype=np.float64)
        )
        _require(reference.shape == (width,), f"reference needs one value per column ({width})")
        for array in (coef, intercept, reference, self.numeric_fill, self.mean, self.scale):
            _require(bool(np.isfinite(array).all()), "parameters must be finite numbers")
        _require(bool((self.scale != 0).all()), "scales must not be zero")
        _require(
            isinstance(self.threshold, int | float)
            and not isinstance(self.threshold, bool)
            and 0.0 < self.threshold < 1.0,
            "the threshold must be a number between 0 and 1 (exclusive)",
        )
        object.__setattr__(self, "threshold", float(self.threshold))
        coef.flags.writeable = False
        intercept.flags.writeable = False
        reference.flags.writeable = False
        object.__setattr__(self, "coef", coef)
        object.__setattr__(self, "intercept", intercept)
        object.__setattr__(self, "reference", reference)
        object.__setattr__(self, "classes", tuple(self.classes))
        object.__setattr__(self, "categories", tuple(tuple(c) for c in self.categories))
        object.__setattr__(self, "categorical_fill", tuple(self.categorical_fill))
        # Per categorical feature: its categories, and their weights with a zero row appended
        # for a value the encoder never learned (``get_indexer`` gives -1).
        tables, offset = [], n_numeric
        for known in self.categories:
            block = coef[:, offset : offset + len(known)].T
            tables.append(np.vstack([block, np.zeros((1, rows))]))
            offset += len(known)
        object.__setattr__(
            self, "_index", tuple(pd.Index(list(c), dtype=object) for c in self.categories)
        )
        object.__setattr__(self, "_tables", tuple(tables))
        positive = self.positive_index
        object.__setattr__(
            self,
            "_rule",
            DecisionRule(self.classes[positive], self.classes[1 - positive], self.threshold)
            if len(self.classes) == 2
            else None,
        )
        object.__setattr__(self, "_reasons", ReasonPlan.of(self) if rows == 1 else None)

    # -- what scikit-learn callers expect -------------------------------------------------------
    @property
    def classes_(self) -> np.ndarray:
        return np.array(self.classes, dtype=object if self._text_labels else None)

    @property
    def _text_labels(self) -> bool:
        return any(isinstance(c, str) for c in self.classes)

    @property
    def positive_index(self) -> int:
        return next(i for i, c in enumerate(self.classes) if c == self.schema.positive_label)

    def decision_function(self, frame: pd.DataFrame) -> np.ndarray:
        """Scores of a frame holding the feature columns: (rows,) for two classes, else
        (rows, classes); as the pipeline's ``decision_function``."""
        rows = len(frame)
        scores = np.tile(self.intercept, (rows, 1))
        if self.schema.numeric:
            matrix = frame[self.schema.numeric].to_numpy(dtype=np.float64, na_value=np.nan)
            matrix = np.where(np.isnan(matrix), self.numeric_fill, matrix)
            scaled = (matrix - self.mean) / self.scale
            # Column by column, not a matrix product: a row's score then never depends on which
            # other rows share its block (BLAS kernels sum in an order that does).
            for j in range(len(self.schema.numeric)):
                scores += scaled[:, j : j + 1] * self.coef[:, j]
        index: tuple[pd.Index, ...] = self._index  # type: ignore[attr-defined]
        tables: tuple[np.ndarray, ...] = self._tables  # type: ignore[attr-defined]
        for column, fill, known, table in zip(
            self.schema.categorical, self.categorical_fill, index, tables, strict=True
        ):
            values = frame[column].astype(object).where(frame[column].notna(), fill)
            scores += table[known.get_indexer(pd.Index(values, dtype=object))]
        if not np.isfinite(scores).all():
            raise ValueError(
                "the model cannot score these records: a score is not finite (inputs too extreme)"
            )
        return scores[:, 0] if len(self.classes) == 2 else scores

    def predict_proba(self, frame: pd.DataFrame) -> np.ndarray:
        """Probability of each class (columns in ``classes`` order), as the pipeline's."""
        scores = self.decision_function(frame)
        if len(self.classes) == 2:
            positive = _expit(scores)
            return np.column_stack([1.0 - positive, positive])
        return _softmax(scores)

    @property
    def rule(self) -> DecisionRule | None:
        """The decision rule of a two-class model (None for more classes: the highest score)."""
        rule: DecisionRule | None = self._rule  # type: ignore[attr-defined]
        return rule

    def predict(self, frame: pd.DataFrame) -> np.ndarray:
        """Predicted classes by Beryl's decision rule (``beryl.model.predict``)."""
        return self._labels(self.decision_function(frame))

    def predict_frame(self, frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """Predicted classes and the probability of ``positive_label``, per row."""
        scores = self.decision_function(frame)
        if len(self.classes) == 2:
            chances = _expit(scores)
            if self.positive_index == 0:
                chances = 1.0 - chances
        else:
            chances = _softmax(scores)[:, self.positive_index]
        return self._labels(scores), np.asarray(chances, dtype=np.float64)

    def _labels(self, scores: np.ndarray) -> np.ndarray:
        rule = self.rule
        if rule is not None:  # the decision is a score for classes[1]
            return rule.labels(scores if self.positive_index == 1 else -scores)
        return np.asarray(self.classes_[scores.argmax(axis=1)])

    # -- reason codes ----------------------------------------------------------------------------
    def contributions(self, frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, float]:
        """Per row and feature (schema order), the feature's contribution to the logit of the
        positive label; the logits; and the base value. Two-class models only.

        A numeric feature contributes ``coef · (scaled imputed value - reference)``; a
        categorical one ``Σ coef · (one-hot - reference)`` over its columns, which is its
        category's weight minus ``Σ coef · reference`` (an unseen category weighs nothing). Each
        row's contributions plus the base value ``intercept + Σ coef · reference`` are its logit,
        to rounding. Scores that are not finite raise ``ValueError``, as ``decision_function``.
        """
        plan = self._reason_plan()
        scores = self.decision_function(frame)
        reference = cast(np.ndarray, self.reference)
        coef = self.coef[0]
        n_numeric = len(self.schema.numeric)
        out = np.empty((len(frame), len(self.schema.features)), dtype=np.float64)
        if n_numeric:
            scaled = (self._imputed(frame) - self.mean) / self.scale
            out[:, :n_numeric] = (scaled - reference[:n_numeric]) * coef[:n_numeric]
        index: tuple[pd.Index, ...] = self._index  # type: ignore[attr-defined]
        tables: tuple[np.ndarray, ...] = self._tables  # type: ignore[attr-defined]
        for j, (column, fill, known, table, (_, _, _, shift)) in enumerate(
            zip(
                self.schema.categorical,
                self.categorical_fill,
                index,
                tables,
                plan.categorical,
                strict=True,
            )
        ):
            out[:, n_numeric + j] = table[self._positions(frame[column], fill, known), 0] - shift
        return plan.finish(out, scores)

    def record_contributions(
        self, rows: Sequence[Mapping[str, Any]]
    ) -> tuple[np.ndarray, np.ndarray, float]:
        """``contributions`` of validated dict records (every feature; a missing value None or
        NaN), without pandas: the same operations in the same order, so the same numbers."""
        plan = self._reason_plan()
        parts, scores = plan.plain(rows)
        out = np.array(parts, dtype=np.float64).reshape(len(rows), len(self.schema.features))
        return plan.finish(out, np.array(scores, dtype=np.float64))

    def plain_contributions(
        self, rows: Sequence[Mapping[str, Any]]
    ) -> tuple[list[list[float]], list[float], float]:
        """``record_contributions`` as Python lists (for a few records arrays cost more than the
        arithmetic): the same numbers, the same errors."""
        plan = self._reason_plan()
        parts, scores = plan.plain(rows)
        if not all(math.isfinite(c) for row in parts for c in row):
            raise ValueError(NOT_EXPLAINABLE)
        sign = plan.sign
        return (
            [[sign * c for c in row] for row in parts],
            [sign * s for s in scores],
            sign * plan.base,
        )

    def _reason_plan(self) -> ReasonPlan:
        plan: ReasonPlan | None = self._reasons  # type: ignore[attr-defined]
        if plan is None:
            raise ExplainError(
                f"needs a two-class model; this model has {len(self.classes)} classes"
            )
        return plan

    def with_reference(self, frame: pd.DataFrame) -> LinearModel:
        """This model with ``reference`` from its training frame (the feature columns): per
        numeric feature the mean of the imputed column, scaled; per one-hot column the share of
        rows with that category once imputed. No pipeline transform: a pass over each column."""
        _require(len(frame) > 0, "reference values need at least one training row")
        parts: list[np.ndarray] = []
        if self.schema.numeric:
            parts.append((self._imputed(frame).mean(axis=0) - self.mean) / self.scale)
        index: tuple[pd.Index, ...] = self._index  # type: ignore[attr-defined]
        for column, fill, known in zip(
            self.schema.categorical, self.categorical_fill, index, strict=True
        ):
            positions = self._positions(frame[column], fill, known)
            counts = np.bincount(positions[positions >= 0], minlength=len(known))
            parts.append(counts / len(frame))
        reference = np.concatenate(parts) if parts else np.zeros(0)
        return replace(self, reference=reference)

    def _imputed(self, frame: pd.DataFrame) -> np.ndarray:
        """The numeric features as a float matrix, missing values filled as the imputer does."""
        matrix = frame[self.schema.numeric].to_numpy(dtype=np.float64, na_value=np.nan)
        return np.where(np.isnan(matrix), self.numeric_fill, matrix)

    @staticmethod
    def _positions(values: pd.Series, fill: Any, known: pd.Index) -> np.ndarray:
        """Each value's position among a feature's categories once imputed; -1 if unseen."""
        imputed = values.astype(object).where(values.notna(), fill)
        return np.asarray(known.get_indexer(pd.Index(imputed, dtype=object)))

    def compiled(self) -> CompiledModel | None:
        """The folded fast path for two classes, when folding keeps 1e-9 precision."""
        from beryl.model.compiled import fold

        return fold(self)

    # -- data only --------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "schema": self.schema.to_dict(),
            "classes": list(self.classes),
            "numeric": {
                "fill": self.numeric_fill.tolist(),
                "mean": self.mean.tolist(),
                "scale": self.scale.tolist(),
            },
            "categorical": {
                "fill": list(self.categorical_fill),
                "categories": [list(c) for c in self.categories],
            },
            "coef": self.coef.tolist(),
            "intercept": self.intercept.tolist(),
            "threshold": self.threshold,
            "reference": cast(np.ndarray, self.reference).tolist(),
        }

    @classmethod
    def from_dict(cls, data: Any) -> LinearModel:
        """A model from ``to_dict``'s output; anything else is ``NotLinearError``."""
        try:
            _require(isinstance(data, dict), "not a JSON object")
            _require(
                data.get("format") == FORMAT and data.get("format_version") == FORMAT_VERSION,
                f"not a {FORMAT} file of version {FORMAT_VERSION}",
            )
            schema = Schema.from_dict(data["schema"])
            numeric, categorical = data["numeric"], data["categorical"]
            for value in (
                *categorical["fill"],
                *(c for cs in categorical["categories"] for c in cs),
            ):
                _require(
                    isinstance(value, str | int | float) and not isinstance(value, bool),
                    "categories must be text or numbers",
                )
            for label in data["classes"]:
                _require(
                    isinstance(label, str | int) and not isinstance(label, bool),
                    "classes must be text or integers",
                )
            return cls(
                schema=schema,
                classes=tuple(data["classes"]),
                numeric_fill=_numbers(numeric["fill"]),
                mean=_numbers(numeric["mean"]),
                scale=_numbers(numeric["scale"]),
                categorical_fill=tuple(categorical["fill"]),
                categories=tuple(tuple(c) for c in categorical["categories"]),
                coef=_numbers(data["coef"]),
                intercept=_numbers(data["intercept"]),
                threshold=data.get("threshold", DEFAULT_THRESHOLD),
                reference=_numbers(data["reference"]) if "reference" in data else None,
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            if isinstance(exc, NotLinearError):
                raise
            raise NotLinearError(f"not a valid model: {exc!r}") from exc

    @classmethod
    def from_pipeline(cls, pipeline: Any, schema: Schema) -> LinearModel:
        """Read a fitted ``build_pipeline`` pipeline; ``NotLinearError`` for any other shape."""
        from beryl.model.extract import extract

        return extract(pipeline, schema)


def _expit(scores: np.ndarray) -> np.ndarray:
    from scipy.special import expit  # scipy loads in 0.2 s: only where a model scores

    return np.asarray(expit(scores))


def _softmax(scores: np.ndarray) -> np.ndarray:
    from scipy.special import softmax

    return np.asarray(softmax(scores, axis=1))


def _numbers(value: Any) -> np.ndarray:
    """A JSON list (of lists) of numbers as floats; text or true/false in it is refused."""
    flat = [value]
    while flat:
        item = flat.pop()
        if isinstance(item, list):
            flat.extend(item)
        else:
            _require(isinstance(item, int | float) and not isinstance(item, bool), "not a number")
    return np.asarray(value, dtype=np.float64)
