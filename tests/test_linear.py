"""LinearModel: the data-only model scores as the pipeline it came from, and only from data."""

from __future__ import annotations

import contextlib
import json
import warnings
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.exceptions import ConvergenceWarning
from tests.test_compiled import _frame, _queries, _slack, beryl_labels, cases, fit

from beryl.data.schema import Schema
from beryl.model.linear import LinearModel, NotLinearError


def assert_same_scores(model: LinearModel, pipeline: Any, frame: pd.DataFrame) -> None:
    schema = model.schema
    proba_slack, sign_slack = _slack(pipeline, schema, frame)
    expected = pipeline.predict_proba(frame)
    assert np.all(np.abs(model.predict_proba(frame) - expected) <= 1e-9 + proba_slack[:, None])
    decision = pipeline.decision_function(frame)
    assert np.all(np.abs(model.decision_function(frame) - decision) <= sign_slack)
    sure = (np.abs(decision) > sign_slack) | (decision == 0)
    labels, chances = model.predict_frame(frame)
    ruled = np.asarray(beryl_labels(pipeline, schema, decision), dtype=object)
    assert labels[sure].tolist() == ruled[sure].tolist()
    away = np.abs(decision) > sign_slack  # no tie: scikit-learn decides the same
    assert labels[away].tolist() == pipeline.predict(frame)[away].tolist()
    assert model.predict(frame).tolist() == labels.tolist()
    positive = pipeline.classes_.tolist().index(schema.positive_label)
    assert np.all(np.abs(chances - expected[:, positive]) <= 1e-9 + proba_slack)


@settings(max_examples=50, deadline=None)
@given(data=st.data())
def test_the_data_only_model_scores_as_the_pipeline(data: st.DataObject) -> None:
    case = data.draw(cases())
    model = LinearModel.from_pipeline(case.pipeline, case.schema)
    assert model.classes == tuple(case.pipeline.classes_.tolist())
    assert_same_scores(model, case.pipeline, case.training)
    assert_same_scores(model, case.pipeline, data.draw(_queries(case)))


@settings(max_examples=30, deadline=None)
@given(data=st.data())
def test_json_round_trip_is_exact(data: st.DataObject) -> None:
    case = data.draw(cases())
    model = LinearModel.from_pipeline(case.pipeline, case.schema)
    again = LinearModel.from_dict(json.loads(json.dumps(model.to_dict())))
    assert again.to_dict() == model.to_dict()
    queries = data.draw(_queries(case))
    assert again.predict_proba(queries).tolist() == model.predict_proba(queries).tolist()
    compiled, recompiled = model.compiled(), again.compiled()
    assert (compiled is None) == (recompiled is None)


def test_three_classes_are_served_from_data_too() -> None:
    """The folded fast path is for two classes; the data-only model covers the rest."""
    schema = Schema(target="y", positive_label="a", numeric=["x"], categorical=["c"])
    rng = np.random.default_rng(4)
    frame = _frame({"x": rng.normal(size=90), "c": rng.choice(list("pqr"), 90).tolist()}, schema)
    labels = np.where(frame["x"] > 0.5, "a", np.where(frame["x"] < -0.5, "c", "b"))
    pipeline = fit(schema, {}, frame, labels)
    model = LinearModel.from_pipeline(pipeline, schema)
    assert model.compiled() is None and model.coef.shape == (3, 4)
    np.testing.assert_allclose(
        model.predict_proba(frame), pipeline.predict_proba(frame), atol=1e-12
    )
    assert model.predict(frame).tolist() == pipeline.predict(frame).tolist()
    labels_out, chances = model.predict_frame(frame)
    np.testing.assert_allclose(chances, pipeline.predict_proba(frame)[:, 0], atol=1e-12)
    assert labels_out.tolist() == pipeline.predict(frame).tolist()


def test_a_model_too_extreme_to_fold_is_scored_unfolded() -> None:
    schema = Schema(target="y", positive_label=1, numeric=["x"])
    noise = np.random.default_rng(0).normal(0.0, 1.0, 200)
    frame = _frame({"x": 1e9 + 1e-3 * noise}, schema)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        pipeline = fit(schema, {}, frame, (noise > 0).astype(int))
    model = LinearModel.from_pipeline(pipeline, schema)
    assert model.compiled() is None
    np.testing.assert_allclose(model.predict_proba(frame), pipeline.predict_proba(frame), atol=1e-9)


def test_scores_do_not_depend_on_the_other_rows() -> None:
    """Batch scoring in blocks of any size gives each row the same bits."""
    schema = Schema(target="y", positive_label=1, numeric=["a", "b", "c"], categorical=["k"])
    rng = np.random.default_rng(1)
    columns = {n: rng.normal(size=500) for n in ("a", "b", "c")}
    frame = _frame({**columns, "k": rng.choice(list("xyz"), 500).tolist()}, schema)
    model = LinearModel.from_pipeline(
        fit(schema, {}, frame, (columns["a"] > 0).astype(int)), schema
    )
    whole = model.predict_proba(frame)[:, 1]
    for size in (1, 7, 64, 333):
        parts = [
            model.predict_proba(frame.iloc[i : i + size])[:, 1] for i in range(0, len(frame), size)
        ]
        assert np.concatenate(parts).tolist() == whole.tolist()


def _valid() -> dict[str, Any]:
    schema = Schema(target="y", positive_label=1, numeric=["x"], categorical=["c"])
    frame = _frame({"x": [0.0, 1.0, 2.0, 3.0], "c": ["p", "q", "p", None]}, schema)
    return LinearModel.from_pipeline(fit(schema, {}, frame, [0, 0, 1, 1]), schema).to_dict()


BROKEN = {
    "not an object": lambda d: [],
    "another format": lambda d: {**d, "format": "pickle"},
    "a later version": lambda d: {**d, "format_version": 99},
    "no coefficients": lambda d: {k: v for k, v in d.items() if k != "coef"},
    "coefficients of the wrong shape": lambda d: {**d, "coef": [[1.0]]},
    "a text coefficient": lambda d: {**d, "coef": [["1", 2.0, 3.0]]},
    "an infinite intercept": lambda d: {**d, "intercept": [float("inf")]},
    "a zero scale": lambda d: {**d, "numeric": {**d["numeric"], "scale": [0.0]}},
    "a missing scale": lambda d: {**d, "numeric": {**d["numeric"], "scale": []}},
    "one class": lambda d: {**d, "classes": [1]},
    "repeated classes": lambda d: {**d, "classes": [1, 1]},
    "positive label not a class": lambda d: {**d, "classes": [0, 2]},
    "a category that is an object": lambda d: {
        **d,
        "categorical": {**d["categorical"], "categories": [[{"x": 1}, "q"]]},
    },
    "a boolean category": lambda d: {
        **d,
        "categorical": {**d["categorical"], "categories": [[True, "q"]]},
    },
    "no schema": lambda d: {k: v for k, v in d.items() if k != "schema"},
    "a threshold of 1": lambda d: {**d, "threshold": 1.0},
    "a threshold of 0": lambda d: {**d, "threshold": 0},
    "a NaN threshold": lambda d: {**d, "threshold": float("nan")},
    "a text threshold": lambda d: {**d, "threshold": "0.5"},
    "a boolean threshold": lambda d: {**d, "threshold": True},
    "a reference of the wrong length": lambda d: {**d, "reference": [0.0]},
    "a text reference": lambda d: {**d, "reference": ["0", 0.5, 0.5]},
    "an infinite reference": lambda d: {**d, "reference": [float("inf"), 0.5, 0.5]},
    "a boolean reference": lambda d: {**d, "reference": [True, 0.5, 0.5]},
    "a reference that is a number": lambda d: {**d, "reference": 0.0},
}


@pytest.mark.parametrize("name", BROKEN, ids=list(BROKEN))
def test_a_broken_model_file_is_refused_not_crashed_on(name: str) -> None:
    with pytest.raises(NotLinearError):
        LinearModel.from_dict(BROKEN[name](_valid()))


@settings(max_examples=200, deadline=None)
@given(
    st.recursive(
        st.none() | st.booleans() | st.floats() | st.text(max_size=5),
        lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=8), c, max_size=4),
    )
)
def test_any_json_is_a_model_or_a_refusal(value: Any) -> None:
    document = _valid()
    for key in ("coef", "classes", "numeric", "categorical", "intercept", "threshold", "reference"):
        with contextlib.suppress(NotLinearError):
            LinearModel.from_dict({**document, key: value})


def test_the_threshold_is_data_and_decides_only_the_class() -> None:
    """``threshold`` is in the model file (so its signature covers it); a file from before it
    was there is a model at 0.5; it moves decisions, never probabilities."""
    document = _valid()
    model = LinearModel.from_dict(document)
    assert model.threshold == 0.5 and document["threshold"] == 0.5
    older = {k: v for k, v in document.items() if k != "threshold"}
    assert LinearModel.from_dict(older).to_dict() == document
    strict = LinearModel.from_dict({**document, "threshold": 0.8})
    assert LinearModel.from_dict(json.loads(json.dumps(strict.to_dict()))).threshold == 0.8
    frame = _frame(
        {"x": np.linspace(-3.0, 6.0, 61), "c": ["p", "q", None] * 20 + ["p"]}, model.schema
    )
    labels, chances = model.predict_frame(frame)
    strict_labels, strict_chances = strict.predict_frame(frame)
    assert strict_chances.tolist() == chances.tolist()
    assert labels.tolist() == [1 if c > 0.5 else 0 for c in chances.tolist()]
    assert strict_labels.tolist() == [1 if c > 0.8 else 0 for c in chances.tolist()]
    assert any(0.5 < c <= 0.8 for c in chances.tolist())  # where the two disagree
    compiled = strict.compiled()
    assert compiled is not None and compiled.threshold == 0.8
    assert compiled.predict_frame(frame)[0] == strict_labels.tolist()


def test_the_reference_is_data_and_moves_only_the_base_value() -> None:
    """``reference`` is in the model file (signed with it); a file from before it was there
    reads as zeros; it changes the base value of reason codes, never a score or a decision."""
    schema = Schema(target="y", positive_label=1, numeric=["x"], categorical=["c"])
    frame = _frame({"x": [0.0, 1.0, 2.0, 3.0, None], "c": ["p", "q", "p", None, "q"]}, schema)
    plain = LinearModel.from_pipeline(fit(schema, {}, frame, [0, 0, 1, 1, 0]), schema)
    assert np.asarray(plain.reference).tolist() == [0.0, 0.0, 0.0]
    model = plain.with_reference(frame)
    # x imputed with its median (1.5) then standardised: mean 0; c imputed "p": 3 of 5, "q" 2.
    assert np.asarray(model.reference)[0] == pytest.approx(0.0, abs=1e-12)
    assert np.asarray(model.reference)[1:].tolist() == [0.6, 0.4]
    document = json.loads(json.dumps(model.to_dict()))
    again = LinearModel.from_dict(document)
    assert again.to_dict() == model.to_dict()
    older = {k: v for k, v in document.items() if k != "reference"}
    assert LinearModel.from_dict(older).to_dict() == plain.to_dict()
    queries = _frame(
        {"x": np.linspace(-3.0, 6.0, 7), "c": ["p", "q", None, "z", "p", "q", "p"]}, schema
    )
    assert model.predict_proba(queries).tolist() == plain.predict_proba(queries).tolist()
    assert model.predict(queries).tolist() == plain.predict(queries).tolist()
    compiled, folded = model.compiled(), plain.compiled()
    assert compiled is not None and folded is not None
    assert compiled.predict_frame(queries) == folded.predict_frame(queries)
    _, _, base = model.contributions(queries)
    assert base != float(model.intercept[0]) and plain.contributions(queries)[2] == float(
        plain.intercept[0]
    )
