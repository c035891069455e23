"""Beryl's pipeline fitted faster than ``Pipeline.fit``, to the same (or a closer) model.

The median imputer fitted by partition gives exactly the statistics and transform of
scikit-learn's own ``strategy="median"`` (on random columns with holes, empty, constant, odd and
even lengths) and stays a plain scikit-learn object; the Newton solver, warm-started on many
rows, reaches the optimum a fit to a gradient of 1e-12 finds, to 1e-6; a solver or penalty the
configuration names is kept.
"""

from __future__ import annotations

import pickle

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.linear_model import LogisticRegression

from beryl.data.demo import generate
from beryl.data.schema import Schema
from beryl.model.engine import SklearnEngine, build_pipeline
from beryl.model.fitting import SOLVER, WARM_ROWS, fit_features, model_params

NUMERIC = ["lastmonth_activity", "lastyear_activity", "number_of_employees"]


@st.composite
def frames(draw: st.DrawFn) -> tuple[Schema, pd.DataFrame]:
    rows = draw(st.integers(1, 60))
    width = draw(st.integers(1, 4))
    columns = {}
    for j in range(width):
        kind = draw(st.sampled_from(["random", "empty", "constant", "few"]))
        values = draw(
            st.lists(
                st.floats(-1e6, 1e6, allow_nan=False) | st.just(float("nan")),
                min_size=rows,
                max_size=rows,
            )
        )
        column = np.asarray(values, dtype=np.float64)
        if kind == "empty":
            column[:] = np.nan
        elif kind == "constant":
            column[~np.isnan(column)] = 3.5
        elif kind == "few":
            column = np.round(column / 1e5)
        columns[f"x{j}"] = column
    columns["segment"] = draw(
        st.lists(st.sampled_from(["a", "b", None]), min_size=rows, max_size=rows)
    )
    columns["y"] = [i % 2 for i in range(rows)]
    schema = Schema(
        target="y", positive_label=1, numeric=list(columns)[:width], categorical=["segment"]
    )
    return schema, pd.DataFrame(columns)


@settings(max_examples=150, deadline=None)
@given(case=frames())
def test_medians_by_partition_are_scikit_learns_medians(case: tuple[Schema, pd.DataFrame]) -> None:
    schema, frame = case
    ours = build_pipeline(schema, {}).steps[0][1]
    theirs = build_pipeline(schema, {}).steps[0][1]
    features = frame[schema.features]
    got = fit_features(ours, features, frame["y"])
    expected = theirs.fit_transform(features, frame["y"])
    fitted = ours.named_transformers_["numeric"].named_steps["impute"]
    reference = theirs.named_transformers_["numeric"].named_steps["impute"]
    assert fitted.statistics_.tolist() == reference.statistics_.tolist()
    assert np.array_equal(np.asarray(got), np.asarray(expected), equal_nan=True)
    assert np.array_equal(ours.transform(features), theirs.transform(features), equal_nan=True)
    assert fitted.strategy == "median" == ours.get_params()["numeric__impute__strategy"]


def test_the_fitted_pipeline_pickles_as_plain_scikit_learn() -> None:
    """The original layout's trainedmodel.pkl loads without Beryl installed."""
    frame = generate(2_000, seed=3)
    schema = Schema(target="exited", positive_label=1, numeric=NUMERIC, categorical=[])
    fitted = SklearnEngine().fit(schema, {"max_iter": 1000}, frame)
    assert b"beryl" not in pickle.dumps(fitted.artifact)


@pytest.fixture(scope="module")
def many_rows() -> tuple[Schema, pd.DataFrame]:
    frame = generate(4 * WARM_ROWS + 50_000, seed=11)
    return Schema(target="exited", positive_label=1, numeric=NUMERIC, categorical=[]), frame


def _coefficients(estimator: LogisticRegression) -> np.ndarray:
    return np.r_[estimator.coef_.ravel(), estimator.intercept_]


def test_the_warm_started_newton_fit_reaches_the_optimum(
    many_rows: tuple[Schema, pd.DataFrame],
) -> None:
    schema, frame = many_rows
    fitted = SklearnEngine().fit(schema, {"max_iter": 1000, "C": 0.5}, frame)
    estimator = fitted.artifact.named_steps["model"]
    assert estimator.solver == SOLVER and estimator.warm_start is False
    assert estimator.n_iter_[0] <= 3  # it started near the optimum
    matrix = fitted.artifact.steps[0][1].transform(frame[schema.features])
    exact = LogisticRegression(solver=SOLVER, tol=1e-12, max_iter=100, C=0.5)
    exact.fit(matrix, frame["exited"])
    assert np.abs(_coefficients(estimator) - _coefficients(exact)).max() <= 1e-6
    assert fitted.parameters["solver"] == SOLVER and fitted.parameters["warm_start"] is False


def test_a_configured_solver_or_penalty_is_kept(many_rows: tuple[Schema, pd.DataFrame]) -> None:
    assert model_params({"solver": "lbfgs"}) == {"solver": "lbfgs"}
    assert model_params({"penalty": "l1", "solver": "saga"})["solver"] == "saga"
    assert "solver" not in model_params({"l1_ratio": 0.5})
    assert model_params({"max_iter": 10})["solver"] == SOLVER
    schema, frame = many_rows
    small = frame.head(20_000)
    fitted = SklearnEngine().fit(schema, {"max_iter": 1000, "solver": "lbfgs"}, small)
    assert fitted.artifact.named_steps["model"].solver == "lbfgs"
