"""Data drift: per-feature tests and distances, and the dataset-level verdict."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from beryl.config import DriftSettings, Settings
from beryl.data.demo import add_batch, generate
from beryl.data.ingestion import ingest
from beryl.data.schema import Schema
from beryl.loop.passes import run_pass
from beryl.monitoring.drift import compare, psi
from beryl.monitoring.history import History
from beryl.monitoring.reporting import build_report

NUMERIC = ["lastmonth_activity", "lastyear_activity", "number_of_employees"]
DEMO = Schema("exited", 1, ["corporation"], NUMERIC, [])
MIXED = Schema("exited", 1, ["corporation"], NUMERIC, ["plan"])
DEFAULTS = DriftSettings()


def with_plan(frame: pd.DataFrame, seed: int, plans: list[str], p: list[float]) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return frame.assign(plan=rng.choice(plans, size=len(frame), p=p))


@pytest.mark.parametrize("rows", [200, 5_000, 50_000])
def test_same_distribution_is_not_drift_at_any_size(rows: int) -> None:
    result = compare(generate(20_000, 1), generate(rows, 2), DEMO, DEFAULTS)
    assert result["dataset_drift"] is False
    assert result["drifted_features"] == []
    assert result["drift_share"] == 0.0


def test_identical_data_is_not_drift() -> None:
    frame = generate(3_000, 5)
    result = compare(frame, frame.copy(), DEMO, DEFAULTS)
    assert result["drifted_features"] == []
    for feature in result["features"].values():
        assert feature["statistic"] == 0.0
        assert feature["p_value"] == pytest.approx(1.0)
        assert feature["distance"] == pytest.approx(0.0, abs=1e-9)


def test_one_shifted_numeric_feature_is_the_only_one_flagged() -> None:
    current = generate(5_000, 3)
    current["number_of_employees"] = current["number_of_employees"] * 2 + 30
    result = compare(generate(20_000, 1), current, DEMO, DEFAULTS)
    assert result["drifted_features"] == ["number_of_employees"]
    shifted = result["features"]["number_of_employees"]
    assert shifted["test"] == "kolmogorov-smirnov" and shifted["distance_name"] == "psi"
    assert shifted["p_value"] < DEFAULTS.p_value
    assert shifted["distance"] > DEFAULTS.psi_threshold
    assert result["drift_share"] == pytest.approx(1 / 3)
    assert result["dataset_drift"] is False


def test_most_features_shifted_is_dataset_drift() -> None:
    result = compare(generate(20_000, 1), generate(5_000, 3, shift=0.6), DEMO, DEFAULTS)
    assert set(result["drifted_features"]) == {"lastmonth_activity", "lastyear_activity"}
    assert result["dataset_drift"] is True


def test_new_category_is_flagged() -> None:
    reference = with_plan(generate(5_000, 1), 1, ["gold", "silver"], [0.5, 0.5])
    current = with_plan(generate(3_000, 2), 2, ["gold", "silver", "platinum"], [0.45, 0.45, 0.1])
    result = compare(reference, current, MIXED, DEFAULTS)
    plan = result["features"]["plan"]
    assert plan["drifted"] is True
    assert plan["test"] == "chi-square" and plan["distance_name"] == "jensen-shannon"
    assert plan["new_categories"] == ["platinum"]
    assert plan["new_category_share"] == pytest.approx(0.1, abs=0.02)
    assert result["drifted_features"] == ["plan"]


def test_same_categories_in_a_large_batch_are_not_drift() -> None:
    reference = with_plan(generate(5_000, 1), 1, ["gold", "silver"], [0.5, 0.5])
    current = with_plan(generate(50_000, 2), 2, ["gold", "silver"], [0.5, 0.5])
    assert compare(reference, current, MIXED, DEFAULTS)["features"]["plan"]["drifted"] is False


def test_too_few_rows_are_not_tested() -> None:
    result = compare(generate(5_000, 1), generate(10, 2), DEMO, DEFAULTS)
    feature = result["features"]["lastmonth_activity"]
    assert feature["drifted"] is False and feature["p_value"] is None
    assert "min_rows" in feature["note"]


@settings(max_examples=50, deadline=None)
@given(st.lists(st.floats(-1e6, 1e6), min_size=5, max_size=200))
def test_psi_of_a_sample_with_itself_is_zero(values: list[float]) -> None:
    data = np.array(values)
    assert psi(data, data) == pytest.approx(0.0, abs=1e-9)


@settings(max_examples=50, deadline=None)
@given(
    st.lists(st.floats(0, 100), min_size=20, max_size=200),
    st.lists(st.floats(0, 100), min_size=20, max_size=200),
)
def test_psi_is_never_negative(reference: list[float], current: list[float]) -> None:
    assert psi(np.array(reference), np.array(current)) >= 0.0


def test_a_pass_records_data_drift_of_the_new_batch(workspace: Settings) -> None:
    run_pass(workspace, call_api=False, report=False)
    add_batch(workspace.input_folder, "shifted.csv", rows=1_000, seed=4, shift=0.8)
    result = run_pass(workspace, call_api=False, report=False)
    build_report(workspace)  # the HTML report shows the same drift view as the dashboard
    assert result.data_drift is not None
    assert result.data_drift["dataset_drift"] is True
    assert result.data_drift["reference"]["model_version"] == "v0001"
    assert result.data_drift["current"]["rows"] == 1_000
    recorded = History(workspace.history_db).latest_drift()
    assert recorded is not None
    assert recorded["drifted_features"] == result.data_drift["drifted_features"]
    assert any("Data drift" in line and "DRIFT" in line for line in result.summary())
    page = (workspace.model_folder / "report.html").read_text()
    assert 'id="drift-chart"' in page
    for name in result.data_drift["drifted_features"]:
        assert f'data-feature="{name}" ' in page or f'data-feature="{name}"' in page


def test_first_ingestion_has_no_reference(workspace: Settings) -> None:
    ingest(workspace)
    result = run_pass(workspace, call_api=False, report=False)
    assert result.data_drift is None
    assert History(workspace.history_db).latest_drift() is None
