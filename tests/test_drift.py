"""Data drift: per-feature tests and distances, and the dataset-level verdict."""

from __future__ import annotations

import json

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
from beryl.monitoring.drift import check_batches, compare, psi
from beryl.monitoring.history import History
from beryl.monitoring.reporting import build_report
from beryl.monitoring.results import DriftResult, DriftSample
from beryl.workspace import Workspace

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
    assert result.dataset_drift is False
    assert result.drifted_features == ()
    assert result.drift_share == 0.0


def test_identical_data_is_not_drift() -> None:
    frame = generate(3_000, 5)
    result = compare(frame, frame.copy(), DEMO, DEFAULTS)
    assert result.drifted_features == ()
    for feature in result.features.values():
        assert feature.statistic == 0.0
        assert feature.p_value == pytest.approx(1.0)
        assert feature.distance == pytest.approx(0.0, abs=1e-9)


def test_one_shifted_numeric_feature_is_the_only_one_flagged() -> None:
    current = generate(5_000, 3)
    current["number_of_employees"] = current["number_of_employees"] * 2 + 30
    result = compare(generate(20_000, 1), current, DEMO, DEFAULTS)
    assert result.drifted_features == ("number_of_employees",)
    shifted = result.features["number_of_employees"]
    assert shifted.test == "kolmogorov-smirnov" and shifted.distance_name == "psi"
    assert shifted.p_value is not None and shifted.p_value < DEFAULTS.p_value
    assert shifted.distance is not None and shifted.distance > DEFAULTS.psi_threshold
    assert result.drift_share == pytest.approx(1 / 3)
    assert result.dataset_drift is False


def test_most_features_shifted_is_dataset_drift() -> None:
    result = compare(generate(20_000, 1), generate(5_000, 3, shift=0.6), DEMO, DEFAULTS)
    assert set(result.drifted_features) == {"lastmonth_activity", "lastyear_activity"}
    assert result.dataset_drift is True


def test_new_category_is_flagged() -> None:
    reference = with_plan(generate(5_000, 1), 1, ["gold", "silver"], [0.5, 0.5])
    current = with_plan(generate(3_000, 2), 2, ["gold", "silver", "platinum"], [0.45, 0.45, 0.1])
    result = compare(reference, current, MIXED, DEFAULTS)
    plan = result.features["plan"]
    assert plan.drifted is True
    assert plan.test == "chi-square" and plan.distance_name == "jensen-shannon"
    assert plan.new_categories == ("platinum",)
    assert plan.new_category_share == pytest.approx(0.1, abs=0.02)
    assert result.drifted_features == ("plan",)


def test_same_categories_in_a_large_batch_are_not_drift() -> None:
    reference = with_plan(generate(5_000, 1), 1, ["gold", "silver"], [0.5, 0.5])
    current = with_plan(generate(50_000, 2), 2, ["gold", "silver"], [0.5, 0.5])
    assert compare(reference, current, MIXED, DEFAULTS).features["plan"].drifted is False


def test_too_few_rows_are_not_tested() -> None:
    result = compare(generate(5_000, 1), generate(10, 2), DEMO, DEFAULTS)
    feature = result.features["lastmonth_activity"]
    assert feature.drifted is False and feature.p_value is None
    assert feature.note is not None and "min_rows" in feature.note
    assert not feature.tested  # the third state: neither drifted nor stable


def test_a_result_keeps_its_json_shape_and_reads_back_from_it() -> None:
    """The history stores ``to_dict`` and ``GET /drift`` answers it: the keys clients read."""
    reference = with_plan(generate(3_000, 1), 1, ["gold", "silver"], [0.5, 0.5])
    current = with_plan(generate(200, 2), 2, ["gold", "silver", "platinum"], [0.4, 0.4, 0.2])
    result = compare(
        reference,
        current,
        MIXED,
        DEFAULTS,
        reference_label="v0001",
        reference_batches=["b1"],
        current_batches=["b2"],
    )
    data = result.to_dict()
    assert list(data) == [
        "reference",
        "current",
        "verdict",
        "dataset_drift",
        "drift_share",
        "drifted_features",
        "note",
        "features",
    ]
    assert data["verdict"] in ("drifted", "not drifted") and data["note"] is None
    assert data["reference"] == {"rows": 3_000, "model_version": "v0001", "batches": ["b1"]}
    assert data["current"] == {"rows": 200, "batches": ["b2"]}
    core = [
        *("verdict", "drifted", "test", "statistic", "p_value", "distance", "distance_name"),
        "threshold",
    ]
    for name in NUMERIC:
        assert list(data["features"][name]) == [*core, "reference_mean", "current_mean"]
    assert list(data["features"]["plan"]) == [*core, "new_categories", "new_category_share"]
    assert data["features"]["plan"]["new_categories"] == ["platinum"]
    assert json.loads(json.dumps(data)) == data
    assert DriftResult.from_dict(data) == result
    untested = compare(reference, current.head(10), MIXED, DEFAULTS).to_dict()["features"]
    assert all(list(f) == [*core, "note"] and f["p_value"] is None for f in untested.values())
    with pytest.raises(ValueError, match="not a data-drift result"):
        DriftResult.from_dict({"reference": ["b1"], "current": ["b2"]})


def test_check_batches_compares_batches_of_the_workspace_dataset(workspace: Settings) -> None:
    ingest(workspace)
    add_batch(workspace.input_folder, "shifted.csv", rows=1_000, seed=4, shift=0.8)
    ingest(workspace)
    old, new = Workspace(workspace).dataset.batches
    result = check_batches(Workspace(workspace), [old.id], [new.id], reference_label="v0001")
    assert result.reference == DriftSample(old.rows, (old.id,), "v0001")
    assert result.current == DriftSample(1_000, (new.id,))
    assert result.dataset_drift is True
    assert check_batches(workspace, [old.id], [new.id], reference_label="v0001") == result


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
    run_pass(workspace, report=False)
    add_batch(workspace.input_folder, "shifted.csv", rows=1_000, seed=4, shift=0.8)
    result = run_pass(workspace, report=False)
    build_report(workspace)  # the HTML report shows the same drift view as the dashboard
    assert isinstance(result.data_drift, DriftResult)
    assert result.data_drift.dataset_drift is True
    assert result.data_drift.reference.model_version == "v0001"
    assert result.data_drift.current.rows == 1_000
    recorded = History(workspace.history_db).latest_drift()
    assert recorded is not None
    assert recorded.drifted_features == result.data_drift.drifted_features
    assert recorded == result.data_drift  # the history gives back the result as it was made
    assert any("Data drift" in line and "DRIFT" in line for line in result.summary())
    page = (workspace.model_folder / "report.html").read_text()
    assert 'id="drift-chart"' in page
    for name in result.data_drift.drifted_features:
        assert f'data-feature="{name}" ' in page or f'data-feature="{name}"' in page


def test_first_ingestion_has_no_reference(workspace: Settings) -> None:
    ingest(workspace)
    result = run_pass(workspace, report=False)
    assert result.data_drift is None
    assert History(workspace.history_db).latest_drift() is None
