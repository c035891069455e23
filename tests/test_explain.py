"""Reason codes: each feature's exact contribution to a record's logit for the positive label.

For Beryl's linear model they are exact: a feature contributes ``coef · (transformed value -
reference)`` (summed over a categorical feature's one-hot columns), and the contributions of all
features plus the base value are the record's logit. Checked on random models and inputs (missing
numbers, missing and unseen categories, the positive label first or second), for the reference
kept in the model file, for the order of the reasons, and through every way of asking: the JSON
body and the CSV body of ``POST /prediction`` (route and fast path alike, in process and over
HTTP) and ``beryl predict --explain``.
"""

from __future__ import annotations

import dataclasses
import io
import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.pipeline import Pipeline
from tests.conftest import CliRunner
from tests.test_api import make_mixed_workspace, serving
from tests.test_compiled import _frame, _queries, _records, _slack, cases, fit
from tests.test_fastpath import Pair, assert_same, call, pair, post

from beryl import config
from beryl._io import utc_now
from beryl.api.routes.prediction import record_plan, rows_from_records
from beryl.config import Settings
from beryl.data.schema import Schema
from beryl.model.card import ModelCard
from beryl.model.linear import LinearModel
from beryl.model.predict import ExplainError, explain, explain_count, explain_dicts, predict
from beryl.model.registry import Registry
from beryl.workspace import Workspace

NUMERIC = ["lastmonth_activity", "lastyear_activity", "number_of_employees", "margin"]
FEATURES = [*NUMERIC, "segment"]


# -- the model: exact contributions ---------------------------------------------------------------
def positive_decision(pipeline: Pipeline, schema: Schema, frame: pd.DataFrame) -> np.ndarray:
    """The pipeline's own logit for the positive label (its decision is for ``classes_[1]``)."""
    decision = np.asarray(pipeline.decision_function(frame[schema.features]))
    return decision if pipeline.classes_.tolist().index(schema.positive_label) == 1 else -decision


def assert_exact(model: LinearModel, pipeline: Pipeline, frame: pd.DataFrame) -> None:
    """Contributions plus base are the logit; the logit is the pipeline's; records as frames."""
    contributions, logits, base = model.contributions(frame)
    assert contributions.shape == (len(frame), len(model.schema.features))
    terms = np.abs(contributions).sum(axis=1) + abs(base) + np.abs(logits)
    _, sign_slack = _slack(pipeline, model.schema, frame)
    gap = np.abs(contributions.sum(axis=1) + base - logits)
    assert np.all(gap <= 1e-9 + 1e-14 * terms), gap.max()
    assert np.all(np.abs(logits - positive_decision(pipeline, model.schema, frame)) <= sign_slack)
    by_records = model.record_contributions(_records(frame, model.schema))
    assert by_records[0].tolist() == contributions.tolist()  # the same numbers, not just close
    assert by_records[1].tolist() == logits.tolist() and by_records[2] == base


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_contributions_and_base_are_the_logit_on_random_models_and_inputs(
    data: st.DataObject,
) -> None:
    """Random pipelines (missing values, constant and empty columns, either label first) and
    inputs with missing values, unseen categories and extreme numbers."""
    case = data.draw(cases())
    model = LinearModel.from_pipeline(case.pipeline, case.schema).with_reference(case.training)
    queries = data.draw(_queries(case))
    assert_exact(model, case.pipeline, case.training)
    assert_exact(model, case.pipeline, queries)
    # Any reference keeps the sums exact (the training one is 0 for every standardised column).
    width = model.coef.shape[1]
    other = st.lists(st.floats(-3.0, 3.0), min_size=width, max_size=width)
    shifted = dataclasses.replace(model, reference=np.asarray(data.draw(other)))
    assert_exact(shifted, case.pipeline, queries)


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_a_few_records_are_explained_in_plain_python_with_the_same_answer(
    data: st.DataObject,
) -> None:
    """``explain_dicts`` (what the API answers; a few records without arrays) gives exactly
    ``explain(...).to_dicts()``, and refuses what it refuses, on random models and inputs."""
    case = data.draw(cases())
    model = LinearModel.from_pipeline(case.pipeline, case.schema).with_reference(case.training)
    records = _records(data.draw(_queries(case)), model.schema)
    width = len(model.schema.features)
    for rows in (records[:1], records[:3], records[:16], records):  # the last: the array path
        for count in sorted({1, 2, width, width + 5}):
            try:
                expected: Any = explain(model, rows, count).to_dicts()
            except ValueError as exc:
                expected = str(exc)
            try:
                got: Any = explain_dicts(model, rows, count)
            except ValueError as exc:
                got = str(exc)
            assert got == expected


def moderate_case(classes: tuple[Any, Any], positive: Any, seed: int) -> tuple[Any, ...]:
    """A pipeline fitted on random data with holes, and queries of ordinary size with missing
    numbers, missing and unseen categories."""
    rng = np.random.default_rng(seed)
    schema = Schema(
        target="y", positive_label=positive, numeric=["a", "b", "c"], categorical=["k", "m"]
    )

    def columns(rows: int, unseen: bool) -> dict[str, Any]:
        out: dict[str, Any] = {
            "a": rng.normal(50.0, 20.0, rows),
            "b": rng.normal(-3.0, 0.5, rows),
            "c": rng.exponential(1000.0, rows),
        }
        for name in ("a", "b", "c"):
            out[name][rng.random(rows) < 0.2] = np.nan
        for name, known in (("k", ["x", "y", "z"]), ("m", ["p", "q"])):
            picks = rng.choice([*known, *(["new", "  "] if unseen else []), None], rows)
            out[name] = [None if v is None else str(v) for v in picks]
        return out

    training = _frame(columns(300, unseen=False), schema)
    signal = training["a"].fillna(50.0) / 20.0 - 2.0 * (training["k"] == "x") + training["b"]
    chosen = (signal.to_numpy() + rng.normal(0.0, 1.0, 300) > 0).astype(int)
    pipeline = fit(schema, {}, training, [classes[i] for i in chosen])
    queries = _frame(columns(200, unseen=True), schema)
    return schema, pipeline, training, queries


LABELS = {
    "integers, positive second": ((0, 1), 1),
    "integers, positive first": ((0, 1), 0),
    "text, positive first": (("churned", "stayed"), "churned"),
    "text, positive second": (("No", "Yes"), "Yes"),
}


@pytest.mark.parametrize("name", LABELS, ids=list(LABELS))
def test_contributions_are_exact_to_1e_9_for_either_positive_label(name: str) -> None:
    classes, positive = LABELS[name]
    schema, pipeline, training, queries = moderate_case(classes, positive, seed=len(name))
    fitted = LinearModel.from_pipeline(pipeline, schema)
    model = fitted.with_reference(training)
    assert model.positive_index == classes.index(positive)
    # Referred to other rows than the training ones, numeric references are not 0 either.
    elsewhere = fitted.with_reference(queries.iloc[:50])
    assert np.abs(np.asarray(elsewhere.reference)[:3]).min() > 1e-3
    for which, frame in ((model, training), (model, queries), (elsewhere, queries)):
        contributions, logits, base = which.contributions(frame)
        assert np.abs(contributions.sum(axis=1) + base - logits).max() <= 1e-9
        expected = positive_decision(pipeline, schema, frame)
        assert np.abs(logits - expected).max() <= 1e-9
        # The logit is the one behind the probability every path answers.
        chances = predict(which, frame).chances
        assert np.abs(logits - np.log(np.divide(chances, np.subtract(1.0, chances)))).max() < 1e-9
        answer = explain(which, frame, len(schema.features))
        for row, record in enumerate(answer.records()):
            total = math.fsum(r.contribution for r in record.reasons) + record.base_value
            assert abs(total - record.logit) <= 1e-9
            assert record.logit == logits[row]


def test_the_reference_is_the_training_mean_of_each_transformed_column() -> None:
    """0 for a standardised column, each category's share for a one-hot column; the base value
    is then the mean logit of the training rows."""
    schema, pipeline, training, _ = moderate_case((0, 1), 1, seed=3)
    model = LinearModel.from_pipeline(pipeline, schema).with_reference(training)
    transformed = pipeline[:-1].transform(training[schema.features])
    matrix = np.asarray(transformed.todense() if hasattr(transformed, "todense") else transformed)
    reference = np.asarray(model.reference)
    assert np.abs(reference - matrix.mean(axis=0)).max() <= 1e-9
    assert np.abs(reference[:3]).max() <= 1e-9  # standardised: mean 0
    assert reference[3:6].sum() == pytest.approx(1.0) and reference[6:].sum() == pytest.approx(1.0)
    _, logits, base = model.contributions(training)
    assert base == pytest.approx(float(logits.mean()), abs=1e-9)
    # Categories the training rows never had weigh nothing: a frame of unseen values
    unseen = training.assign(k="never", m="seen")
    contributions, _, _ = model.contributions(unseen)
    coef, shares = model.coef[0], reference[3:6]
    assert contributions[:, 3] == pytest.approx(-float(coef[3:6] @ shares), abs=1e-12)


def test_without_a_reference_the_base_value_is_the_intercept() -> None:
    """A model file from before the reference was kept reads as zeros: still exact."""
    schema, pipeline, training, queries = moderate_case(("No", "Yes"), "No", seed=5)
    model = LinearModel.from_pipeline(pipeline, schema).with_reference(training)
    document = model.to_dict()
    assert len(document["reference"]) == model.coef.shape[1]
    again = LinearModel.from_dict(json.loads(json.dumps(document)))
    assert np.asarray(again.reference).tolist() == np.asarray(model.reference).tolist()
    older = LinearModel.from_dict({k: v for k, v in document.items() if k != "reference"})
    assert np.asarray(older.reference).tolist() == [0.0] * model.coef.shape[1]
    contributions, logits, base = older.contributions(queries)
    assert base == -float(model.intercept[0])  # the positive label is classes[0]
    assert np.abs(contributions.sum(axis=1) + base - logits).max() <= 1e-9
    assert logits.tolist() == model.contributions(queries)[1].tolist()  # the same logits


def test_a_folded_calibration_keeps_the_reference_and_the_sums() -> None:
    """The engine may fold a calibration into coef and intercept with ``dataclasses.replace``:
    the reference (a property of the data, not the weights) stays, and the sums stay exact."""
    schema, pipeline, training, queries = moderate_case((0, 1), 1, seed=7)
    model = LinearModel.from_pipeline(pipeline, schema).with_reference(training)
    calibrated = dataclasses.replace(
        model, coef=model.coef * 0.7, intercept=model.intercept * 0.7 - 0.2, threshold=0.4
    )
    assert np.asarray(calibrated.reference).tolist() == np.asarray(model.reference).tolist()
    contributions, logits, base = calibrated.contributions(queries)
    assert np.abs(contributions.sum(axis=1) + base - logits).max() <= 1e-9
    assert np.abs(logits - (0.7 * model.contributions(queries)[1] - 0.2)).max() <= 1e-9


def hand_model(coef: list[float], positive: Any = 1) -> LinearModel:
    """Three numeric features, no scaling, reference 0: contributions are coef · value."""
    schema = Schema(target="y", positive_label=positive, numeric=["a", "b", "c"])
    return LinearModel(
        schema=schema,
        classes=(0, 1),
        numeric_fill=np.zeros(3),
        mean=np.zeros(3),
        scale=np.ones(3),
        categorical_fill=(),
        categories=(),
        coef=np.array([coef]),
        intercept=np.array([0.5]),
    )


def test_reasons_are_the_largest_contributions_first_ties_in_feature_order() -> None:
    model = hand_model([1.0, -1.0, 2.0])
    records = [
        {"a": 1.0, "b": 1.0, "c": 0.5},  # 1, -1, 1: all the same size
        {"a": 3.0, "b": 1.0, "c": -2.0},  # 3, -1, -4
        {"a": 0.0, "b": math.nan, "c": 0.0},  # nothing: every contribution 0 (b imputed 0)
    ]
    answer = explain(model, records, 2)
    reasons = [[(r.feature, r.contribution) for r in e.reasons] for e in answer]
    assert reasons == [
        [("a", 1.0), ("b", -1.0)],
        [("c", -4.0), ("a", 3.0)],
        [("a", 0.0), ("b", 0.0)],
    ]
    assert [e.logit for e in answer] == [1.5, -1.5, 0.5]
    assert answer[2].reasons[1].value is None  # the missing value as given
    assert [len(e.reasons) for e in explain(model, records, 99)] == [3, 3, 3]  # all, no more
    # The positive label first: every sign turns, the order does not.
    flipped = explain(hand_model([1.0, -1.0, 2.0], positive=0), records, 3)
    full = explain(model, records, 3)
    assert [[(r.feature, -r.contribution) for r in e.reasons] for e in flipped] == [
        [(r.feature, r.contribution) for r in e.reasons] for e in full
    ]
    assert [e.logit for e in flipped] == [-1.5, 1.5, -0.5]
    frame = pd.DataFrame(records, columns=["a", "b", "c"])
    by_frame = explain(model, frame, 2)
    assert by_frame.records() == answer.records() == list(answer)
    assert by_frame.to_dicts() == answer.to_dicts() == [e.to_dict() for e in answer]
    assert explain_dicts(model, records, 2) == answer.to_dicts()  # ties alike in plain Python
    assert [answer[i] for i in range(-3, 3)] == [*answer.records(), *answer.records()]


@pytest.mark.parametrize(
    ("value", "count"),
    [(1, 1), (3, 3), ("3", 3), (" 7 ", 7), ("0004", 4), (10**30, 1 << 31), ("9" * 5000, 1 << 31)],
)
def test_a_count_is_a_whole_number_of_at_least_one(value: Any, count: int) -> None:
    assert explain_count(value) == count


@pytest.mark.parametrize(
    "value", [0, -1, "0", "-1", "x", "", "2.5", "1e3", "３", 2.5, 3.0, True, False, None, [3]]
)
def test_any_other_count_is_refused_in_one_line(value: Any) -> None:
    with pytest.raises(ExplainError) as raised:
        explain_count(value)
    assert str(raised.value).startswith("must be a whole number of at least 1")
    assert "\n" not in str(raised.value)
    with pytest.raises(ExplainError):
        explain(hand_model([1.0, 1.0, 1.0]), [{"a": 1.0, "b": 1.0, "c": 1.0}], 0)


def three_classes() -> tuple[Schema, Pipeline, pd.DataFrame]:
    schema = Schema(
        target="y", positive_label="a", id_columns=["id"], numeric=["x"], categorical=["c"]
    )
    rng = np.random.default_rng(4)
    frame = _frame({"x": rng.normal(size=90), "c": rng.choice(list("pqr"), 90).tolist()}, schema)
    labels = np.where(frame["x"] > 0.5, "a", np.where(frame["x"] < -0.5, "c", "b"))
    return schema, fit(schema, {}, frame, labels), frame.assign(y=labels)


def test_a_model_with_more_classes_is_refused() -> None:
    schema, pipeline, frame = three_classes()
    model = LinearModel.from_pipeline(pipeline, schema).with_reference(frame)
    for attempt in (
        lambda: explain(model, frame, 1),
        lambda: explain(model, _records(frame, schema), 1),
        lambda: model.contributions(frame),
    ):
        with pytest.raises(ExplainError, match="needs a two-class model; this model has 3"):
            attempt()


# -- the API --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def referenced(tmp_path_factory: pytest.TempPathFactory) -> tuple[Settings, Path]:
    """The mixed workspace (a categorical feature beside numeric ones) whose production model,
    v0002, is v0001 with its reference computed from the training data."""
    root = tmp_path_factory.mktemp("explain") / "ws"
    settings, config_path = make_mixed_workspace(root, seed=5)
    workspace = Workspace(settings)
    registry = workspace.registry
    model = registry.model("v0001")
    frame = workspace.dataset.read(columns=model.schema.features)
    card = registry.card("v0001").to_dict()
    fresh = ModelCard.from_dict({**card, "id": "", "model_sha256": "", "metrics": {}})
    made = registry.create(registry.pipeline("v0001"), fresh, model=model.with_reference(frame))
    registry.promote(made.id)
    assert made.id == "v0002" and np.abs(np.asarray(registry.model("v0002").reference)).max() > 0
    return settings, config_path


@pytest.fixture(scope="module")
def api(referenced: tuple[Settings, Path]) -> Pair:
    return pair(referenced[0])


def sample(count: int, seed: int) -> list[dict[str, Any]]:
    """Records with missing numbers, missing and unseen categories, numbers with few digits."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(count):
        out.append(
            {
                "lastmonth_activity": None if i % 4 == 1 else int(rng.integers(0, 400)),
                "lastyear_activity": None if i % 5 == 2 else int(rng.integers(0, 5000)),
                "number_of_employees": int(rng.integers(1, 800)),
                "margin": round(float(rng.normal(0.0, 0.01)), 4),
                "segment": ["smb", "mid", "enterprise", None, "galactic"][i % 5],
            }
        )
    return out


def as_csv(records: list[dict[str, Any]]) -> bytes:
    buffer = io.StringIO()
    pd.DataFrame(records, columns=FEATURES).to_csv(buffer, index=False)
    return buffer.getvalue().encode()


def test_json_explain_is_exact_and_the_fast_path_answers_it_as_the_route(api: Pair) -> None:
    records = sample(12, seed=1)
    route, fast, handled = api.both(post({"records": records, "explain": len(FEATURES)}))
    assert_same(route, fast)
    assert handled and fast.status == 200, fast.body
    body = json.loads(fast.body)
    assert list(body) == ["predictions", "probabilities", "explanations", "model_version"]
    assert body["model_version"] == "v0002" and len(body["explanations"]) == len(records)
    for record, chance, explanation in zip(
        records, body["probabilities"], body["explanations"], strict=True
    ):
        assert list(explanation) == ["base_value", "logit", "reasons"]
        reasons = explanation["reasons"]
        assert sorted(r["feature"] for r in reasons) == sorted(FEATURES)
        sizes = [abs(r["contribution"]) for r in reasons]
        assert sizes == sorted(sizes, reverse=True)
        total = math.fsum(r["contribution"] for r in reasons) + explanation["base_value"]
        assert abs(total - explanation["logit"]) <= 1e-9
        assert abs(explanation["logit"] - math.log(chance / (1.0 - chance))) <= 1e-9
        for reason in reasons:
            given = record[reason["feature"]]
            assert reason["value"] == (None if given is None else given)
            assert list(reason) == ["feature", "value", "contribution"]
    # The same records with fewer reasons: the first ones of the full list.
    three = json.loads(call(api.fast, post({"records": records, "explain": 3})).body)
    for full, short in zip(body["explanations"], three["explanations"], strict=True):
        assert short["reasons"] == full["reasons"][:3]


def test_without_explain_the_answer_is_as_before(api: Pair) -> None:
    """Byte for byte what ``predict`` alone gives, as before reasons existed."""
    records = sample(5, seed=2)
    route, fast, handled = api.both(post({"records": records}))
    assert_same(route, fast)
    assert handled
    loaded = api.fast.holder.get()
    rows = rows_from_records(records, record_plan(loaded.schema), 100)
    answer = predict(loaded.model, rows, compiled=loaded.compiled)
    expected = {
        "predictions": answer.labels,
        "probabilities": answer.chances,
        "model_version": "v0002",
    }
    encoded = json.dumps(expected, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    assert fast.body == encoded.encode()
    nulled = call(api.fast, post({"records": records, "explain": None}))
    assert nulled.body == fast.body


def test_csv_body_and_file_location_are_explained_as_json(
    api: Pair, referenced: tuple[Settings, Path]
) -> None:
    settings, _ = referenced
    records = sample(20, seed=3)
    (settings.root / "explain.csv").write_bytes(as_csv(records))
    by_json = json.loads(call(api.fast, post({"records": records, "explain": 3})).body)
    answers = {
        "CSV body": post(
            as_csv(records), ("content-type", "text/csv"), raw=True, query="explain=3"
        ),
        "file_location": post({"file_location": "explain.csv", "explain": 3}),
        "file_location, query": post({"file_location": "explain.csv"}, query="explain=3"),
        "JSON, query": post({"records": records}, query="explain=3"),
    }
    for how, request in answers.items():
        route, fast, handled = api.both(request)
        assert_same(route, fast)
        assert not handled and route.status == 200, (how, route.body)
        body = json.loads(route.body)
        assert body["predictions"] == by_json["predictions"], how
        assert body["probabilities"] == pytest.approx(by_json["probabilities"], abs=1e-12), how
        for got, want in zip(body["explanations"], by_json["explanations"], strict=True):
            assert got["logit"] == pytest.approx(want["logit"], abs=1e-12), how
            assert got["base_value"] == want["base_value"], how
            assert [r["feature"] for r in got["reasons"]] == [
                r["feature"] for r in want["reasons"]
            ], how
            assert [r["value"] for r in got["reasons"]] == [r["value"] for r in want["reasons"]], (
                how
            )
            for a, b in zip(got["reasons"], want["reasons"], strict=True):
                assert a["contribution"] == pytest.approx(b["contribution"], abs=1e-12), how


BAD_BODY = [0, -1, "x", 2.5, True, False, "", "2.5", "-3", [2], {"k": 2}, 3.0]
BAD_QUERY = ["0", "-1", "x", "2.5", "true", "", "1e3", "explain"]


@pytest.mark.parametrize("value", BAD_BODY, ids=[repr(v) for v in BAD_BODY])
def test_bad_explain_in_the_body_is_422_naming_the_field(api: Pair, value: Any) -> None:
    route, fast, handled = api.both(post({"records": sample(2, seed=4), "explain": value}))
    assert_same(route, fast)
    assert not handled
    assert route.status == 422, route.body
    payload = json.loads(route.body)
    assert payload["error"].startswith("explain must be a whole number of at least 1")
    assert payload["detail"] == {"field": "explain"}


@pytest.mark.parametrize("value", BAD_QUERY)
def test_bad_explain_in_the_query_is_422_naming_the_field(api: Pair, value: str) -> None:
    for request in (
        post(
            as_csv(sample(2, seed=5)),
            ("content-type", "text/csv"),
            raw=True,
            query=f"explain={value}",
        ),
        post({"records": sample(2, seed=5)}, query=f"explain={value}"),
        post({"file_location": "testdata/testdata.csv"}, query=f"explain={value}"),
    ):
        route, fast, _ = api.both(request)
        assert_same(route, fast)
        assert route.status == 422, route.body
        assert json.loads(route.body)["detail"] == {"field": "explain"}


def test_explain_twice_is_422_and_a_huge_count_gives_every_feature(api: Pair) -> None:
    records = sample(3, seed=6)
    twice = [
        post({"records": records, "explain": 2}, query="explain=2"),
        post({"records": records}, query="explain=1&explain=2"),
    ]
    for request in twice:
        route, fast, _ = api.both(request)
        assert_same(route, fast)
        assert route.status == 422 and b'"field":"explain"' in route.body
    for request in (
        post({"records": records, "explain": 10**30}),
        post({"records": records, "explain": "9" * 400}),
        post({"records": records}, query="explain=" + "9" * 5000),
    ):
        route, fast, _ = api.both(request)
        assert_same(route, fast)
        assert route.status == 200, route.body
        explanations = json.loads(route.body)["explanations"]
        assert [len(e["reasons"]) for e in explanations] == [len(FEATURES)] * len(records)


_explain_values = st.none() | st.integers(-3, 8) | st.sampled_from([2.5, True, "2", "x", 10**40])
_record_values = st.fixed_dictionaries(
    dict.fromkeys(NUMERIC, st.none() | st.integers(-1000, 1000) | st.floats(-1e4, 1e4))
    | {"segment": st.none() | st.text(max_size=4) | st.sampled_from(["smb", "mid"])}
)


@settings(max_examples=150, deadline=None, derandomize=True, database=None)
@given(records=st.lists(_record_values, min_size=1, max_size=5), value=_explain_values)
def test_any_explain_request_gets_the_same_answer_either_way(
    api: Pair, records: list[dict[str, Any]], value: Any
) -> None:
    route, fast, handled = api.both(post({"records": records, "explain": value}))
    assert_same(route, fast)
    assert route.status in (200, 422)
    assert handled is (route.status == 200)
    if route.status == 200 and value is not None:
        for explanation in json.loads(route.body)["explanations"]:
            reasons = explanation["reasons"]
            assert len(reasons) == min(explain_count(value), len(FEATURES))


# -- a model with more classes --------------------------------------------------------------------
@pytest.fixture(scope="module")
def three_class_workspace(tmp_path_factory: pytest.TempPathFactory) -> tuple[Settings, Path]:
    root = tmp_path_factory.mktemp("three") / "ws"
    (root / "test").mkdir(parents=True)
    schema, pipeline, frame = three_classes()
    mapping = {
        "test_data_path": "test",
        "target": "y",
        "positive_label": "a",
        "id_columns": ["id"],
        "numeric_features": ["x"],
        "categorical_features": ["c"],
        "package_index_url": "http://127.0.0.1:9",
    }
    config_path = root / "config.json"
    config_path.write_text(json.dumps(mapping))
    settings = config.load(config_path)
    registry = Registry(settings.model_folder)
    card = ModelCard(
        id="",
        created=utc_now(),
        schema=schema.to_dict(),
        parameters={},
        classes=["a", "b", "c"],
        training={"rows": len(frame), "batches": [], "files": []},
        libraries={},
    )
    registry.promote(registry.create(pipeline, card).id)
    frame.assign(id=[f"c{i}" for i in range(len(frame))]).to_csv(
        root / "test" / "records.csv", index=False
    )
    return settings, config_path


def test_a_model_with_more_classes_is_a_422_naming_explain(
    three_class_workspace: tuple[Settings, Path],
) -> None:
    both = pair(three_class_workspace[0])
    csv = (three_class_workspace[0].test_data / "records.csv").read_bytes()
    plain = call(both.fast, post({"records": [{"x": 1.0, "c": "p"}]}))
    assert plain.status == 200  # without explain it predicts
    for request in (
        post({"records": [{"x": 1.0, "c": "p"}], "explain": 2}),
        post(csv, ("content-type", "text/csv"), raw=True, query="explain=1"),
    ):
        route, fast, handled = both.both(request)
        assert_same(route, fast)
        assert not handled and route.status == 422
        payload = json.loads(route.body)
        assert payload["error"] == (
            "explain needs a two-class model; the production model v0001 has 3 classes"
        )
        assert payload["detail"] == {"field": "explain", "classes": ["a", "b", "c"]}


# -- over HTTP and through the CLI ----------------------------------------------------------------
@pytest.fixture(scope="module")
def http(referenced: tuple[Settings, Path]) -> Iterator[str]:
    with serving(referenced[1]) as url:
        yield url


def test_explain_over_http_as_json_and_csv(http: str, api: Pair) -> None:
    records = sample(30, seed=8)
    by_json = httpx.post(f"{http}/prediction", json={"records": records, "explain": 2}, timeout=10)
    by_csv = httpx.post(
        f"{http}/prediction?explain=2",
        content=as_csv(records),
        headers={"Content-Type": "text/csv"},
        timeout=10,
    )
    assert by_json.status_code == by_csv.status_code == 200, by_json.text
    in_process = call(api.fast, post({"records": records, "explain": 2}))
    assert by_json.content == in_process.body
    assert [[r["feature"] for r in e["reasons"]] for e in by_csv.json()["explanations"]] == [
        [r["feature"] for r in e["reasons"]] for e in by_json.json()["explanations"]
    ]
    bad = httpx.post(f"{http}/prediction", json={"records": records, "explain": 0}, timeout=10)
    assert bad.status_code == 422 and bad.json()["detail"] == {"field": "explain"}


def test_beryl_predict_explain_adds_reason_columns(
    referenced: tuple[Settings, Path], beryl_cli: CliRunner, tmp_path: Path, api: Pair
) -> None:
    config_path = referenced[1]
    records = sample(40, seed=9)
    source = tmp_path / "customers.csv"
    frame = pd.DataFrame(records, columns=FEATURES).assign(corporation=[f"k{i}" for i in range(40)])
    frame.to_csv(source, index=False)
    plain, explained = tmp_path / "plain.csv", tmp_path / "explained.csv"
    beryl_cli("predict", str(source), "-o", str(plain), config=config_path, check=True)
    done = beryl_cli(
        "predict",
        str(source),
        "-o",
        str(explained),
        "--explain",
        "3",
        config=config_path,
        check=True,
    )
    assert "40 rows scored by v0002" in done.stdout
    before = pd.read_csv(plain)
    after = pd.read_csv(explained)
    assert list(before.columns) == ["corporation", "prediction", "probability"]
    assert list(after.columns) == [
        *before.columns,
        *(f"reason_{i}{part}" for i in (1, 2, 3) for part in ("", "_contribution")),
    ]
    pd.testing.assert_frame_equal(after[before.columns], before)
    by_api = json.loads(call(api.fast, post({"records": records, "explain": 3})).body)
    for row, explanation in zip(after.itertuples(index=False), by_api["explanations"], strict=True):
        for i, reason in enumerate(explanation["reasons"], start=1):
            assert getattr(row, f"reason_{i}") == reason["feature"]
            assert getattr(row, f"reason_{i}_contribution") == pytest.approx(
                reason["contribution"], abs=1e-12
            )
    every = tmp_path / "every.csv"
    beryl_cli(
        "predict", str(source), "-o", str(every), "--explain", "99", config=config_path, check=True
    )
    assert [c for c in pd.read_csv(every).columns if c.startswith("reason_")][-1] == (
        f"reason_{len(FEATURES)}_contribution"
    )


@pytest.mark.parametrize("value", ["0", "-1", "x", "2.5", ""])
def test_beryl_predict_refuses_a_bad_count_in_one_line(
    referenced: tuple[Settings, Path], beryl_cli: CliRunner, tmp_path: Path, value: str
) -> None:
    settings, config_path = referenced
    output = tmp_path / "out.csv"
    source = settings.test_data / "testdata.csv"
    done = beryl_cli(
        "predict", str(source), "-o", str(output), f"--explain={value}", config=config_path
    )
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        "error: --explain must be a whole number of at least 1"
    ), done.stderr
    assert not output.exists()


def test_beryl_predict_refuses_explain_for_more_classes_in_one_line(
    three_class_workspace: tuple[Settings, Path], beryl_cli: CliRunner, tmp_path: Path
) -> None:
    settings, config_path = three_class_workspace
    source = settings.test_data / "records.csv"
    output = tmp_path / "out.csv"
    done = beryl_cli(
        "predict", str(source), "-o", str(output), "--explain", "1", config=config_path
    )
    assert done.returncode == 4, done.stderr
    lines = done.stderr.strip().splitlines()
    assert lines == [
        "error: --explain needs a two-class model; this model has 3 classes (a, b, c) "
        "(v0001 gives no reason codes; score without --explain)"
    ]
    assert not output.exists()
    beryl_cli("predict", str(source), "-o", str(output), config=config_path, check=True)
