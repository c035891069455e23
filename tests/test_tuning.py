"""Settings chosen by cross-validation on the training data: class weight, C, the decision
threshold and a calibration (``beryl.model.tuning``), and the switches that turn them off."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import f1_score

from beryl import config
from beryl.config import Settings, TuningSettings
from beryl.data.demo import NUMERIC, generate, init_workspace, write_csv
from beryl.data.ingestion import ingest
from beryl.data.schema import Schema
from beryl.model.engine import SklearnEngine, TrainingOptions, fit_pipeline
from beryl.model.linear import LinearModel
from beryl.model.predict import predict
from beryl.model.registry import Registry
from beryl.model.scoring import score
from beryl.model.training import train
from beryl.model.tuning import best_cut, grid

SCHEMA = Schema(target="exited", positive_label=1, id_columns=["corporation"], numeric=NUMERIC)


def imbalanced(rows: int, seed: int, share: float = 0.15) -> pd.DataFrame:
    """Demo customers with about ``share`` of leavers (attrition data is imbalanced)."""
    frame = generate(rows * 3, seed=seed)
    leavers, stayers = frame[frame.exited == 1], frame[frame.exited == 0]
    wanted = int(len(stayers) * share / (1 - share))
    return pd.concat([stayers, leavers.iloc[:wanted]]).sample(frac=1.0, random_state=seed)


def f1_of(model: LinearModel, frame: pd.DataFrame) -> float:
    labels = predict(model, frame[SCHEMA.features]).labels
    return float(f1_score(frame.exited == 1, np.asarray(labels) == 1))


# -- the search -----------------------------------------------------------------------------------
def test_a_tuned_model_beats_the_default_one_on_unseen_rows() -> None:
    """On imbalanced data, the threshold and class weight chosen on the training rows give a
    higher F1 on rows neither saw than scikit-learn's defaults at 0.5."""
    training, unseen = imbalanced(3000, seed=1), imbalanced(3000, seed=2)
    engine = SklearnEngine()
    tuned = engine.fit(
        SCHEMA, {"max_iter": 1000}, training, TrainingOptions(tuning=TuningSettings())
    )
    plain = engine.fit(SCHEMA, {"max_iter": 1000}, training)
    assert plain.model.threshold == 0.5 and not plain.tuning.enabled
    assert tuned.tuning.enabled and tuned.model.threshold != 0.5
    assert f1_of(tuned.model, unseen) > f1_of(plain.model, unseen) + 0.02
    # the probabilities are those of a logistic regression; only the decision moved
    chosen = tuned.tuning
    assert chosen.threshold == tuned.model.threshold
    assert chosen.cv_f1 is not None and chosen.cv_f1 >= max(c.f1_at_half for c in chosen.candidates)


def test_the_threshold_is_chosen_without_the_test_data(workspace: Settings) -> None:
    """The test data judges promotion only: replacing it changes no chosen setting."""
    ingest(workspace)
    first = train(workspace)
    test_file = workspace.test_data / "testdata.csv"
    test = pd.read_csv(test_file)
    test["exited"] = 1 - test["exited"]  # the opposite labels: a threshold read here would move
    test.to_csv(test_file, index=False)
    second = train(workspace)
    registry = Registry(workspace.model_folder)
    assert registry.model(first.id).threshold == registry.model(second.id).threshold
    assert first.tuning == second.tuning
    np.testing.assert_array_equal(registry.model(first.id).coef, registry.model(second.id).coef)


def test_parameters_config_sets_are_not_searched() -> None:
    settings = TuningSettings()
    assert grid(settings, {}) == [
        {"class_weight": cw, "C": c} for cw in (None, "balanced") for c in (1.0, 0.1, 10.0)
    ]
    assert grid(settings, {"C": 3.0}) == [{"class_weight": None}, {"class_weight": "balanced"}]
    assert grid(settings, {"C": 3.0, "class_weight": "balanced"}) == [{}]
    fitted = SklearnEngine().fit(
        SCHEMA, {"C": 3.0, "max_iter": 1000}, imbalanced(600, 3), TrainingOptions(tuning=settings)
    )
    assert fitted.parameters["C"] == 3.0 and set(fitted.tuning.params) == {"class_weight"}


def test_the_grid_s_first_setting_wins_unless_another_is_clearly_better() -> None:
    fitted = SklearnEngine().fit(
        SCHEMA, {"max_iter": 1000}, generate(2000, seed=4), TrainingOptions(tuning=TuningSettings())
    )
    first, chosen = fitted.tuning.candidates[0], fitted.tuning.cv_f1
    assert chosen is not None
    best = max(c.f1 for c in fitted.tuning.candidates)
    if fitted.tuning.params != first.params:
        assert chosen > first.f1 + 0.002
    assert chosen >= best - 0.002


def test_the_search_runs_on_a_sample_of_large_data_and_the_model_on_every_row() -> None:
    frame = imbalanced(4000, seed=5)
    settings = TuningSettings(search_rows=500, folds=3)
    fitted = SklearnEngine().fit(
        SCHEMA, {"max_iter": 1000}, frame, TrainingOptions(tuning=settings)
    )
    assert fitted.tuning.search_rows == 500 and fitted.tuning.folds == 3
    params = {"max_iter": 1000} | fitted.tuning.params
    everything = fit_pipeline(SCHEMA, params, frame)
    if fitted.tuning.calibration.method == "none":
        np.testing.assert_allclose(
            fitted.model.coef, everything.named_steps["model"].coef_, rtol=1e-9, atol=1e-12
        )


def test_too_few_rows_or_more_than_two_classes_are_fitted_untuned() -> None:
    few = imbalanced(200, seed=6)
    few = pd.concat([few[few.exited == 0], few[few.exited == 1].iloc[:1]])
    fitted = SklearnEngine().fit(
        SCHEMA, {"max_iter": 1000}, few, TrainingOptions(tuning=TuningSettings())
    )
    assert not fitted.tuning.enabled and "too few" in fitted.tuning.note
    assert fitted.model.threshold == 0.5

    three = generate(300, seed=7)
    three["exited"] = np.arange(len(three)) % 3
    fitted = SklearnEngine().fit(
        SCHEMA, {"max_iter": 1000}, three, TrainingOptions(tuning=TuningSettings())
    )
    assert not fitted.tuning.enabled and "3 classes" in fitted.tuning.note


def test_best_cut_maximises_f1_and_lies_between_two_scores() -> None:
    positive = np.array([0, 0, 1, 0, 1, 1, 1], dtype=bool)
    scores = np.array([-3.0, -2.0, -1.0, 0.5, 1.0, 2.0, 3.0])
    cut, f1 = best_cut(positive, scores)
    # every row from -1.0 up predicted positive: TP 4, FP 1, FN 0 → F1 8/9, the best here
    assert f1 == pytest.approx(8 / 9)
    assert -2.0 < cut < -1.0
    assert f1 == pytest.approx(f1_score(positive, scores > cut))


# -- calibration ----------------------------------------------------------------------------------
def test_a_calibration_is_kept_when_it_lowers_the_brier_score_and_folds_into_the_model() -> None:
    """Balanced class weights inflate the leavers' probabilities: the sigmoid map chosen by
    cross-validation brings them back, and the served model's probabilities are the map's."""
    training, unseen = imbalanced(3000, seed=8), imbalanced(3000, seed=9)
    params = {"max_iter": 1000, "class_weight": "balanced"}
    engine = SklearnEngine()
    calibrated = engine.fit(SCHEMA, params, training, TrainingOptions(tuning=TuningSettings()))
    raw = engine.fit(
        SCHEMA, params, training, TrainingOptions(tuning=TuningSettings(calibration="never"))
    )
    calibration = calibrated.tuning.calibration
    assert calibration.method == "sigmoid"
    assert calibration.brier_calibrated is not None and calibration.brier_raw is not None
    assert calibration.brier_calibrated < calibration.brier_raw
    features = unseen[SCHEMA.features]
    raw_score = raw.model.decision_function(features)
    expected = 1.0 / (1.0 + np.exp(-(calibration.a * raw_score + calibration.b)))
    chances = predict(calibrated.model, features).chances
    np.testing.assert_allclose(chances, expected, rtol=1e-9, atol=1e-12)
    truth = (unseen.exited == 1).to_numpy()
    brier = [
        np.mean((np.asarray(predict(m, features).chances) - truth) ** 2)
        for m in (calibrated.model, raw.model)
    ]
    assert brier[0] < brier[1]
    # the pickled pipeline carries the same calibrated probabilities
    np.testing.assert_allclose(
        calibrated.artifact.predict_proba(features)[:, 1], expected, rtol=1e-9, atol=1e-12
    )


def test_scoring_reports_brier_and_a_reliability_curve(workspace: Settings) -> None:
    ingest(workspace)
    card = score(workspace, train(workspace).id)
    metrics = card.metrics
    assert 0.0 <= metrics["brier"] <= 1.0
    curve = metrics["reliability"]
    assert sum(point["rows"] for point in curve) == metrics["n"]
    for point in curve:
        assert point["low"] <= point["predicted"] <= point["high"]
        assert 0.0 <= point["observed"] <= 1.0
    assert metrics["threshold"] == card.tuning["threshold"]


# -- the switches and the original model ----------------------------------------------------------
# The original training.py's LogisticRegression, less what scikit-learn has since removed
# (multi_class) or deprecated (penalty="l2", today's default).
ORIGINAL = {
    "C": 1.0,
    "class_weight": None,
    "dual": False,
    "fit_intercept": True,
    "intercept_scaling": 1,
    "max_iter": 100,
    "n_jobs": None,
    "random_state": 0,
    "solver": "liblinear",
    "tol": 0.0001,
    "verbose": 0,
    "warm_start": False,
}


def test_with_tuning_and_scaling_off_beryl_is_the_original_model(tmp_path: Path) -> None:
    """The original system fitted LogisticRegression (its parameters) on the raw numeric
    columns of finaldata.csv and scored F1 on the test file: Beryl with both switches off and
    those parameters gives the same coefficients and the same F1, through the real CLI."""
    ws = init_workspace(tmp_path / "ws", rows=800, files=2, seed=11)
    # the original scripts could not fit rows with missing values: give them none
    for index, path in enumerate([*ws.source_files, ws.test_file]):
        write_csv(generate(400, seed=20 + index, missing_rate=0.0), path)
    document = json.loads(ws.config.read_text())
    document |= {"model": ORIGINAL, "tuning": {"enabled": False}, "scale_features": False}
    ws.config.write_text(json.dumps(document))
    done = subprocess.run(
        [sys.executable, "-m", "beryl", "--config", str(ws.config), "run", "--no-apicalls"],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    settings = config.load(ws.config)

    # the original scripts, as they were written
    final = pd.read_csv(settings.output_folder / "finaldata.csv")
    columns = ["lastmonth_activity", "lastyear_activity", "number_of_employees"]
    original = LogisticRegression(**ORIGINAL).fit(final[columns], final["exited"])
    test = pd.read_csv(settings.test_data / "testdata.csv")
    original_f1 = f1_score(test["exited"], original.predict(test[columns]))

    registry = Registry(settings.model_folder)
    version = registry.production()
    assert version is not None
    card = registry.card(version)
    assert card.metrics["f1"] == original_f1
    assert card.tuning["enabled"] is False and card.tuning["scale_features"] is False
    model = registry.model(version)
    assert model.threshold == 0.5
    np.testing.assert_allclose(model.coef, original.coef_, rtol=1e-12)
    np.testing.assert_allclose(model.intercept, original.intercept_, rtol=1e-12)


def test_the_switches_are_validated_in_one_line(tmp_path: Path) -> None:
    ws = init_workspace(tmp_path / "ws", rows=200, files=1, seed=12)
    document = json.loads(ws.config.read_text())
    for bad, where in (
        ({"tuning": {"C": [0]}}, "tuning.C"),
        ({"tuning": {"folds": 1}}, "tuning.folds"),
        ({"tuning": {"calibration": "sometimes"}}, "tuning.calibration"),
        ({"tuning": {"class_weight": ["heavy"]}}, "tuning.class_weight"),
        ({"scale_features": "sometimes"}, "scale_features"),
    ):
        ws.config.write_text(json.dumps(document | bad))
        done = subprocess.run(
            [sys.executable, "-m", "beryl", "--config", str(ws.config), "train"],
            capture_output=True,
            text=True,
        )
        assert done.returncode != 0
        assert "Traceback" not in done.stderr and "config.json" in done.stderr
        named = [line for line in done.stderr.splitlines() if where in line]
        assert len(named) == 1, done.stderr


def test_the_card_shows_what_was_chosen(workspace: Settings, tmp_path: Path) -> None:
    ingest(workspace)
    card = train(workspace)
    shown = subprocess.run(
        [
            sys.executable,
            "-m",
            "beryl",
            "--config",
            str(workspace.root / "config.json"),
            "models",
            "show",
            card.id,
        ],
        capture_output=True,
        text=True,
    )
    assert shown.returncode == 0, shown.stderr
    text = shown.stdout
    assert "threshold" in text.lower() and f"{card.tuning['threshold']:.3f}" in text
    assert "class_weight" in text and "cross-validated" in text.lower()
    shutil.rmtree(tmp_path, ignore_errors=True)


def test_a_positive_label_that_sorts_first_is_tuned_and_calibrated_for_itself() -> None:
    """Labels "leave"/"stay": scikit-learn scores "stay" (classes[1]); the threshold and the
    calibration are still those of the probability of leaving."""
    frame = imbalanced(3000, seed=13)
    frame["exited"] = np.where(frame["exited"] == 1, "leave", "stay")
    schema = Schema(
        target="exited", positive_label="leave", id_columns=["corporation"], numeric=NUMERIC
    )
    params = {"max_iter": 1000, "class_weight": "balanced"}
    engine = SklearnEngine()
    fitted = engine.fit(schema, params, frame, TrainingOptions(tuning=TuningSettings()))
    raw = engine.fit(
        schema, params, frame, TrainingOptions(tuning=TuningSettings(calibration="never"))
    )
    calibration = fitted.tuning.calibration
    assert fitted.model.positive_index == 0 and calibration.method == "sigmoid"
    features = frame[schema.features]
    leave_score = -raw.model.decision_function(features)
    expected = 1.0 / (1.0 + np.exp(-(calibration.a * leave_score + calibration.b)))
    predictions = predict(fitted.model, features)
    np.testing.assert_allclose(predictions.chances, expected, rtol=1e-9, atol=1e-12)
    leaving = np.asarray(predictions.labels) == "leave"
    np.testing.assert_array_equal(leaving, expected > fitted.model.threshold)
    share = leaving.mean()
    assert 0.05 < share < 0.6  # a threshold for "leave", not for "stay"


def test_the_report_and_the_dashboard_show_the_threshold_and_the_choices(
    workspace: Settings,
) -> None:
    import httpx
    from tests.test_event_loop import in_process

    from beryl.loop.passes import run_pass
    from beryl.monitoring.reporting import REPORT_FILE

    run_pass(workspace)
    registry = Registry(workspace.model_folder)
    version = registry.production()
    assert version is not None
    card, threshold = registry.card(version), registry.model(version).threshold
    report = (workspace.model_folder / REPORT_FILE).read_text(encoding="utf-8")
    assert "How this model was chosen" in report and f"{threshold:.3f}" in report
    assert "cross-validation" in report and "Brier score" in report
    assert "Calibration on the test data" in report
    with in_process(workspace) as (url, _):
        page = httpx.get(f"{url}/dashboard", timeout=30).text
    assert f'<strong id="threshold">{threshold:.3f}</strong>' in page
    assert f'data-metric="recall">{card.metrics["recall"]:.4f}' in page
    assert page.count("<tr>") >= len(card.metrics["reliability"])


def test_a_trained_model_explains_against_its_average_training_customer() -> None:
    """The engine records each transformed column's training mean: the base value of reason
    codes is then the mean training logit (calibration folded in or not)."""
    from beryl.model.predict import explain

    frame = imbalanced(1500, seed=14)
    frame.loc[frame.index[::7], "lastyear_activity"] = np.nan
    fitted = SklearnEngine().fit(
        SCHEMA, {"max_iter": 1000}, frame, TrainingOptions(tuning=TuningSettings())
    )
    assert fitted.model.reference is not None
    explained = explain(fitted.model, frame[SCHEMA.features], len(SCHEMA.features))
    assert explained.base_value == pytest.approx(float(np.mean(explained.logits)), abs=1e-9)
    # unscaled, the reference is no longer 0 and the base value no longer the intercept
    raw = SklearnEngine().fit(
        SCHEMA, {"max_iter": 1000}, frame, TrainingOptions(scale=False, tuning=TuningSettings())
    )
    explained = explain(raw.model, frame[SCHEMA.features], len(SCHEMA.features))
    assert explained.base_value == pytest.approx(float(np.mean(explained.logits)), abs=1e-9)
    assert abs(explained.base_value - float(raw.model.intercept[0])) > 0.1
