"""Training: the scikit-learn pipeline and a model version trained on the whole dataset."""

from __future__ import annotations

import platform
import warnings
from importlib import metadata
from typing import Any

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.exceptions import ConvergenceWarning
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer, OneHotEncoder, StandardScaler
from sklearn.utils._param_validation import InvalidParameterError

from beryl._io import utc_now
from beryl.config import Settings, check_model
from beryl.dataset import Dataset
from beryl.errors import EmptyDatasetError, TrainingError
from beryl.registry import ModelCard, Registry
from beryl.schema import Schema

_LIBRARIES = ("beryl", "scikit-learn", "numpy", "pandas", "pyarrow", "scipy")


def as_object(frame: Any) -> Any:
    """Categorical columns as objects with ``np.nan`` for missing, as the imputer expects."""
    if isinstance(frame, pd.DataFrame):
        return frame.astype(object).where(frame.notna(), np.nan)
    return frame


def build_pipeline(schema: Schema, params: dict[str, Any]) -> Pipeline:
    """Impute + scale numeric features, impute + one-hot categorical ones, then the model."""
    transformers: list[tuple[str, Any, list[str]]] = []
    if schema.numeric:
        numeric = Pipeline(
            [
                ("impute", SimpleImputer(strategy="median", keep_empty_features=True)),
                ("scale", StandardScaler()),
            ]
        )
        transformers.append(("numeric", numeric, list(schema.numeric)))
    if schema.categorical:
        categorical = Pipeline(
            [
                ("as_object", FunctionTransformer(as_object, feature_names_out="one-to-one")),
                (
                    "impute",
                    SimpleImputer(strategy="most_frequent", keep_empty_features=True),
                ),
                ("onehot", OneHotEncoder(handle_unknown="ignore")),
            ]
        )
        transformers.append(("categorical", categorical, list(schema.categorical)))
    features = ColumnTransformer(transformers, remainder="drop")
    return Pipeline([("features", features), ("model", LogisticRegression(**params))])


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in _LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "unknown"
    return versions


def fit_pipeline(schema: Schema, params: dict[str, Any], frame: pd.DataFrame) -> Pipeline:
    """Fit the pipeline on a labelled frame; the estimator's complaints become ``TrainingError``."""
    labels = frame[schema.target]
    classes = sorted(pd.unique(labels).tolist(), key=str)
    if len(classes) < 2:
        raise TrainingError(
            f"the dataset has only one label value ({classes[0]!r}) in {schema.target!r}",
            hint="training needs rows of both the attrited and the retained class",
        )
    if schema.positive_label not in classes:
        raise TrainingError(
            f"positive_label {schema.positive_label!r} never occurs in {schema.target!r} "
            f"(values: {', '.join(map(repr, classes[:10]))})",
            hint="set positive_label in config.json to the value that marks attrition",
        )
    pipeline = build_pipeline(schema, params)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            pipeline.fit(frame[schema.features], labels)
    except InvalidParameterError as exc:
        raise TrainingError(
            f"invalid model parameters: {exc}", hint="fix the 'model' section of config.json"
        ) from exc
    except ValueError as exc:
        raise TrainingError(f"training failed: {exc}") from exc
    return pipeline


def train(settings: Settings) -> ModelCard:
    """Train a candidate on the whole consolidated dataset and register it as a new version."""
    check_model(settings)
    dataset = Dataset(settings.output_folder)
    schema = dataset.schema
    if schema is None or not dataset.batches:
        raise EmptyDatasetError(
            f"no data has been ingested into {settings.output_folder} yet",
            hint="run `beryl ingest` first",
        )
    schema.check_settings(settings)
    frame = dataset.read(columns=[*schema.features, schema.target])
    pipeline = fit_pipeline(schema, settings.model, frame)
    model = pipeline.named_steps["model"]
    registry = Registry(settings.model_folder)
    card = ModelCard(
        id="",
        created=utc_now(),
        schema=schema.to_dict(),
        parameters={k: _jsonable(v) for k, v in model.get_params().items()},
        classes=[_jsonable(c) for c in model.classes_.tolist()],
        training={
            "rows": len(frame),
            "batches": [b.id for b in dataset.batches],
            "files": [
                {"name": r.name, "sha256": r.sha256}
                for r in dataset.files
                if r.status == "ingested"
            ],
        },
        libraries=library_versions(),
    )
    return registry.create(pipeline, card, latest=True)


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return repr(value)
