"""Tests for beryl.model.scoring: metrics on known outputs, score(), and test data as file or
folder."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression

from beryl.config import Settings
from beryl.data.csvfiles import csv_files, read_labelled
from beryl.data.ingestion import ingest
from beryl.data.schema import Schema
from beryl.errors import DataError, EmptyDatasetError
from beryl.model.engine import fit_pipeline
from beryl.model.linear import LinearModel
from beryl.model.registry import Registry
from beryl.model.scoring import (
    compute_metrics,
    evaluate,
    overlap_with_training,
    read_test_data,
    score,
)
from beryl.model.training import train
from beryl.workspace import Workspace


class FixedModel:
    """A fake model that answers a fixed list of predictions (and matching probabilities of
    its second class) to ``beryl.model.predict.predict``."""

    threshold = 0.5

    def __init__(self, predictions: list[Any], classes: list[Any]) -> None:
        self.predictions = np.asarray(predictions, dtype=object)
        self.classes = tuple(classes)

    def predict_frame(self, frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        assert len(frame) == len(self.predictions)
        positive = np.array([p == self.classes[1] for p in self.predictions], dtype=float)
        return self.predictions, 0.1 + 0.8 * positive


SCHEMA = Schema(target="y", positive_label="Yes", numeric=["x"])


def labelled(truth: list[Any]) -> pd.DataFrame:
    return pd.DataFrame({"x": np.arange(len(truth), dtype=float), "y": truth})


def test_compute_metrics_on_known_predictions() -> None:
    truth = ["Yes", "Yes", "Yes", "No", "No", "No", "No", "Yes"]
    preds = ["Yes", "Yes", "No", "Yes", "No", "No", "No", "No"]
    # TP = 2, FN = 2, FP = 1, TN = 3
    metrics = compute_metrics(FixedModel(preds, ["No", "Yes"]), labelled(truth), SCHEMA)
    assert metrics["confusion_matrix"] == [[3, 1], [2, 2]]
    assert metrics["precision"] == pytest.approx(2 / 3)
    assert metrics["recall"] == pytest.approx(2 / 4)
    assert metrics["f1"] == pytest.approx(2 * 2 / (2 * 2 + 1 + 2))
    assert metrics["accuracy"] == pytest.approx(5 / 8)
    assert metrics["n"] == 8
    assert metrics["positive_label"] == "Yes"
    assert metrics["confusion_labels"] == ["No", "Yes"]  # as the target spells them
    # scores 0.9 for a predicted "Yes", 0.1 otherwise: 6 wins and 8 ties out of 16 pairs
    assert metrics["roc_auc"] == pytest.approx((6 + 0.5 * 8) / 16)


INT_SCHEMA = Schema(target="exited", positive_label=1, numeric=["activity"])
SEPARABLE = pd.DataFrame(
    {"activity": [1.0, 2.0, 3.0, 10.0, 11.0, 12.0], "exited": [1, 1, 1, 0, 0, 0]}
)
# predictions 1, 1, 0, 0 and 1: TP = 2, FP = 1, FN = 0, TN = 2
HELD_OUT = pd.DataFrame({"activity": [0.0, 2.5, 11.5, 13.0, 1.5], "exited": [1, 1, 0, 0, 0]})


def assert_held_out_metrics(metrics: dict[str, Any]) -> None:
    assert metrics["confusion_matrix"] == [[2, 1], [0, 2]]
    assert metrics["recall"] == 1.0
    assert metrics["precision"] == pytest.approx(2 / 3)
    assert metrics["f1"] == pytest.approx(0.8)
    assert metrics["accuracy"] == pytest.approx(0.8)
    # lower activity, higher risk: only the pair (2.5 attrited, 1.5 retained) is misordered
    assert metrics["roc_auc"] == pytest.approx(5 / 6)


def test_compute_metrics_with_integer_labels_and_a_beryl_pipeline() -> None:
    model = LinearModel.from_pipeline(fit_pipeline(INT_SCHEMA, {}, SEPARABLE), INT_SCHEMA)
    assert_held_out_metrics(compute_metrics(model, HELD_OUT, INT_SCHEMA))


def test_compute_metrics_with_a_plain_estimator_fitted_on_the_features() -> None:
    """A logistic regression on the raw feature, held as a data-only model (no scaling)."""
    estimator = LogisticRegression().fit(SEPARABLE[["activity"]], SEPARABLE["exited"])
    model = LinearModel(
        schema=INT_SCHEMA,
        classes=tuple(estimator.classes_.tolist()),
        numeric_fill=np.zeros(1),
        mean=np.zeros(1),
        scale=np.ones(1),
        categorical_fill=(),
        categories=(),
        coef=estimator.coef_,
        intercept=estimator.intercept_,
    )
    assert_held_out_metrics(compute_metrics(model, HELD_OUT, INT_SCHEMA))


def test_compute_metrics_without_any_predicted_positive() -> None:
    truth = ["Yes", "No", "No"]
    metrics = compute_metrics(FixedModel(["No"] * 3, ["No", "Yes"]), labelled(truth), SCHEMA)
    assert metrics["f1"] == 0.0
    assert metrics["precision"] == 0.0
    assert metrics["recall"] == 0.0
    assert metrics["confusion_matrix"] == [[2, 0], [1, 0]]


def test_compute_metrics_one_class_truth_has_no_roc_auc() -> None:
    metrics = compute_metrics(
        FixedModel(["No", "Yes"], ["No", "Yes"]), labelled(["No"] * 2), SCHEMA
    )
    assert metrics["roc_auc"] is None
    assert metrics["confusion_matrix"] == [[1, 1], [0, 0]]


def test_compute_metrics_refuses_an_empty_frame() -> None:
    with pytest.raises(EmptyDatasetError):
        compute_metrics(FixedModel([], ["No", "Yes"]), labelled([]), SCHEMA)


@pytest.fixture
def trained(workspace: Settings) -> Settings:
    ingest(workspace)
    train(workspace)
    return workspace


def test_score_writes_latestscore_and_records_metrics_in_the_card(trained: Settings) -> None:
    card = score(trained)
    text = (trained.model_folder / "latestscore.txt").read_text()
    assert float(text.strip()) == card.metrics["f1"]
    assert text.strip() == repr(card.metrics["f1"])  # a plain number, nothing else
    stored = Registry(trained.model_folder).card(card.id)
    assert stored.metrics["f1"] == card.metrics["f1"]
    assert stored.f1 == card.f1
    assert set(stored.metrics) >= {"f1", "precision", "recall", "accuracy", "roc_auc"}
    assert stored.metrics["test_data"]["rows"] == len(
        pd.read_csv(trained.test_data / "testdata.csv")
    )
    on_disk = json.loads(
        (trained.model_folder / "versions" / card.id / "card.json").read_text(encoding="utf-8")
    )
    assert on_disk["metrics"]["f1"] == card.metrics["f1"]


def test_score_matches_compute_metrics_by_hand(trained: Settings) -> None:
    card = score(trained)
    registry = Registry(trained.model_folder)
    model = registry.pipeline(card.id)
    test = pd.read_csv(trained.test_data / "testdata.csv")
    # the pickled pipeline's probabilities at the threshold tuning chose (not the pickle's 0.5)
    threshold = registry.model(card.id).threshold
    assert card.metrics["threshold"] == threshold == card.tuning["threshold"]
    predicted = model.predict_proba(test)[:, list(model.classes_).index(1)] > threshold
    truth = test["exited"].to_numpy() == 1
    tp = int((predicted & truth).sum())
    fp = int((predicted & ~truth).sum())
    fn = int((~predicted & truth).sum())
    assert card.metrics["f1"] == pytest.approx(2 * tp / (2 * tp + fp + fn))
    assert card.metrics["confusion_matrix"][1] == [fn, tp]


def test_score_of_an_older_version_leaves_the_model_untouched(trained: Settings) -> None:
    train(trained)
    registry = Registry(trained.model_folder)
    before = registry.card("v0001").model_sha256
    card = score(trained, "v0001")
    assert card.id == "v0001"
    assert registry.card("v0001").f1 == card.f1
    assert registry.card("v0002").f1 is None
    assert registry.verify("v0001")
    assert registry.card("v0001").model_sha256 == before


def test_test_data_may_be_a_folder_of_several_csv_files(trained: Settings, tmp_path: Path) -> None:
    single = score(trained).metrics
    test = pd.read_csv(trained.test_data / "testdata.csv")
    folder = tmp_path / "split-tests"
    folder.mkdir()
    test.iloc[:40].to_csv(folder / "part1.csv", index=False)
    test.iloc[40:100].to_csv(folder / "part2.csv", index=False)
    test.iloc[100:].to_csv(folder / "part3.CSV", index=False)
    (folder / "notes.txt").write_text("not data\n")
    settings = trained.model_copy(update={"test_data_path": str(folder)})
    metrics = score(settings).metrics
    assert metrics["n"] == len(test)
    assert metrics["f1"] == pytest.approx(single["f1"])
    assert metrics["confusion_matrix"] == single["confusion_matrix"]


def test_csv_files_lists_only_regular_csv_files(tmp_path: Path) -> None:
    (tmp_path / "b.csv").write_text("x\n1\n")
    (tmp_path / "a.csv").write_text("x\n1\n")
    (tmp_path / "c.txt").write_text("x\n1\n")
    (tmp_path / "sub.csv").mkdir()
    assert [p.name for p in csv_files(tmp_path)] == ["a.csv", "b.csv"]
    assert csv_files(tmp_path / "a.csv") == [tmp_path / "a.csv"]


def test_missing_test_path_is_a_data_error_naming_it(trained: Settings, tmp_path: Path) -> None:
    missing = tmp_path / "no-such-tests"
    settings = trained.model_copy(update={"test_data_path": str(missing)})
    with pytest.raises(DataError, match="no-such-tests"):
        score(settings)
    assert not (trained.model_folder / "latestscore.txt").exists()
    assert Registry(trained.model_folder).card("v0001").f1 is None


def test_folder_without_csv_files_is_an_empty_dataset_error(tmp_path: Path) -> None:
    with pytest.raises(EmptyDatasetError, match="no CSV files"):
        read_labelled(tmp_path, SCHEMA)


def test_test_data_read_once_scores_every_version_as_reading_it_again(trained: Settings) -> None:
    """The loop reads the test data once and scores the candidate and production on it."""
    train(trained)
    workspace = Workspace(trained)
    schema = workspace.registry.model("v0001").schema
    test_data = read_test_data(workspace, schema)
    frame, digest = read_labelled(trained.test_data, schema)
    assert test_data.sha256 == digest and test_data.path == trained.test_data
    pd.testing.assert_frame_equal(test_data.frame, frame)
    for version in ("v0001", "v0002"):
        once, again = evaluate(workspace, version, test_data), evaluate(trained, version)
        assert {k: v for k, v in once.items() if k != "scored_at"} == {
            k: v for k, v in again.items() if k != "scored_at"
        }
        assert once["test_data"] == {
            "path": str(trained.test_data),
            "sha256": digest,
            "rows": len(frame),
        }
    card = score(workspace, "v0002", test_data)
    assert card.metrics["f1"] == evaluate(trained, "v0002")["f1"]
    assert overlap_with_training(workspace.dataset, test_data.frame, schema).shared == 0


def test_a_version_of_another_schema_reads_the_test_data_for_its_own(trained: Settings) -> None:
    workspace = Workspace(trained)
    schema = workspace.registry.model("v0001").schema
    other = Schema(
        target=schema.target,
        positive_label=schema.positive_label,
        id_columns=schema.id_columns,
        numeric=schema.numeric[:-1],
        categorical=[*schema.categorical, schema.numeric[-1]],
    )
    test_data = read_test_data(workspace, other)  # as a version trained after a re-type would
    assert not pd.api.types.is_numeric_dtype(test_data.frame[schema.numeric[-1]])
    metrics = evaluate(workspace, "v0001", test_data)
    assert metrics["f1"] == evaluate(trained, "v0001")["f1"]
