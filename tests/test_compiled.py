"""CompiledModel: the folded pipeline scores exactly as the scikit-learn pipeline it came from."""

from __future__ import annotations

import math
import pickle
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer, MinMaxScaler

from beryl.data.demo import NUMERIC, generate
from beryl.data.schema import Schema
from beryl.model.compiled import CompiledModel
from beryl.model.engine import build_pipeline, fit_pipeline

PARAMS: list[dict[str, Any]] = [
    {},
    {"C": 0.01},
    {"C": 100.0},
    {"class_weight": "balanced"},
    {"fit_intercept": False},
    {"C": 0.3, "fit_intercept": False, "class_weight": "balanced"},
]
CATEGORIES = ["a", "b", "7", "Ünï", ""]
UNSEEN = ["zz", " a", "A", "7.0", "nan"]


@dataclass
class Case:
    schema: Schema
    pipeline: Pipeline
    training: pd.DataFrame
    categories: dict[str, list[str]]


def fit(schema: Schema, params: dict[str, Any], frame: pd.DataFrame, labels: Any) -> Pipeline:
    pipeline = build_pipeline(schema, params)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        pipeline.fit(frame[schema.features], labels)
    return pipeline


@st.composite
def cases(draw: st.DrawFn) -> Case:
    """A Beryl pipeline fitted on random data: missing values, odd columns, both label kinds."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    rows = draw(st.integers(12, 60))
    kinds = draw(st.lists(st.sampled_from(["spread", "spread", "constant", "empty"]), max_size=3))
    n_categorical = draw(st.integers(0 if kinds else 1, 2))
    columns: dict[str, Any] = {}
    logit = rng.normal(0.0, 0.5, rows)
    for index, kind in enumerate(kinds):
        loc = draw(st.sampled_from([0.0, -50.0, 1000.0]))
        spread = draw(st.sampled_from([0.5, 1.0, 300.0]))
        noise = rng.normal(0.0, 1.0, rows)
        values = {
            "spread": loc + spread * noise,
            "constant": np.full(rows, loc),
            "empty": np.full(rows, np.nan),
        }[kind]
        logit += draw(st.sampled_from([-2.0, 0.0, 1.5])) * noise
        holes = rng.random(rows) < draw(st.sampled_from([0.0, 0.1, 0.4]))
        columns[f"n{index}"] = np.where(holes, np.nan, values)
    categories: dict[str, list[str]] = {}
    for index in range(n_categorical):
        known = CATEGORIES[: draw(st.integers(1, len(CATEGORIES)))]
        picks = rng.integers(0, len(known), rows)
        logit += np.asarray(rng.normal(0.0, 1.0, len(known)))[picks]
        holes = rng.random(rows) < draw(st.sampled_from([0.0, 0.1, 0.4]))
        column = [None if hole else known[pick] for pick, hole in zip(picks, holes, strict=True)]
        columns[f"c{index}"] = column
        categories[f"c{index}"] = known
    values = draw(st.sampled_from([(0, 1), ("No", "Yes")]))
    positive = draw(st.sampled_from(values))
    chosen = (rng.random(rows) < 1 / (1 + np.exp(-logit))).astype(int)
    chosen[:2] = (0, 1)  # both classes present
    labels = pd.Series([values[i] for i in chosen])
    schema = Schema(
        target="y",
        positive_label=positive,
        numeric=[c for c in columns if c.startswith("n")],
        categorical=list(categories),
    )
    frame = _frame(columns, schema)
    return Case(
        schema, fit(schema, draw(st.sampled_from(PARAMS)), frame, labels), frame, categories
    )


def _frame(columns: dict[str, Any], schema: Schema) -> pd.DataFrame:
    """The frame the API hands the model: numeric float64 with NaN, categories as text."""
    frame = pd.DataFrame(columns, columns=schema.features)
    for column in schema.numeric:
        frame[column] = frame[column].astype("float64")
    return frame


def _records(frame: pd.DataFrame, schema: Schema) -> list[dict[str, Any]]:
    """Dict records: None (or NaN, every other row) for missing values."""
    records = []
    for index, row in enumerate(frame.to_dict("records")):
        record = {}
        for column, value in row.items():
            if pd.isna(value):
                record[column] = math.nan if index % 2 and column in schema.numeric else None
            else:
                record[column] = float(value) if column in schema.numeric else value
        records.append(record)
    return records


def _slack(pipeline: Pipeline, schema: Schema, frame: pd.DataFrame) -> tuple[Any, Any]:
    """Rounding room per row: for the probabilities, and for the decision's sign.

    Both forms round each term to ~1e-16 of its size, so a score summed from huge terms (an
    extreme input) is only known to that absolute precision. For ordinary inputs this is far
    below 1e-9.
    """
    model = pipeline.named_steps["model"]
    coef = np.abs(model.coef_[0])
    inputs = np.zeros(len(frame))
    folded = abs(float(model.intercept_[0])) + 1.0 + coef[len(schema.numeric) :].sum()
    if schema.numeric:
        numeric = pipeline.named_steps["features"].named_transformers_["numeric"]
        weights = coef[: len(schema.numeric)] / numeric["scale"].scale_
        imputed = numeric["impute"].transform(frame[schema.numeric])
        inputs = np.abs(imputed) @ weights
        folded += float(np.abs(numeric["scale"].mean_) @ weights)
    return 1e-15 * inputs, 1e-14 * (inputs + folded)


def beryl_labels(pipeline: Pipeline, schema: Schema, decision: np.ndarray) -> list[Any]:
    """Beryl's decision rule on the pipeline's own scores: the positive label where its score is
    above 0 (its probability above 0.5), else the other class; a tie is not positive.

    scikit-learn's ``predict`` agrees except at a score of exactly 0, where it picks
    ``classes_[0]``: the positive label when that sorts first.
    """
    classes = pipeline.classes_.tolist()
    positive = classes.index(schema.positive_label)
    scores = decision if positive == 1 else -decision
    return [classes[positive] if s > 0 else classes[1 - positive] for s in scores.tolist()]


def assert_parity(
    compiled: CompiledModel, pipeline: Pipeline, schema: Schema, frame: pd.DataFrame
) -> None:
    classes = pipeline.classes_.tolist()
    expected_proba = pipeline.predict_proba(frame)[:, classes.index(schema.positive_label)]
    decision = pipeline.decision_function(frame)
    expected = beryl_labels(pipeline, schema, decision)
    proba_slack, sign_slack = _slack(pipeline, schema, frame)
    # A score within rounding of 0 may fall either way; an exact 0 (no signal at all) may not.
    sure = (np.abs(decision) > sign_slack) | (decision == 0)
    away = (np.abs(decision) > sign_slack).tolist()  # no tie: scikit-learn decides the same
    sklearn = pipeline.predict(frame).tolist()
    assert [e for e, a in zip(expected, away, strict=True) if a] == [
        k for k, a in zip(sklearn, away, strict=True) if a
    ]
    records = _records(frame, schema)
    single = [compiled.predict([record]) for record in records]
    answers = {
        "records": compiled.predict(records),
        "frame": compiled.predict_frame(frame),
        "one by one": ([p[0] for p, _ in single], [q[0] for _, q in single]),
    }
    for how, (predictions, probabilities) in answers.items():
        assert len(predictions) == len(probabilities) == len(frame), how
        gap = np.abs(np.asarray(probabilities) - expected_proba)
        assert np.all(gap <= 1e-9 + proba_slack), (how, gap.max())
        assert [p for p, s in zip(predictions, sure, strict=True) if s] == [
            e for e, s in zip(expected, sure, strict=True) if s
        ], how
        assert all(type(p) is type(e) for p, e in zip(predictions, expected, strict=True)), how
        assert all(type(q) is float for q in probabilities), how
    for scores in (compiled.decision(records), compiled.decision_frame(frame)):
        assert np.all(np.abs(scores - decision) <= sign_slack)


def _queries(case: Case) -> st.SearchStrategy[pd.DataFrame]:
    """Inputs with missing values, unseen categories and extreme but finite numbers."""
    number = st.one_of(
        st.none(),
        st.floats(-1e3, 1e3),
        st.floats(-1e12, 1e12),
        st.sampled_from([0.0, -0.0, 1e12, -1e12, 5e-324]),
    )
    fields: dict[str, st.SearchStrategy[Any]] = dict.fromkeys(case.schema.numeric, number)
    for column, known in case.categories.items():
        fields[column] = st.one_of(st.none(), st.sampled_from(known + UNSEEN))
    row = st.fixed_dictionaries(fields)
    return st.lists(row, min_size=1, max_size=8).map(
        lambda rows: _frame({c: [r[c] for r in rows] for c in case.schema.features}, case.schema)
    )


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_compiled_model_scores_as_the_pipeline(data: st.DataObject) -> None:
    case = data.draw(cases())
    compiled = CompiledModel.from_pipeline(case.pipeline, case.schema)
    assert compiled is not None
    assert compiled.classes == tuple(case.pipeline.classes_.tolist())
    assert_parity(compiled, case.pipeline, case.schema, case.training)
    assert_parity(compiled, case.pipeline, case.schema, data.draw(_queries(case)))


def test_demo_data_scores_as_the_pipeline() -> None:
    schema = Schema(target="exited", positive_label=1, id_columns=["corporation"], numeric=NUMERIC)
    pipeline = fit_pipeline(schema, {"max_iter": 1000}, generate(3000, seed=0))
    compiled = CompiledModel.from_pipeline(pipeline, schema)
    assert compiled is not None
    test = generate(2000, seed=5, missing_rate=0.05)[schema.features]
    assert test.isna().any().all()
    assert_parity(compiled, pipeline, schema, test)
    predictions, _ = compiled.predict_frame(test)
    assert set(predictions) == {0, 1}


def test_a_pipeline_loaded_from_its_pickle_is_compiled() -> None:
    """The registry stores pickles; ``as_object`` must still be recognised after loading."""
    schema = Schema(target="y", positive_label="Yes", numeric=["x"], categorical=["plan"])
    frame = _frame({"x": [1.0, 2.0, None, 4.0], "plan": ["a", "b", "a", None]}, schema)
    loaded = pickle.loads(pickle.dumps(fit(schema, {}, frame, ["No", "Yes", "Yes", "No"])))
    compiled = CompiledModel.from_pipeline(loaded, schema)
    assert compiled is not None
    assert_parity(compiled, loaded, schema, frame)


def test_weights_are_the_one_hot_coefficients_and_unknown_weighs_nothing() -> None:
    schema = Schema(target="y", positive_label="Yes", categorical=["plan"])
    frame = pd.DataFrame({"plan": ["gold", "gold", "gold", "free", "free", None]})
    labels = ["No", "No", "Yes", "Yes", "Yes", "No"]
    pipeline = fit(schema, {}, frame, labels)
    compiled = CompiledModel.from_pipeline(pipeline, schema)
    assert compiled is not None
    coef = pipeline.named_steps["model"].coef_[0]
    assert compiled.category_weights == ({"free": coef[0], "gold": coef[1]},)
    assert compiled.missing_category_weight == (coef[1],)  # "gold" is the most frequent
    assert compiled.decision([{"plan": "platinum"}]).tolist() == [compiled.intercept]
    assert compiled.positive_index == 1


def test_a_never_seen_category_column_weighs_its_imputed_zero() -> None:
    schema = Schema(target="y", positive_label=1, numeric=["x"], categorical=["empty"])
    frame = _frame({"x": [0.0, 1.0, 2.0, 3.0, np.nan], "empty": [None] * 5}, schema)
    pipeline = fit(schema, {}, frame, [0, 0, 1, 1, 1])
    compiled = CompiledModel.from_pipeline(pipeline, schema)
    assert compiled is not None
    assert compiled.category_weights == ({},)
    assert compiled.missing_category_weight == (pipeline.named_steps["model"].coef_[0][-1],)
    # The pipeline scores a batch as long as the column is all missing or all text.
    assert_parity(compiled, pipeline, schema, frame)
    text = _frame({"x": [0.5, 9.0], "empty": ["a", "b"]}, schema)
    assert_parity(compiled, pipeline, schema, text)


def test_infinite_scores_raise_value_error_as_the_pipeline_does() -> None:
    schema = Schema(target="y", positive_label=1, numeric=["x"])
    frame = _frame({"x": [0.0, 1.0, 2.0, 3.0]}, schema)
    pipeline = fit(schema, {}, frame, [0, 0, 1, 1])
    compiled = CompiledModel.from_pipeline(pipeline, schema)
    assert compiled is not None
    with pytest.raises(ValueError):
        pipeline.predict_proba(_frame({"x": [math.inf]}, schema))
    with pytest.raises(ValueError, match="not finite"):
        compiled.predict([{"x": math.inf}])
    with pytest.raises(ValueError, match="not finite"):
        compiled.predict([{"x": 1.0}, {"x": -math.inf}])
    with pytest.raises(ValueError, match="not finite"):
        compiled.predict_frame(_frame({"x": [1.0, math.inf]}, schema))


def test_compiled_arrays_are_read_only() -> None:
    schema = Schema(target="y", positive_label=1, numeric=["x"])
    pipeline = fit(schema, {}, _frame({"x": [0.0, 1.0, 2.0, 3.0]}, schema), [0, 0, 1, 1])
    compiled = CompiledModel.from_pipeline(pipeline, schema)
    assert compiled is not None
    with pytest.raises(ValueError):
        compiled.weights[0] = 0.0
    with pytest.raises(ValueError):
        compiled.fill[0] = 0.0


def test_three_classes_are_not_compiled() -> None:
    schema = Schema(target="y", positive_label="a", numeric=["x"], categorical=["c"])
    frame = _frame({"x": [0.0, 1.0, 2.0, 3.0, 4.0, 5.0], "c": list("pqpqpq")}, schema)
    pipeline = fit(schema, {}, frame, list("aabbcc"))
    assert CompiledModel.from_pipeline(pipeline, schema) is None


SCHEMA = Schema(target="y", positive_label=1, numeric=["x"], categorical=["c"])
FRAME = pd.DataFrame(
    {"x": [0.0, 1.0, 2.0, 3.0, np.nan, 5.0], "c": list("pqpqrp"), "extra": [1.0] * 6}
)
LABELS = [0, 1, 0, 1, 1, 0]


def _changed(**params: Any) -> Pipeline:
    pipeline = build_pipeline(SCHEMA, {}).set_params(**params)
    return pipeline.fit(FRAME, LABELS)


@pytest.mark.parametrize(
    ("pipeline", "schema"),
    [
        pytest.param(lambda: _changed(), Schema("y", 1, numeric=["x"]), id="other-schema"),
        pytest.param(
            lambda: _changed(),
            Schema("y", "1", numeric=["x"], categorical=["c"]),
            id="label-not-a-class",
        ),
        pytest.param(lambda: build_pipeline(SCHEMA, {}), SCHEMA, id="unfitted"),
        pytest.param(
            lambda: LogisticRegression().fit(FRAME[["x"]].fillna(0), LABELS), SCHEMA, id="bare"
        ),
        pytest.param(
            lambda: Pipeline(
                [*_changed().steps[:1], ("twice", FunctionTransformer()), *_changed().steps[1:]]
            ),
            SCHEMA,
            id="extra-step",
        ),
        pytest.param(
            lambda: _changed(features__numeric__impute__add_indicator=True), SCHEMA, id="indicator"
        ),
        pytest.param(
            lambda: _changed(features__numeric__scale=MinMaxScaler()), SCHEMA, id="minmax"
        ),
        pytest.param(
            lambda: _changed(features__categorical__onehot__drop="first"), SCHEMA, id="drop"
        ),
        pytest.param(
            lambda: _changed(features__categorical__onehot__min_frequency=2), SCHEMA, id="rare"
        ),
        pytest.param(
            lambda: _changed(features__categorical__as_object=FunctionTransformer()),
            SCHEMA,
            id="identity",
        ),
        pytest.param(lambda: _changed(features__remainder="passthrough"), SCHEMA, id="passthrough"),
        pytest.param(
            lambda: _changed(features__transformer_weights={"numeric": 2.0}), SCHEMA, id="weights"
        ),
    ],
)
def test_other_shapes_are_not_compiled(pipeline: Any, schema: Schema) -> None:
    assert CompiledModel.from_pipeline(pipeline(), schema) is None


def test_the_base_of_those_shapes_is_compiled() -> None:
    """The pipelines above differ from a compilable one only by the changed parameter."""
    assert CompiledModel.from_pipeline(_changed(), SCHEMA) is not None


def test_a_fold_that_would_lose_precision_is_not_compiled() -> None:
    """Mean 1e9 with spread 1e-3: folding the centring into b would cost ~1e-4 of score."""
    schema = Schema(target="y", positive_label=1, numeric=["x"])
    rng = np.random.default_rng(0)
    noise = rng.normal(0.0, 1.0, 200)
    frame = _frame({"x": 1e9 + 1e-3 * noise}, schema)
    pipeline = fit(schema, {}, frame, (noise > 0).astype(int))
    assert CompiledModel.from_pipeline(pipeline, schema) is None
