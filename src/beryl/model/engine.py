"""The training-engine seam: what fits a model, and the scikit-learn engine Beryl uses today.

A ``TrainingEngine`` turns a labelled frame into a ``Fitted`` model: the data-only
``LinearModel`` that Beryl serves, predicts and scores with, plus the engine's own artifact (the
scikit-learn pipeline, pickled for the original layout). Every engine applies the same
preprocessing semantics (numeric features imputed with the median and scaled, categorical ones
imputed with the most frequent value and one-hot encoded, unknown categories ignored), so a
model from any engine serves the same way. The contract tests in
``tests/test_engine_contract.py`` run against the protocol::

    fitted = SklearnEngine().fit(schema, {"max_iter": 1000}, frame)
    fitted.model.predict_frame(frame[schema.features])

With ``TrainingOptions(tuning=...)`` the engine first chooses ``class_weight``, ``C``, the
decision threshold and a calibration by cross-validation on the training rows
(``beryl.model.tuning``), then fits the chosen setting on every row.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np
import pandas as pd

from beryl.data.schema import Schema
from beryl.errors import TrainingError
from beryl.model.fitting import fit_features, model_params, warm_start
from beryl.model.linear import LinearModel, NotLinearError
from beryl.model.tuning import Tuning, search, untuned

if TYPE_CHECKING:
    from sklearn.pipeline import Pipeline

    from beryl.config import TuningSettings
    from beryl.data.dataset import Dataset


@dataclass(frozen=True)
class TrainingOptions:
    """How to fit beyond the estimator's parameters: standardise numeric features or not, and
    the cross-validated search (None: fit the parameters as given, threshold 0.5)."""

    scale: bool = True
    tuning: TuningSettings | None = None


@dataclass(frozen=True)
class Fitted:
    """A fitted model: the data-only form, the engine's artifact and the parameters used."""

    model: LinearModel
    artifact: Any
    parameters: dict[str, Any] = field(default_factory=dict)
    tuning: Tuning = field(default_factory=lambda: untuned("not asked for"))


@runtime_checkable
class TrainingEngine(Protocol):
    """Fits Beryl's model on a labelled frame (``schema.features`` and ``schema.target``)."""

    name: str

    def fit(
        self,
        schema: Schema,
        params: dict[str, Any],
        frame: pd.DataFrame,
        options: TrainingOptions = ...,
    ) -> Fitted:
        """The fitted model; ``TrainingError`` for data or parameters it refuses."""


@runtime_checkable
class DatasetEngine(TrainingEngine, Protocol):
    """An engine that reads the dataset's batches itself (Spark), rather than a frame the
    driver loaded: training then never holds the dataset in this process."""

    def fit_dataset(
        self, schema: Schema, params: dict[str, Any], dataset: Dataset, options: TrainingOptions
    ) -> Fitted:
        """The model fitted on every row of ``dataset``, as ``fit`` on its frame would be."""


def check_labels(schema: Schema, labels: pd.Series) -> None:
    """Refuse what no engine can learn from: one class, or no positive label."""
    classes = sorted(pd.unique(labels).tolist(), key=str)
    if len(classes) < 2:
        raise TrainingError(
            f"the dataset has only one label value ({classes[0]!r}) in {schema.target!r}"
            if classes
            else f"the dataset has no labelled rows in {schema.target!r}",
            hint="training needs rows of both the attrited and the retained class",
        )
    if schema.positive_label not in classes:
        raise TrainingError(
            f"positive_label {schema.positive_label!r} never occurs in {schema.target!r} "
            f"(values: {', '.join(map(repr, classes[:10]))})",
            hint="set positive_label in config.json to the value that marks attrition",
        )


def as_object(frame: Any) -> Any:
    """Categorical columns as objects with ``np.nan`` for missing, as the imputer expects."""
    if isinstance(frame, pd.DataFrame):
        return frame.astype(object).where(frame.notna(), np.nan)
    return frame


def build_pipeline(schema: Schema, params: dict[str, Any], *, scale: bool = True) -> Pipeline:
    """Impute + scale numeric features, impute + one-hot categorical ones, then the model
    (``scale=False``: numeric features reach the model as they are, once imputed)."""
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import FunctionTransformer, OneHotEncoder, StandardScaler

    transformers: list[tuple[str, Any, list[str]]] = []
    if schema.numeric:
        numeric = Pipeline(
            [
                ("impute", SimpleImputer(strategy="median", keep_empty_features=True)),
                ("scale", StandardScaler(with_mean=scale, with_std=scale)),
            ]
        )
        transformers.append(("numeric", numeric, list(schema.numeric)))
    if schema.categorical:
        categorical = Pipeline(
            [
                ("as_object", FunctionTransformer(as_object, feature_names_out="one-to-one")),
                ("impute", SimpleImputer(strategy="most_frequent", keep_empty_features=True)),
                ("onehot", OneHotEncoder(handle_unknown="ignore")),
            ]
        )
        transformers.append(("categorical", categorical, list(schema.categorical)))
    features = ColumnTransformer(transformers, remainder="drop")
    model = LogisticRegression(**model_params(params))
    return Pipeline([("features", features), ("model", model)])


def fit_pipeline(
    schema: Schema, params: dict[str, Any], frame: pd.DataFrame, *, scale: bool = True
) -> Pipeline:
    """Fit the pipeline on a labelled frame; the estimator's complaints become ``TrainingError``."""
    labels = frame[schema.target]
    check_labels(schema, labels)
    return _fitted(schema, params, frame[schema.features], labels, scale)


def _fitted(
    schema: Schema, params: dict[str, Any], features: Any, labels: pd.Series, scale: bool
) -> Pipeline:
    """The pipeline fitted step by step, as ``Pipeline.fit`` would (``beryl.model.fitting``)."""
    pipeline = build_pipeline(schema, params, scale=scale)
    transform, estimator = pipeline.steps[0][1], pipeline.steps[-1][1]
    matrix = _transformed(transform, features, labels)
    _fit_model(estimator, matrix, labels)
    return pipeline


def _transformed(transform: Any, features: Any, labels: pd.Series) -> Any:
    try:
        return fit_features(transform, features, labels)
    except ValueError as exc:
        raise TrainingError(f"training failed: {exc}") from exc


def _fit_model(estimator: Any, matrix: Any, labels: pd.Series) -> None:
    """Fit ``LogisticRegression`` on the transformed rows, from a warm start on many of them."""
    started = warm_start(estimator, matrix, labels, _fit)
    try:
        _fit(estimator, matrix, labels)
    finally:
        if started:
            estimator.set_params(warm_start=False)


def _fit(estimator: Any, features: Any, labels: pd.Series) -> None:
    """Fit; the estimator's complaints become ``TrainingError``."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.utils._param_validation import InvalidParameterError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            estimator.fit(features, labels)
    except InvalidParameterError as exc:
        raise TrainingError(
            f"invalid model parameters: {exc}", hint="fix the 'model' section of config.json"
        ) from exc
    except ValueError as exc:
        raise TrainingError(f"training failed: {exc}") from exc


class _Folds:
    """The search's ``FoldScorer``: Beryl's preprocessing fitted once per fold, then one
    ``LogisticRegression`` per searched setting on the transformed rows."""

    def __init__(self, schema: Schema, params: dict[str, Any], scale: bool) -> None:
        self.schema, self.params, self.scale = schema, params, scale

    def prepare(self, train: pd.DataFrame, labels: pd.Series, held: pd.DataFrame) -> Any:
        features = build_pipeline(self.schema, self.params, scale=self.scale).steps[0][1]
        return _transformed(features, train, labels), labels, features.transform(held)

    def score(self, params: dict[str, Any], prepared: Any) -> np.ndarray:
        from sklearn.linear_model import LogisticRegression

        train, labels, held = prepared
        estimator = LogisticRegression(**model_params(self.params | params))
        _fit_model(estimator, train, labels)
        return np.asarray(estimator.decision_function(held), dtype=np.float64)


def tune(
    schema: Schema, params: dict[str, Any], frame: pd.DataFrame, options: TrainingOptions
) -> Tuning:
    """What the cross-validated search chooses on ``frame`` (scikit-learn, on at most
    ``tuning.search_rows`` of its rows), or why nothing was tuned: every engine then fits that
    setting on all the rows."""
    if options.tuning is not None and options.tuning.enabled:
        return search(schema, frame, options.tuning, params, _Folds(schema, params, options.scale))
    return untuned("tuning is off (tuning.enabled in config.json)")


class SklearnEngine:
    """``TrainingEngine`` on scikit-learn: Beryl's pipeline, ``LogisticRegression`` last."""

    name = "scikit-learn"

    def fit(
        self,
        schema: Schema,
        params: dict[str, Any],
        frame: pd.DataFrame,
        options: TrainingOptions = TrainingOptions(),  # frozen: no state is shared
    ) -> Fitted:
        check_labels(schema, frame[schema.target])
        tuning = tune(schema, params, frame, options)
        pipeline = fit_pipeline(schema, params | tuning.params, frame, scale=options.scale)
        if tuning.calibration.method == "sigmoid":
            _calibrate(pipeline, schema, tuning)
        try:
            model = LinearModel.from_pipeline(pipeline, schema)
        except NotLinearError as exc:
            raise TrainingError(f"the fitted model cannot be stored as data: {exc}") from exc
        if tuning.enabled:
            model = replace(model, threshold=tuning.threshold)
        model = model.with_reference(frame[schema.features])  # the base of reason codes
        estimator = pipeline.named_steps["model"]
        parameters = {k: jsonable(v) for k, v in estimator.get_params().items()}
        return Fitted(model=model, artifact=pipeline, parameters=parameters, tuning=tuning)


def calibrated(
    coef: np.ndarray, intercept: np.ndarray, positive_is_second: bool, tuning: Tuning
) -> tuple[np.ndarray, np.ndarray]:
    """Coefficients and intercept with the sigmoid calibration of the positive score
    (``a * s + b``) folded in (as they are without one)."""
    if tuning.calibration.method != "sigmoid":
        return coef, intercept
    a, b = tuning.calibration.a, tuning.calibration.b
    sign = 1.0 if positive_is_second else -1.0
    return coef * a, intercept * a + sign * b


def _calibrate(pipeline: Pipeline, schema: Schema, tuning: Tuning) -> None:
    """Fold the sigmoid calibration of the positive score (``a * s + b``) into the fitted
    estimator, so that its probabilities (and the pickle's) are the calibrated ones."""
    estimator = pipeline.named_steps["model"]
    positive_is_second = bool(estimator.classes_[1] == schema.positive_label)
    estimator.coef_, estimator.intercept_ = calibrated(
        estimator.coef_, estimator.intercept_, positive_is_second, tuning
    )


def jsonable(value: Any) -> Any:
    """A parameter value as JSON can hold it (NumPy scalars as Python ones, others by repr)."""
    if isinstance(value, np.generic):
        return value.item()
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return repr(value)
