"""Tests for beryl.model.training: the pipeline, behaviour of the fitted model and the model
versions."""

from __future__ import annotations

import hashlib
import json
import pickle
import re
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import sklearn

from beryl import config
from beryl.config import Settings, TuningSettings
from beryl.data.ingestion import ingest
from beryl.data.schema import Schema
from beryl.errors import TrainingError
from beryl.model.engine import build_pipeline, fit_pipeline
from beryl.model.registry import Registry
from beryl.model.scoring import score
from beryl.model.training import train


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def churn_frame(
    rows: int, seed: int, regions: tuple[str, ...] = ("north", "south", "east")
) -> pd.DataFrame:
    """Customers with a string label: short tenure and the south region mean churn ("Yes")."""
    rng = np.random.default_rng(seed)
    tenure = rng.normal(20.0, 8.0, rows).round(1)
    region = rng.choice(regions, rows)
    logit = -(tenure - 20.0) / 5.0 + (region == "south") * 1.5
    churn = np.where(rng.random(rows) < 1.0 / (1.0 + np.exp(-logit)), "Yes", "No")
    return pd.DataFrame(
        {
            "customer_id": [f"c{seed}-{i}" for i in range(rows)],
            "tenure": tenure,
            "region": region,
            "churn": churn,
        }
    )


def make_workspace(root: Path, train_frame: pd.DataFrame, **cfg: Any) -> Settings:
    """A workspace holding one source file and whatever config keys are given."""
    (root / "in").mkdir(parents=True)
    (root / "test").mkdir()
    train_frame.to_csv(root / "in" / "data.csv", index=False)
    data = {"input_folder_path": "in", "test_data_path": "test", **cfg}
    (root / "config.json").write_text(json.dumps(data))
    return config.load(root / "config.json")


@pytest.fixture
def ingested(workspace: Settings) -> Settings:
    ingest(workspace)
    return workspace


def test_string_label_categorical_and_blanks_train_and_score(tmp_path: Path) -> None:
    frame = churn_frame(300, seed=1)
    frame.loc[::17, "tenure"] = np.nan
    settings = make_workspace(
        tmp_path / "ws",
        frame,
        target="churn",
        positive_label="Yes",
        id_columns=["customer_id"],
    )
    test = churn_frame(80, seed=2, regions=("north", "south", "west"))  # "west" is unseen
    test.loc[::9, "tenure"] = np.nan
    test.to_csv(settings.test_data / "test.csv", index=False)
    csv_text = (settings.input_folder / "data.csv").read_text()
    assert re.search(r"^c1-\d+,,(north|south|east),", csv_text, re.MULTILINE)  # blank tenure

    ingest(settings)
    card = train(settings)
    assert card.schema["numeric"] == ["tenure"]
    assert card.schema["categorical"] == ["region"]
    assert sorted(card.classes) == ["No", "Yes"]

    scored = score(settings, card.id)
    metrics = scored.metrics
    assert metrics["n"] == 80
    assert metrics["positive_label"] == "Yes"
    assert 0.6 < metrics["f1"] <= 1.0
    assert sum(map(sum, metrics["confusion_matrix"])) == 80

    model = Registry(settings.model_folder).pipeline(card.id)
    predictions = model.predict(test[["tenure", "region"]])
    assert set(predictions) <= {"Yes", "No"}
    west = test[test["region"] == "west"]
    assert len(west) > 0
    probabilities = model.predict_proba(west[["tenure", "region"]])
    assert np.isfinite(probabilities).all()
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0)


def test_build_pipeline_handles_unseen_category_and_all_blank_numeric() -> None:
    schema = Schema(target="y", positive_label="Yes", numeric=["x"], categorical=["colour"])
    frame = pd.DataFrame(
        {
            "x": [1.0, np.nan, 3.0, 4.0, np.nan, 6.0],
            "colour": ["red", "blue", None, "red", "blue", "red"],
            "y": ["Yes", "No", "Yes", "No", "No", "Yes"],
        }
    )
    model = fit_pipeline(schema, {}, frame)
    unseen = pd.DataFrame({"x": [np.nan, 2.0], "colour": ["purple", None]})
    assert len(model.predict(unseen)) == 2
    assert list(model.classes_) == ["No", "Yes"]


def test_id_column_is_never_a_feature(tmp_path: Path) -> None:
    frame = churn_frame(200, seed=3)
    renamed = frame.assign(customer_id=[f"other-{i * 7}" for i in range(len(frame))])
    cfg = {"target": "churn", "positive_label": "Yes", "id_columns": ["customer_id"]}
    first = make_workspace(tmp_path / "a", frame, **cfg)
    second = make_workspace(tmp_path / "b", renamed, **cfg)
    for settings in (first, second):
        ingest(settings)
    card_a, card_b = train(first), train(second)
    assert "customer_id" not in card_a.schema["numeric"] + card_a.schema["categorical"]

    model_a = Registry(first.model_folder).pipeline(card_a.id)
    model_b = Registry(second.model_folder).pipeline(card_b.id)
    features = ["tenure", "region"]
    probe = churn_frame(50, seed=4)
    np.testing.assert_allclose(
        model_a.predict_proba(probe[features]), model_b.predict_proba(probe[features])
    )
    transformer = model_a.named_steps["features"]
    used = [column for _, _, columns in transformer.transformers_ for column in columns]
    assert "customer_id" not in used


def test_changing_only_ids_at_predict_time_changes_nothing(ingested: Settings) -> None:
    card = train(ingested)
    model = Registry(ingested.model_folder).pipeline(card.id)
    test = pd.read_csv(ingested.test_data / "testdata.csv")
    other = test.assign(corporation=["zzzz"] * len(test))
    np.testing.assert_array_equal(model.predict_proba(test), model.predict_proba(other))


def test_more_recent_activity_lowers_attrition_risk(ingested: Settings) -> None:
    card = train(ingested)
    model = Registry(ingested.model_folder).pipeline(card.id)
    test = pd.read_csv(ingested.test_data / "testdata.csv")
    positive = list(model.classes_).index(1)
    base = model.predict_proba(test)[:, positive]
    busier = model.predict_proba(test.assign(lastmonth_activity=test["lastmonth_activity"] + 200))
    assert (busier[:, positive] < base).all()
    idle = model.predict_proba(test.assign(lastmonth_activity=0.0))[:, positive]
    assert idle.mean() > base.mean() > busier[:, positive].mean()


def test_one_class_data_is_a_training_error(tmp_path: Path) -> None:
    frame = churn_frame(60, seed=5).assign(churn="No")
    settings = make_workspace(
        tmp_path / "ws", frame, target="churn", positive_label="Yes", id_columns=["customer_id"]
    )
    ingest(settings)
    with pytest.raises(TrainingError, match=r"only one label value.*'No'"):
        train(settings)
    assert Registry(settings.model_folder).ids() == []


def test_positive_label_absent_from_data_is_a_training_error(tmp_path: Path) -> None:
    frame = churn_frame(60, seed=6)
    settings = make_workspace(
        tmp_path / "ws", frame, target="churn", positive_label="yes", id_columns=["customer_id"]
    )
    ingest(settings)
    with pytest.raises(TrainingError, match=r"positive_label 'yes' never occurs in 'churn'") as err:
        train(settings)
    assert "'Yes'" in str(err.value)  # the values that do occur are shown
    assert err.value.hint is not None and "positive_label" in err.value.hint


def test_numeric_positive_label_absent_is_a_training_error() -> None:
    schema = Schema(target="y", positive_label=1, numeric=["x"])
    frame = pd.DataFrame({"x": [1.0, 2.0, 3.0, 4.0], "y": [0, 2, 0, 2]})
    with pytest.raises(TrainingError, match="positive_label 1 never occurs"):
        fit_pipeline(schema, {}, frame)


def test_each_train_makes_a_new_immutable_version(ingested: Settings) -> None:
    first = train(ingested)
    folder = ingested.model_folder / "versions" / first.id
    before = {p.name: sha256(p) for p in folder.iterdir()}
    second = train(ingested)
    third = train(ingested)
    assert [first.id, second.id, third.id] == ["v0001", "v0002", "v0003"]
    assert {p.name: sha256(p) for p in folder.iterdir()} == before
    assert Registry(ingested.model_folder).ids() == ["v0001", "v0002", "v0003"]


def test_model_card_records_provenance(ingested: Settings) -> None:
    card = train(ingested)
    registry = Registry(ingested.model_folder)
    stored = registry.card(card.id)
    assert stored.to_dict() == card.to_dict()
    assert stored.id == "v0001"
    created = datetime.fromisoformat(stored.created.replace("Z", "+00:00"))
    assert created.tzinfo is not None

    manifest = json.loads((ingested.output_folder / "dataset.json").read_text())
    assert stored.training["batches"] == [b["id"] for b in manifest["batches"]]
    assert stored.training["rows"] == sum(b["rows"] for b in manifest["batches"])
    expected_files = sorted((p.name, sha256(p)) for p in ingested.input_folder.glob("*.csv"))
    assert sorted((f["name"], f["sha256"]) for f in stored.training["files"]) == expected_files

    # the estimator's parameters as fitted: the config's, and what tuning chose for the rest
    chosen = stored.tuning["params"]
    assert set(chosen) == {"class_weight", "C"}
    assert stored.parameters["C"] == chosen["C"] and chosen["C"] in (1.0, 0.1, 10.0)
    assert stored.parameters["class_weight"] == chosen["class_weight"]
    assert stored.parameters["max_iter"] == 1000
    assert stored.libraries["scikit-learn"] == sklearn.__version__
    assert stored.libraries["pandas"] == pd.__version__
    assert stored.libraries["numpy"] == np.__version__
    assert stored.model_sha256 == sha256(ingested.model_folder / "versions" / "v0001" / "model.pkl")
    on_disk = json.loads((ingested.model_folder / "versions" / "v0001" / "card.json").read_text())
    assert on_disk["model_sha256"] == stored.model_sha256


def test_trainedmodel_pkl_is_the_latest_model(ingested: Settings) -> None:
    train(ingested)
    card = train(ingested)
    with (ingested.model_folder / "trainedmodel.pkl").open("rb") as handle:
        copy = pickle.load(handle)
    model = Registry(ingested.model_folder).pipeline(card.id)
    test = pd.read_csv(ingested.test_data / "testdata.csv")
    np.testing.assert_array_equal(copy.predict(test), model.predict(test))
    np.testing.assert_array_equal(copy.predict_proba(test), model.predict_proba(test))
    assert sha256(ingested.model_folder / "trainedmodel.pkl") == card.model_sha256


def test_config_model_parameters_reach_the_estimator(workspace: Settings) -> None:
    """A parameter config.json sets is used as it is: the search leaves it alone."""
    settings = workspace.model_copy(update={"model": {"C": 0.5, "max_iter": 500}})
    ingest(settings)
    card = train(settings)
    estimator = Registry(settings.model_folder).pipeline(card.id).named_steps["model"]
    assert estimator.C == 0.5
    assert estimator.max_iter == 500
    assert card.parameters["C"] == 0.5

    assert card.tuning["params"] == {"class_weight": estimator.class_weight}  # only it searched
    fixed = {"C": 0.001, "max_iter": 500, "class_weight": estimator.class_weight}
    # uncalibrated, on both sides: a calibration rescales the coefficients it folds into
    never = TuningSettings(calibration="never")
    plain = train(settings.model_copy(update={"tuning": never}))
    estimator = Registry(settings.model_folder).pipeline(plain.id).named_steps["model"]
    regularised = train(workspace.model_copy(update={"model": fixed, "tuning": never}))
    small = Registry(settings.model_folder).pipeline(regularised.id).named_steps["model"]
    assert small.C == 0.001 and regularised.tuning["params"] == {}
    assert np.abs(small.coef_).sum() < np.abs(estimator.coef_).sum()


def test_build_pipeline_passes_parameters() -> None:
    schema = Schema(target="y", positive_label=1, numeric=["x"])
    pipeline = build_pipeline(schema, {"C": 0.25, "class_weight": "balanced"})
    model = pipeline.named_steps["model"]
    assert (model.C, model.class_weight) == (0.25, "balanced")
