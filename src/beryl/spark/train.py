"""Training on Spark: MLlib's ``LogisticRegression`` with Beryl's preprocessing, exported as the
same data-only ``LinearModel`` the scikit-learn engine gives, so serving, scoring and monitoring
do not change.

The preprocessing statistics are computed by Spark over every row with scikit-learn's
semantics: a numeric feature's missing values take its exact median (0 when it has none) and it
is standardised by its mean and population standard deviation (a constant feature by 1, as
``StandardScaler`` decides); a categorical feature's missing values take its most frequent value
(the smallest among ties) and it is one-hot encoded over its sorted categories.

``class_weight`` becomes a weight column. scikit-learn minimises ``0.5·||w||² + C·Σ wᵢ·lossᵢ``;
MLlib minimises ``Σ wᵢ·lossᵢ / Σ wᵢ + regParam·0.5·||w||²`` (``standardization`` off), so
``regParam = 1 / (C·Σ wᵢ)`` gives the same optimum (``l1_ratio`` maps to ``elasticNetParam``
likewise; the intercept is never penalised). MLlib runs to a tolerance of ``TOL``, so its
coefficients are those of the optimum, which scikit-learn's ``lbfgs`` reaches to its ``tol``.

The choice of ``class_weight``, ``C``, the threshold and the calibration is the local engine's
own search (``beryl.model.engine.tune``) on the same rows: all of them when the dataset has at
most ``tuning.search_rows`` rows, else a stratified Spark sample of that many.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from beryl.config import SparkSettings, model_problems
from beryl.data.schema import Schema
from beryl.errors import TrainingError
from beryl.model.engine import (
    Fitted,
    TrainingOptions,
    calibrated,
    check_labels,
    fit_pipeline,
    jsonable,
    tune,
)
from beryl.model.linear import LinearModel, NotLinearError
from beryl.model.predict import DEFAULT_THRESHOLD
from beryl.model.tuning import Tuning
from beryl.spark.session import failures, quiet, session

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame
    from sklearn.pipeline import Pipeline

    from beryl.data.dataset import Dataset

TOL = 1e-12  # MLlib's convergence tolerance: run to the optimum
MIN_ITERATIONS = 1000  # MLlib's iterations at least (it stops when converged)
_EPS = float(np.finfo(np.float64).eps)
_NO_OPTIONS = TrainingOptions()  # frozen: no state is shared
_HINT = "check the cluster (spark.master in config.json) and that its executors see the dataset"


@dataclass(frozen=True)
class _Preprocessing:
    """Beryl's preprocessing as fitted on every row, and what the model's reference needs."""

    numeric_fill: list[float]
    mean: list[float]
    scale: list[float]
    numeric_reference: list[float]  # per numeric feature, the mean of its transformed value
    categorical_fill: list[Any]
    categories: list[list[Any]]
    shares: list[list[float]]  # per category, its share of the rows once imputed


class SparkEngine:
    """``TrainingEngine`` on Spark MLlib (``engine: "spark"``): see the module docstring."""

    name = "spark"

    def __init__(self, settings: SparkSettings | None = None) -> None:
        self.settings = settings or SparkSettings()

    def fit(
        self,
        schema: Schema,
        params: dict[str, Any],
        frame: pd.DataFrame,
        options: TrainingOptions = _NO_OPTIONS,
    ) -> Fitted:
        """Fit on a frame this process holds (handed to Spark as Arrow)."""
        import pyarrow as pa

        check_labels(schema, frame[schema.target])
        _check(params)
        tuning = tune(schema, params, frame, options)
        table = pa.Table.from_pandas(frame[[*schema.features, schema.target]], preserve_index=False)
        with quiet(), failures("training", _HINT):
            data = session(self.settings).createDataFrame(table)
            return self._fit(schema, params, data, options, tuning)

    def fit_dataset(
        self, schema: Schema, params: dict[str, Any], dataset: Dataset, options: TrainingOptions
    ) -> Fitted:
        """Fit on every row of the dataset, read by the executors from its Parquet batches."""
        columns = [*schema.features, schema.target]
        paths = [str(dataset.batch_path(b.id)) for b in dataset.batches]
        with quiet(), failures("training", _HINT):
            data = session(self.settings).read.parquet(*paths).select(*columns)
            counts = _label_counts(data, schema)
            check_labels(schema, pd.Series(list(counts), dtype=object))
            _check(params)
            tuning = tune(
                schema, params, self._search_rows(data, dataset, counts, options), options
            )
            return self._fit(schema, params, data, options, tuning)

    def _search_rows(
        self,
        data: DataFrame,
        dataset: Dataset,
        counts: dict[Any, int],
        options: TrainingOptions,
    ) -> pd.DataFrame:
        """The rows the search runs on: every row (as the local engine reads them) up to
        ``search_rows``, else a stratified sample of about that many drawn by Spark."""
        columns = data.columns
        if options.tuning is None or not options.tuning.enabled:
            return pd.DataFrame(columns=columns)  # nothing is searched
        if dataset.rows <= options.tuning.search_rows:
            return dataset.read(columns=columns)
        target = columns[-1]
        share = options.tuning.search_rows / dataset.rows
        sample = data.sampleBy(target, {label: share for label in counts}, seed=0)
        frame: pd.DataFrame = sample.toArrow().to_pandas()
        return frame

    def _fit(
        self,
        schema: Schema,
        params: dict[str, Any],
        data: DataFrame,
        options: TrainingOptions,
        tuning: Tuning,
    ) -> Fitted:
        from sklearn.linear_model import LogisticRegression

        chosen = params | tuning.params
        given = LogisticRegression(**chosen).get_params()
        counts = _label_counts(data, schema)
        classes = sorted(counts)
        prep = _preprocessing(data, schema, options.scale)
        weights = _class_weights(given["class_weight"], counts)
        total = sum(counts[c] * weights[c] for c in classes)
        reg, alpha = _regularisation(given, total)
        coef, intercept, iterations = _mllib_fit(
            data, schema, prep, classes, weights, reg, alpha, given
        )
        coef, intercept = calibrated(coef, intercept, classes[1] == schema.positive_label, tuning)
        try:
            model = LinearModel(
                schema=schema,
                classes=tuple(classes),
                numeric_fill=np.asarray(prep.numeric_fill),
                mean=np.asarray(prep.mean),
                scale=np.asarray(prep.scale),
                categorical_fill=tuple(prep.categorical_fill),
                categories=tuple(tuple(c) for c in prep.categories),
                coef=coef.reshape(1, -1),
                intercept=intercept.reshape(1),
                threshold=tuning.threshold if tuning.enabled else DEFAULT_THRESHOLD,
                reference=np.concatenate(
                    [np.asarray(prep.numeric_reference), *(np.asarray(s) for s in prep.shares)]
                ),
            )
        except NotLinearError as exc:
            raise TrainingError(f"the fitted model cannot be stored as data: {exc}") from exc
        parameters = {k: jsonable(v) for k, v in given.items()}
        parameters["mllib"] = {
            "regParam": reg,
            "elasticNetParam": alpha,
            "maxIter": max(int(given["max_iter"]), MIN_ITERATIONS),
            "tol": TOL,
            "iterations": iterations,
            "master": self.settings.master,
        }
        artifact = _pipeline(model, schema, chosen, options.scale)
        return Fitted(model=model, artifact=artifact, parameters=parameters, tuning=tuning)


def _check(params: dict[str, Any]) -> None:
    problems = model_problems(params)
    if problems:
        raise TrainingError(
            f"invalid model parameters: {'; '.join(problems)}",
            hint="fix the 'model' section of config.json",
        )


def _label_counts(data: DataFrame, schema: Schema) -> dict[Any, int]:
    rows = data.groupBy(schema.target).count().collect()
    return {row[0]: int(row[1]) for row in rows if row[0] is not None}


def _number(name: str) -> Column:
    """A numeric column as doubles, NaN counted as missing (as pandas counts it)."""
    from pyspark.sql import functions as F

    value = F.col(name).cast("double")
    return F.when(F.isnan(value), F.lit(None)).otherwise(value)


def _imputed(name: str, fill: float) -> Column:
    from pyspark.sql import functions as F

    return F.coalesce(_number(name), F.lit(fill))


def _preprocessing(data: DataFrame, schema: Schema, scale: bool) -> _Preprocessing:
    """The imputation, scaling and categories of every feature, over every row."""
    from pyspark.sql import functions as F

    numeric = list(schema.numeric)
    fills: list[float] = []
    mean: list[float] = []
    spread: list[float] = []
    averages: list[float] = []
    if numeric:
        medians = data.agg(
            *(F.percentile(_number(c), F.lit(0.5)).alias(f"m{i}") for i, c in enumerate(numeric))
        ).first()
        assert medians is not None
        fills = [0.0 if medians[i] is None else float(medians[i]) for i in range(len(numeric))]
        imputed = [_imputed(c, f) for c, f in zip(numeric, fills, strict=True)]
        moments = data.agg(
            F.count(F.lit(1)).alias("n"),
            *(F.avg(x).alias(f"a{i}") for i, x in enumerate(imputed)),
            *(F.var_pop(x).alias(f"v{i}") for i, x in enumerate(imputed)),
        ).first()
        assert moments is not None
        rows = int(moments["n"])
        for i in range(len(numeric)):
            average, var = float(moments[f"a{i}"]), max(float(moments[f"v{i}"]), 0.0)
            averages.append(average)
            if scale:
                constant = var <= rows * _EPS * var + (rows * average * _EPS) ** 2
                mean.append(average)
                spread.append(1.0 if constant else math.sqrt(var))
            else:
                mean.append(0.0)
                spread.append(1.0)
    reference = [(a - m) / s for a, m, s in zip(averages, mean, spread, strict=True)]
    categorical_fill, categories, shares = _categories(data, list(schema.categorical))
    return _Preprocessing(fills, mean, spread, reference, categorical_fill, categories, shares)


def _categories(
    data: DataFrame, columns: list[str]
) -> tuple[list[Any], list[list[Any]], list[list[float]]]:
    """Per categorical feature: its fill value, sorted categories and their shares."""
    from pyspark.sql import functions as F

    if not columns:
        return [], [], []
    pairs = F.array(
        *(
            F.struct(F.lit(i).alias("i"), F.col(c).cast("string").alias("v"))
            for i, c in enumerate(columns)
        )
    )
    counted = data.select(F.explode(pairs).alias("p")).groupBy("p.i", "p.v").count().collect()
    seen: list[dict[Any, int]] = [{} for _ in columns]
    for row in counted:
        seen[int(row["i"])][row["v"]] = int(row["count"])
    fills, categories, shares = [], [], []
    for counts in seen:
        missing = counts.pop(None, 0)
        rows = missing + sum(counts.values())
        if not counts:  # never observed: scikit-learn keeps it as the one category 0
            fills.append(0)
            categories.append([0])
            shares.append([1.0])
            continue
        top = max(counts.values())
        fill = min(value for value, count in counts.items() if count == top)
        counts[fill] += missing
        known = sorted(counts)
        fills.append(fill)
        categories.append(known)
        shares.append([counts[value] / rows for value in known])
    return fills, categories, shares


def _class_weights(class_weight: Any, counts: dict[Any, int]) -> dict[Any, float]:
    if class_weight is None:
        return dict.fromkeys(counts, 1.0)
    if class_weight == "balanced":
        rows = sum(counts.values())
        return {label: rows / (len(counts) * count) for label, count in counts.items()}
    if isinstance(class_weight, dict):
        return {label: float(class_weight.get(label, 1.0)) for label in counts}
    raise TrainingError(f"class_weight {class_weight!r} is not supported by the Spark engine")


def _regularisation(given: dict[str, Any], total_weight: float) -> tuple[float, float]:
    """MLlib's ``regParam`` and ``elasticNetParam`` for scikit-learn's ``C`` and penalty."""
    penalty = given.get("penalty", "deprecated")
    ratio = given.get("l1_ratio")
    alpha = {"l1": 1.0, "l2": 0.0, "elasticnet": float(ratio or 0.0)}.get(
        penalty, float(ratio or 0.0)
    )
    c = float(given["C"])
    if penalty is None or math.isinf(c):
        return 0.0, 0.0
    return 1.0 / (c * total_weight), alpha


def _mllib_fit(
    data: DataFrame,
    schema: Schema,
    prep: _Preprocessing,
    classes: list[Any],
    weights: dict[Any, float],
    reg: float,
    alpha: float,
    given: dict[str, Any],
) -> tuple[np.ndarray, np.ndarray, int]:
    """MLlib's fit on the transformed rows: the coefficients (transformed columns, in the
    local engine's order), the intercept and the iterations it took."""
    from pyspark.ml.classification import LogisticRegression
    from pyspark.ml.feature import OneHotEncoder, VectorAssembler
    from pyspark.sql import functions as F

    target = F.col(schema.target)
    columns = [
        ((_imputed(c, fill) - mean) / scale).alias(f"_n{i}")
        for i, (c, fill, mean, scale) in enumerate(
            zip(schema.numeric, prep.numeric_fill, prep.mean, prep.scale, strict=True)
        )
    ]
    indexes = []
    for j, (c, fill, known) in enumerate(
        zip(schema.categorical, prep.categorical_fill, prep.categories, strict=True)
    ):
        if known == [0] and fill == 0:
            index = F.lit(0.0)
        else:
            value = F.coalesce(F.col(c).cast("string"), F.lit(fill))
            index = (F.array_position(F.array(*(F.lit(k) for k in known)), value) - 1).cast(
                "double"
            )
        columns.append(index.alias(f"_c{j}"))
        indexes.append(f"_c{j}")
    label = F.when(target == F.lit(classes[1]), 1.0).otherwise(0.0).alias("_y")
    weight = F.lit(weights[classes[0]])
    for value in classes[1:]:
        weight = F.when(target == F.lit(value), weights[value]).otherwise(weight)
    rows = data.select(*columns, label, weight.alias("_w"))
    inputs = [f"_n{i}" for i in range(len(schema.numeric))]
    if indexes:
        encoded = [f"_o{j}" for j in range(len(indexes))]
        encoder = OneHotEncoder(inputCols=indexes, outputCols=encoded, dropLast=False)
        rows = encoder.fit(rows).transform(rows)
        inputs += encoded
    rows = VectorAssembler(inputCols=inputs, outputCol="_features").transform(rows)
    estimator = LogisticRegression(
        featuresCol="_features",
        labelCol="_y",
        weightCol="_w",
        family="binomial",
        standardization=False,
        fitIntercept=bool(given["fit_intercept"]),
        regParam=reg,
        elasticNetParam=alpha,
        maxIter=max(int(given["max_iter"]), MIN_ITERATIONS),
        tol=TOL,
    )
    try:
        fitted = estimator.fit(rows)
    except Exception as exc:  # MLlib's and Py4J's errors: the data or the cluster
        raise TrainingError(
            f"Spark MLlib could not fit the model: {str(exc).splitlines()[0]}"
        ) from exc
    coef = np.asarray(fitted.coefficients.toArray(), dtype=np.float64)
    intercept = np.asarray([fitted.intercept], dtype=np.float64)
    return coef, intercept, int(fitted.summary.totalIterations)


def _pipeline(model: LinearModel, schema: Schema, params: dict[str, Any], scale: bool) -> Pipeline:
    """The scikit-learn pipeline equal to ``model`` (the original layout's
    ``trainedmodel.pkl``): Beryl's pipeline fitted on a few rows that hold every category,
    then given the statistics and coefficients Spark found; checked by reading it back."""
    width = max([2, *(len(c) for c in model.categories)])
    frame = pd.DataFrame(
        {
            **{c: np.arange(width, dtype=np.float64) % 2 for c in schema.numeric},
            **{
                c: pd.Series(
                    [np.nan if known == (0,) else known[i % len(known)] for i in range(width)],
                    dtype=object,
                )
                for c, known in zip(schema.categorical, model.categories, strict=True)
            },
            schema.target: [model.classes[i % 2] for i in range(width)],
        }
    )
    pipeline = fit_pipeline(schema, params, frame, scale=scale)
    features = pipeline.named_steps["features"]
    if schema.numeric:
        imputer, scaler = (step for _, step in features.named_transformers_["numeric"].steps)
        imputer.statistics_ = np.asarray(model.numeric_fill, dtype=np.float64)
        if scale:
            scaler.mean_ = np.asarray(model.mean, dtype=np.float64)
            scaler.scale_ = np.asarray(model.scale, dtype=np.float64)
            scaler.var_ = scaler.scale_**2
    if schema.categorical:
        imputer = features.named_transformers_["categorical"].steps[1][1]
        imputer.statistics_ = np.asarray(model.categorical_fill, dtype=object)
    estimator = pipeline.named_steps["model"]
    estimator.coef_ = np.array(model.coef)
    estimator.intercept_ = np.array(model.intercept)
    back = LinearModel.from_pipeline(pipeline, schema)
    same = (
        back.classes == model.classes
        and back.categories == model.categories
        and back.categorical_fill == model.categorical_fill
        and all(
            np.array_equal(getattr(back, name), getattr(model, name))
            for name in ("numeric_fill", "mean", "scale", "coef", "intercept")
        )
    )
    if not same:
        raise TrainingError("the Spark model could not be written as a scikit-learn pipeline")
    return pipeline
