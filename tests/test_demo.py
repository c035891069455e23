"""Tests for beryl.data.demo: the synthetic data generator and demo workspaces."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from beryl import config
from beryl.config import default_config
from beryl.data.demo import (
    COLUMNS,
    NUMERIC,
    add_batch,
    generate,
    init_workspace,
    split_with_duplicates,
    write_csv,
)
from beryl.data.schema import Schema
from beryl.errors import ConfigError
from beryl.model.engine import fit_pipeline
from beryl.model.linear import LinearModel
from beryl.model.scoring import compute_metrics

SCHEMA = Schema(target="exited", positive_label=1, id_columns=["corporation"], numeric=NUMERIC)


def test_generate_is_deterministic_per_seed() -> None:
    pd.testing.assert_frame_equal(generate(300, seed=4), generate(300, seed=4))
    assert not generate(300, seed=4).equals(generate(300, seed=5))


def test_generate_has_the_original_columns_labels_and_a_few_blanks() -> None:
    frame = generate(2000, seed=0)
    assert list(frame.columns) == COLUMNS
    assert len(frame) == 2000
    assert set(frame["exited"].unique()) == {0, 1}
    assert 0.1 < frame["exited"].mean() < 0.9
    assert frame["corporation"].notna().all()
    assert frame["exited"].notna().all()
    for column in NUMERIC:
        missing = frame[column].isna().sum()
        assert 0 < missing < 0.05 * len(frame), column
        present = frame[column].dropna()
        assert (present >= 0).all()
        assert (present == present.round()).all()  # whole numbers, as in the original files
    assert generate(500, seed=0, missing_rate=0.0)[NUMERIC].notna().all().all()


def test_generated_data_is_learnable_across_seeds() -> None:
    model = LinearModel.from_pipeline(
        fit_pipeline(SCHEMA, {"max_iter": 1000}, generate(2000, seed=0)), SCHEMA
    )
    metrics = compute_metrics(model, generate(1000, seed=1), SCHEMA)
    assert metrics["f1"] > 0.7
    assert metrics["roc_auc"] > 0.8


def test_low_recent_activity_means_more_attrition() -> None:
    frame = generate(4000, seed=2).dropna()
    low = frame["lastmonth_activity"] < frame["lastmonth_activity"].median()
    assert frame.loc[low, "exited"].mean() > frame.loc[~low, "exited"].mean() + 0.2


def test_label_noise_makes_the_data_harder_to_learn() -> None:
    model = LinearModel.from_pipeline(
        fit_pipeline(SCHEMA, {"max_iter": 1000}, generate(2000, seed=0)), SCHEMA
    )
    clean = compute_metrics(model, generate(1000, seed=1), SCHEMA)
    noisy = compute_metrics(model, generate(1000, seed=1, label_noise=0.4), SCHEMA)
    assert noisy["accuracy"] < clean["accuracy"] - 0.1


def test_shift_raises_activity() -> None:
    base = generate(1000, seed=3)
    shifted = generate(1000, seed=3, shift=0.5)
    pd.testing.assert_series_equal(base["exited"], shifted["exited"])
    for column in ("lastmonth_activity", "lastyear_activity"):
        assert shifted[column].mean() == pytest.approx(1.5 * base[column].mean(), rel=0.01)
        both = base[column].notna() & shifted[column].notna()
        assert (shifted.loc[both, column] >= base.loc[both, column]).all()
    pd.testing.assert_series_equal(base["number_of_employees"], shifted["number_of_employees"])


def test_negative_rows_are_refused() -> None:
    with pytest.raises(ValueError, match="rows"):
        generate(-1)


@settings(max_examples=25, deadline=None)
@given(rows=st.integers(min_value=0, max_value=150), seed=st.integers(0, 2**32 - 1))
def test_generate_invariants(rows: int, seed: int) -> None:
    frame = generate(rows, seed)
    assert list(frame.columns) == COLUMNS
    assert len(frame) == rows
    assert set(frame["exited"].unique()) <= {0, 1}
    assert (frame[NUMERIC].dropna() >= 0).all().all()
    assert frame["corporation"].str.fullmatch(r"[a-z]{4}").all()


def test_split_with_duplicates_repeats_rows_across_files() -> None:
    frame = generate(300, seed=0)
    parts = split_with_duplicates(frame, files=3, seed=0, duplicate_rate=0.1)
    assert len(parts) == 3
    assert sum(len(p) for p in parts) == 300 + 3 * 10
    keys = [set(p["corporation"] + "|" + p["lastyear_activity"].astype(str)) for p in parts]
    for index in range(3):
        assert keys[index] & keys[(index + 1) % 3], f"parts {index} and {index + 1} share no row"
    union = pd.concat(parts).drop_duplicates().reset_index(drop=True)
    assert len(union) == len(frame.drop_duplicates())
    merged = union.merge(frame, how="outer", indicator=True)
    assert (merged["_merge"] == "both").all()
    for part in parts:
        assert list(part.columns) == COLUMNS


def test_split_into_one_file_keeps_the_frame() -> None:
    frame = generate(50, seed=1)
    (only,) = split_with_duplicates(frame, files=1)
    pd.testing.assert_frame_equal(only, frame)


def test_init_workspace_creates_a_ready_workspace(tmp_path: Path) -> None:
    ws = init_workspace(tmp_path / "ws", rows=100, files=2, seed=3)
    assert json.loads(ws.config.read_text()) == default_config()
    settings = config.load(ws.config)
    assert len(ws.source_files) == 2
    assert all(p.parent == settings.input_folder and p.is_file() for p in ws.source_files)
    assert ws.test_file.parent == settings.test_data
    assert len(ws.practice_files) == 2
    rows = sum(len(pd.read_csv(p)) for p in ws.source_files)
    assert rows > 100  # the split repeats some rows
    test = pd.read_csv(ws.test_file)
    assert list(test.columns) == COLUMNS
    assert test[NUMERIC].notna().all().all()
    assert settings.output_folder.is_dir()


def test_init_workspace_refuses_an_existing_config_without_force(tmp_path: Path) -> None:
    root = tmp_path / "ws"
    root.mkdir()
    (root / "config.json").write_text('{"target": "mine"}')
    with pytest.raises(ConfigError, match=r"config\.json already exists") as err:
        init_workspace(root, rows=50)
    assert err.value.hint is not None and "--force" in err.value.hint
    assert (root / "config.json").read_text() == '{"target": "mine"}'
    assert sorted(p.name for p in root.iterdir()) == ["config.json"]

    ws = init_workspace(root, rows=50, force=True)
    assert json.loads(ws.config.read_text()) == default_config()
    assert ws.source_files[0].exists()


def test_init_workspace_refuses_a_second_init(tmp_path: Path) -> None:
    init_workspace(tmp_path / "ws", rows=50)
    with pytest.raises(ConfigError):
        init_workspace(tmp_path / "ws", rows=50)


@pytest.mark.parametrize(("rows", "files"), [(9, 1), (50, 0)])
def test_init_workspace_validates_sizes(tmp_path: Path, rows: int, files: int) -> None:
    with pytest.raises(ConfigError):
        init_workspace(tmp_path / "ws", rows=rows, files=files)
    assert not (tmp_path / "ws" / "config.json").exists()


def test_add_batch_writes_a_csv_in_the_original_schema(tmp_path: Path) -> None:
    path = add_batch(tmp_path, "new_customers", rows=120, seed=9)
    assert path == tmp_path / "new_customers.csv"
    lines = path.read_text().splitlines()
    assert lines[0] == ",".join(COLUMNS)
    assert len(lines) == 121
    assert ".0," not in path.read_text()  # whole numbers are written without '.0'
    assert any(",," in line for line in lines[1:])  # missing values are blanks
    frame = pd.read_csv(path)
    assert list(frame.columns) == COLUMNS
    expected = generate(120, seed=9)
    np.testing.assert_array_equal(frame["exited"], expected["exited"])
    pd.testing.assert_series_equal(frame["lastyear_activity"], expected["lastyear_activity"])
    assert add_batch(tmp_path, "again.csv", rows=5).name == "again.csv"


def test_add_batch_with_shift_writes_busier_customers(tmp_path: Path) -> None:
    base = pd.read_csv(add_batch(tmp_path, "base", rows=400, seed=2))
    shifted = pd.read_csv(add_batch(tmp_path, "shifted", rows=400, seed=2, shift=1.0))
    assert shifted["lastmonth_activity"].mean() > 1.8 * base["lastmonth_activity"].mean()


def test_write_csv_round_trips(tmp_path: Path) -> None:
    frame = generate(60, seed=11, missing_rate=0.1)
    back = pd.read_csv(write_csv(frame, tmp_path / "f.csv"))
    pd.testing.assert_frame_equal(back, frame, check_dtype=False)
