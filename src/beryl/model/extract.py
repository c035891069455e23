"""Reading a fitted scikit-learn pipeline into the data-only ``LinearModel``.

Only the exact shape ``beryl.model.engine.build_pipeline`` makes is accepted: each step's type
and settings are checked, so a model file can never hold more than arrays and labels.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from beryl.data.schema import Schema
from beryl.model.linear import LinearModel, NotLinearError, _plain, _require
from beryl.model.reasons import is_missing


def _columns(columns: Any) -> list[str]:
    _require(
        isinstance(columns, list) and all(isinstance(c, str) for c in columns),
        "columns are selected by name",
    )
    return list(columns)


def _imputer_fill(imputer: Any, width: int) -> list[Any]:
    """The fitted imputer's per-column fill values; it must keep every column and add none."""
    from sklearn.impute import SimpleImputer

    _require(type(imputer) is SimpleImputer and not imputer.add_indicator, "imputer")
    missing = imputer.missing_values
    _require(isinstance(missing, float) and math.isnan(missing), "imputer missing values")
    statistics = [_plain(v) for v in np.asarray(imputer.statistics_).tolist()]
    _require(len(statistics) == width, "imputer width")
    # Without keep_empty_features a column never observed has a NaN statistic and is dropped.
    _require(not any(is_missing(v) for v in statistics), "imputer dropped a column")
    return statistics


def _numeric_block(block: Any, columns: list[str]) -> tuple[list[float], Any, Any]:
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    _require(type(block) is Pipeline and len(block.steps) == 2, "numeric steps")
    imputer, scaler = (step for _, step in block.steps)
    fill = [float(v) for v in _imputer_fill(imputer, len(columns))]
    _require(type(scaler) is StandardScaler and scaler.n_features_in_ == len(columns), "scaler")
    width = len(columns)
    mean = np.asarray(scaler.mean_, dtype=np.float64) if scaler.with_mean else np.zeros(width)
    scale = np.asarray(scaler.scale_, dtype=np.float64) if scaler.with_std else np.ones(width)
    _require(mean.shape == (width,) and scale.shape == (width,), "scaler width")
    return fill, mean, scale


def _categorical_block(block: Any, columns: list[str]) -> tuple[list[Any], list[list[Any]]]:
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import FunctionTransformer, OneHotEncoder

    from beryl.model.engine import as_object

    _require(type(block) is Pipeline and len(block.steps) == 3, "categorical steps")
    objects, imputer, encoder = (step for _, step in block.steps)
    _require(
        type(objects) is FunctionTransformer
        and objects.func is as_object
        and not objects.kw_args
        and not objects.validate,
        "categorical columns as objects",
    )
    fill = _imputer_fill(imputer, len(columns))
    _require(
        type(encoder) is OneHotEncoder
        and encoder.handle_unknown == "ignore"
        and encoder.drop is None
        and encoder.min_frequency is None
        and encoder.max_categories is None
        and len(encoder.categories_) == len(columns),
        "one-hot encoder",
    )
    categories = []
    for imputed, learned in zip(fill, encoder.categories_, strict=True):
        values = [_plain(c) for c in learned.tolist()]
        # Text categories; or a never-observed column, whose one category is its imputed 0.
        _require(
            all(isinstance(c, str) for c in values)
            or (values == [imputed] and not isinstance(imputed, str)),
            "categories are text",
        )
        categories.append(values)
    return fill, categories


def extract(pipeline: Any, schema: Schema) -> LinearModel:
    """The ``LinearModel`` of a fitted ``build_pipeline`` pipeline (``NotLinearError`` for any
    other shape)."""
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    _require(type(pipeline) is Pipeline and len(pipeline.steps) == 2, "two steps")
    features, model = (step for _, step in pipeline.steps)
    _require(
        type(features) is ColumnTransformer and type(model) is LogisticRegression, "step types"
    )
    _require(features.transformer_weights is None and hasattr(model, "classes_"), "fitted")
    _require(hasattr(features, "transformers_"), "fitted")
    numeric: dict[str, Any] = {"columns": [], "fill": [], "mean": [], "scale": []}
    categorical: dict[str, Any] = {"columns": [], "fill": [], "categories": []}
    for _name, block, selection in features.transformers_:
        if isinstance(block, str):
            _require(block == "drop", "remainder is dropped")
            continue
        columns = _columns(selection)
        if not columns:
            continue
        _require(type(block) is Pipeline, "block")
        last = block.steps[-1][1]
        if type(last) is StandardScaler:
            _require(not categorical["columns"], "numeric features come first")
            fill, mean, scale = _numeric_block(block, columns)
            numeric["columns"] += columns
            numeric["fill"] += fill
            numeric["mean"] += mean.tolist()
            numeric["scale"] += scale.tolist()
        elif type(last) is OneHotEncoder and hasattr(last, "categories_"):
            fill, categories = _categorical_block(block, columns)
            categorical["columns"] += columns
            categorical["fill"] += fill
            categorical["categories"] += categories
        else:
            raise NotLinearError("unknown block")
    _require(
        numeric["columns"] == list(schema.numeric)
        and categorical["columns"] == list(schema.categorical),
        "the pipeline's features are not the schema's",
    )
    coef = np.asarray(model.coef_, dtype=np.float64)
    intercept = np.asarray(model.intercept_, dtype=np.float64)
    return LinearModel(
        schema=schema,
        classes=tuple(_plain(c) for c in model.classes_.tolist()),
        numeric_fill=np.asarray(numeric["fill"], dtype=np.float64),
        mean=np.asarray(numeric["mean"], dtype=np.float64),
        scale=np.asarray(numeric["scale"], dtype=np.float64),
        categorical_fill=tuple(categorical["fill"]),
        categories=tuple(tuple(c) for c in categorical["categories"]),
        coef=coef,
        intercept=intercept,
    )
