"""One prediction rule: every path that predicts gives the same classes and probabilities.

The paths: the data-only model (``LinearModel``), its folded form (``CompiledModel``, records
together, one by one and as a frame), ``beryl.model.predict.predict``, ``POST /prediction``
(the FastAPI route with JSON, a CSV body and ``file_location``, and the fast path in front of
it), ``beryl predict`` (``score_file``) and scoring's metrics. The models are built so that some
records score exactly at the threshold, where the rules teams write (``probability >= 0.5``,
scikit-learn's ``classes_[0]`` on a tie, a threshold ignored) part ways with Beryl's: the
positive label only above the threshold.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.pipeline import Pipeline
from tests.test_fastpath import Pair, assert_same, call, pair, post

from beryl import config
from beryl._io import utc_now
from beryl.config import Settings
from beryl.data.schema import Schema
from beryl.model.compiled import CompiledModel
from beryl.model.engine import build_pipeline
from beryl.model.linear import LinearModel
from beryl.model.predict import DecisionRule, explain, predict, threshold_score
from beryl.model.predictfile import score_file
from beryl.model.registry import ModelCard, Registry
from beryl.model.scoring import compute_metrics, evaluate
from beryl.workspace import Workspace

CATEGORIES = ("a", "b", "c")
WEIGHTS = (0.25, -0.25, 0.0)  # "c", the most frequent, fills a missing plan and weighs nothing
# Scores for the positive label: threshold's score + x + the plan's weight.
RECORDS: list[dict[str, Any]] = [
    {"id": "tie, an unseen plan", "x": 0.0, "plan": "zz"},
    {"id": "tie, all missing", "x": None, "plan": None},
    {"id": "tie, plan c", "x": 0.0, "plan": "c"},
    {"id": "just above", "x": 1e-9, "plan": "c"},
    {"id": "just below", "x": -1e-9, "plan": "c"},
    {"id": "above by the plan", "x": -0.1, "plan": "a"},
    {"id": "below by the plan", "x": 0.1, "plan": "b"},
    {"id": "far above", "x": 3.0, "plan": "b"},
    {"id": "far below", "x": -3.0, "plan": "a"},
]
TIES = 3


@dataclass(frozen=True)
class Case:
    classes: tuple[Any, Any]
    positive: Any
    threshold: float

    @property
    def schema(self) -> Schema:
        return Schema(
            target="y",
            positive_label=self.positive,
            id_columns=["id"],
            numeric=["x"],
            categorical=["plan"],
        )


CASES = {
    "integers, positive second": Case((0, 1), 1, 0.5),
    "integers, positive first": Case((0, 1), 0, 0.5),
    "text, positive first": Case(("churned", "stayed"), "churned", 0.5),
    "text, positive second, threshold 0.7": Case(("No", "Yes"), "Yes", 0.7),
    "integers, positive first, threshold 0.3": Case((0, 1), 0, 0.3),
}


def tie_pipeline(case: Case) -> Pipeline:
    """A fitted Beryl pipeline whose score for the positive label is exactly the threshold's
    score for the first records (and the numbers in ``RECORDS`` for the others)."""
    schema = case.schema
    frame = pd.DataFrame({"x": [-1.0, 1.0, 0.0, 2.0, -2.0], "plan": ["a", "b", "c", "c", "c"]})
    labels = [case.classes[i] for i in (0, 1, 0, 1, 0)]
    pipeline = build_pipeline(schema, {}).fit(frame[schema.features], labels)
    numeric = pipeline.named_steps["features"].named_transformers_["numeric"]
    numeric["impute"].statistics_ = np.array([0.0])
    numeric["scale"].mean_, numeric["scale"].scale_ = np.array([0.0]), np.array([1.0])
    categorical = pipeline.named_steps["features"].named_transformers_["categorical"]
    assert categorical["onehot"].categories_[0].tolist() == list(CATEGORIES)
    assert categorical["impute"].statistics_.tolist() == ["c"]
    # The pipeline's decision is a score for classes_[1]: the positive label's, or its negation.
    sign = 1.0 if case.classes.index(case.positive) == 1 else -1.0
    estimator = pipeline.named_steps["model"]
    estimator.coef_ = sign * np.array([[1.0, *WEIGHTS]])
    estimator.intercept_ = sign * np.array([threshold_score(case.threshold)])
    return pipeline


def records_frame(schema: Schema, records: list[dict[str, Any]]) -> pd.DataFrame:
    frame = pd.DataFrame(records, columns=schema.features)
    frame["x"] = frame["x"].astype("float64")
    return frame


def positive_scores(pipeline: Pipeline, case: Case, frame: pd.DataFrame) -> np.ndarray:
    decision = pipeline.decision_function(frame)
    return decision if case.classes.index(case.positive) == 1 else -decision


def documented(pipeline: Pipeline, case: Case, frame: pd.DataFrame) -> list[Any]:
    """The documented rule, on the pipeline's own scores: positive above the threshold."""
    negative = case.classes[1 - case.classes.index(case.positive)]
    cut = math.log(case.threshold / (1.0 - case.threshold))
    scores = positive_scores(pipeline, case, frame).tolist()
    return [case.positive if s > cut else negative for s in scores]


@pytest.fixture(params=list(CASES), ids=list(CASES))
def case(request: pytest.FixtureRequest) -> Case:
    return CASES[request.param]


@pytest.fixture
def fitted(case: Case) -> tuple[Pipeline, LinearModel, list[Any], list[float]]:
    """The pipeline, its data-only model at the case's threshold, and the expected answers."""
    pipeline = tie_pipeline(case)
    model = dataclasses.replace(
        LinearModel.from_pipeline(pipeline, case.schema), threshold=case.threshold
    )
    frame = records_frame(case.schema, RECORDS)
    scores = positive_scores(pipeline, case, frame)
    assert (scores[:TIES] == threshold_score(case.threshold)).all()  # exactly at the threshold
    assert (scores[TIES:] != threshold_score(case.threshold)).all()
    probability = pipeline.predict_proba(frame)[:, case.classes.index(case.positive)]
    return pipeline, model, documented(pipeline, case, frame), probability.tolist()


def test_the_records_tell_the_rules_apart(
    case: Case, fitted: tuple[Pipeline, LinearModel, list[Any], list[float]]
) -> None:
    """Each rule other than Beryl's gives other classes on these records in some case."""
    pipeline, _, expected, chances = fitted
    frame = records_frame(case.schema, RECORDS)
    negative = case.classes[1 - case.classes.index(case.positive)]
    scikit_learn = pipeline.predict(frame).tolist()
    at_least = [case.positive if p >= case.threshold else negative for p in chances]
    half = [case.positive if p > 0.5 else negative for p in chances]
    assert set(expected) == set(case.classes)
    if case.classes.index(case.positive) == 0:
        assert scikit_learn != expected  # a tie goes to classes_[0], the positive label
    if case.threshold == 0.5:
        assert at_least != expected  # a tie is exactly 0.5
    else:
        assert half != expected  # the model's threshold ignored


def test_the_model_its_folded_form_and_predict_agree(
    case: Case, fitted: tuple[Pipeline, LinearModel, list[Any], list[float]]
) -> None:
    _, model, expected, chances = fitted
    frame = records_frame(case.schema, RECORDS)
    records = [{"x": math.nan if r["x"] is None else r["x"], "plan": r["plan"]} for r in RECORDS]
    compiled = model.compiled()
    assert isinstance(compiled, CompiledModel) and compiled.threshold == case.threshold
    labels, probabilities = model.predict_frame(frame)
    single = [compiled.predict([record]) for record in records]
    answers: dict[str, tuple[list[Any], list[float]]] = {
        "LinearModel.predict_frame": (labels.tolist(), probabilities.tolist()),
        "LinearModel.predict": (model.predict(frame).tolist(), probabilities.tolist()),
        "CompiledModel.predict": compiled.predict(records),
        "CompiledModel.predict, one by one": ([p[0] for p, _ in single], [q[0] for _, q in single]),
        "CompiledModel.predict_frame": compiled.predict_frame(frame),
    }
    for name, data in {"frame": frame, "records": records}.items():
        for folded in (None, compiled):
            answer = predict(model, data, compiled=folded)
            answers[f"predict, {name}, compiled={folded is not None}"] = (
                answer.labels,
                answer.chances,
            )
    for how, (got_labels, got_chances) in answers.items():
        assert got_labels == expected, how
        assert all(type(g) is type(e) for g, e in zip(got_labels, expected, strict=True)), how
        assert got_chances == pytest.approx(chances, abs=1e-15, rel=0), how
    rule = model.rule
    assert rule == DecisionRule(case.positive, expected[-1], case.threshold)


def test_scoring_counts_with_the_same_rule(
    case: Case, fitted: tuple[Pipeline, LinearModel, list[Any], list[float]]
) -> None:
    """Test data labelled with the documented answers: every path's rule scores it perfectly."""
    _, model, expected, _ = fitted
    frame = records_frame(case.schema, RECORDS).assign(y=expected)
    metrics = compute_metrics(model, frame, case.schema)
    positives = expected.count(case.positive)
    assert metrics["confusion_matrix"] == [[len(expected) - positives, 0], [0, positives]]
    assert metrics["accuracy"] == metrics["f1"] == 1.0


@pytest.fixture
def served(
    tmp_path: Path, case: Case, fitted: tuple[Pipeline, LinearModel, list[Any], list[float]]
) -> Settings:
    """A workspace whose production model is the case's, with the records as test data."""
    pipeline, model, expected, _ = fitted
    root = tmp_path / "ws"
    (root / "test").mkdir(parents=True)
    settings = config.from_mapping(
        {
            "test_data_path": "test",
            "target": "y",
            "positive_label": case.positive,
            "id_columns": ["id"],
            "numeric_features": ["x"],
            "categorical_features": ["plan"],
        },
        root,
    )
    write_csv(root / "test" / "records.csv", RECORDS, y=expected)
    registry = Registry(settings.model_folder)
    card = ModelCard(
        id="",
        created=utc_now(),
        schema=case.schema.to_dict(),
        parameters={},
        classes=list(case.classes),
        training={"rows": 5, "batches": [], "files": []},
        libraries={},
    )
    registry.promote(registry.create(pipeline, card, model=model).id)
    assert registry.model("v0001").threshold == case.threshold  # as signed in model.json
    return settings


def write_csv(path: Path, records: list[dict[str, Any]], **extra: list[Any]) -> Path:
    frame = pd.DataFrame(records).assign(**extra)
    frame.to_csv(path, index=False)
    return path


def test_every_path_through_the_workspace_answers_the_same(
    served: Settings,
    tmp_path: Path,
    case: Case,
    fitted: tuple[Pipeline, LinearModel, list[Any], list[float]],
) -> None:
    _, _, expected, chances = fitted
    answers: dict[str, tuple[list[Any], list[float]]] = {}
    api: Pair = pair(served)
    json_records = post({"records": [{k: v for k, v in r.items() if k != "id"} for r in RECORDS]})
    route, fast, answered_in_front = api.both(json_records)
    assert answered_in_front  # the fast path's own answer, not the route's
    csv = (served.test_data / "records.csv").read_bytes()
    by_csv = call(api.route, post(csv, ("content-type", "text/csv"), raw=True))
    by_file = call(api.route, post({"file_location": "test/records.csv"}))
    for name, response in {
        "route, JSON": route,
        "fast path, JSON": fast,
        "route, CSV body": by_csv,
        "route, file_location": by_file,
    }.items():
        assert response.status == 200, (name, response.body)
        body = json.loads(response.body)
        assert body["model_version"] == "v0001"
        answers[name] = (body["predictions"], body["probabilities"])
    output = tmp_path / "scored.csv"
    assert score_file(served, served.test_data / "records.csv", output).rows == len(RECORDS)
    scored = pd.read_csv(output, dtype={"id": str})
    assert scored["id"].tolist() == [r["id"] for r in RECORDS]
    answers["beryl predict"] = (scored["prediction"].tolist(), scored["probability"].tolist())
    for how, (labels, probabilities) in answers.items():
        assert labels == expected, how
        assert probabilities == pytest.approx(chances, abs=1e-15, rel=0), how
    metrics = evaluate(Workspace(served), "v0001")
    positives = expected.count(case.positive)
    assert metrics["confusion_matrix"] == [[len(expected) - positives, 0], [0, positives]]


def test_every_path_explains_with_the_score_it_decides_on(
    served: Settings,
    tmp_path: Path,
    case: Case,
    fitted: tuple[Pipeline, LinearModel, list[Any], list[float]],
) -> None:
    """Reason codes are for the positive label, first or second, at any threshold: each record's
    logit is the score the rule compares (exactly the threshold's at a tie), and every path
    (records, frames, the route and the fast path, CSV, ``beryl predict``) gives the same."""
    pipeline, model, expected, _ = fitted
    frame = records_frame(case.schema, RECORDS)
    scores = positive_scores(pipeline, case, frame).tolist()
    records = [{k: v for k, v in r.items() if k != "id"} for r in RECORDS]
    rows = [{"x": math.nan if r["x"] is None else r["x"], "plan": r["plan"]} for r in records]
    for data in (frame, rows):
        answer = explain(model, data, 2)
        assert answer.logits.tolist() == pytest.approx(scores, abs=1e-15)
        assert (answer.logits[:TIES] == threshold_score(case.threshold)).all()
        positive = [e.logit > threshold_score(case.threshold) for e in answer]
        assert positive == [e == case.positive for e in expected]  # the rule on the logit
    api: Pair = pair(served)
    route, fast, answered_in_front = api.both(post({"records": records, "explain": 2}))
    assert_same(route, fast)
    assert answered_in_front and fast.status == 200, fast.body
    body = json.loads(fast.body)
    assert body["predictions"] == expected
    assert [e["logit"] for e in body["explanations"]] == pytest.approx(scores, abs=1e-15)
    csv = (served.test_data / "records.csv").read_bytes()
    by_csv = json.loads(
        call(api.route, post(csv, ("content-type", "text/csv"), raw=True, query="explain=2")).body
    )
    assert by_csv["explanations"] == body["explanations"]
    output = tmp_path / "explained.csv"
    score_file(served, served.test_data / "records.csv", output, reasons=2)
    scored = pd.read_csv(output, dtype={"id": str})
    assert scored["reason_1"].tolist() == [e["reasons"][0]["feature"] for e in body["explanations"]]
    assert scored["reason_2_contribution"].tolist() == pytest.approx(
        [e["reasons"][1]["contribution"] for e in body["explanations"]], abs=1e-15
    )
