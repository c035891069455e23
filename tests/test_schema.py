"""Tests for beryl.data.schema: column-role inference, explicit feature lists and config checks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from beryl import config
from beryl.config import Settings
from beryl.data.ingestion import ingest
from beryl.data.schema import Schema, infer_schema
from beryl.errors import DataError, SchemaError


def make_settings(**overrides: Any) -> Settings:
    return config.from_mapping(overrides, Path("."))


def demo_frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "corporation": ["abcd", "efgh", "ijkl"],
            "lastmonth_activity": [10, 20, 30],
            "lastyear_activity": [100.5, np.nan, 300.0],
            "number_of_employees": [" 3 ", "4", ""],  # numeric-looking text
            "plan": ["gold", "silver", None],
            "exited": [0, 1, 0],
        }
    )


def test_inference_splits_numeric_and_categorical_and_excludes_roles() -> None:
    schema = infer_schema(make_settings(), demo_frame(), "f.csv")

    assert schema.target == "exited"
    assert schema.positive_label == 1
    assert schema.id_columns == ["corporation"]
    assert schema.numeric == ["lastmonth_activity", "lastyear_activity", "number_of_employees"]
    assert schema.categorical == ["plan"]
    assert "exited" not in schema.features
    assert "corporation" not in schema.features
    assert schema.columns == [
        "corporation",
        "lastmonth_activity",
        "lastyear_activity",
        "number_of_employees",
        "plan",
        "exited",
    ]


def test_numeric_looking_strings_are_numeric_and_words_are_categorical() -> None:
    frame = pd.DataFrame(
        {
            "corporation": ["a", "b"],
            "as_text_numbers": pd.Series(["1.5", "-2e3"], dtype=object),
            "mixed": pd.Series(["1", "two"], dtype=object),
            "flags": [True, False],
            "exited": [0, 1],
        }
    )
    schema = infer_schema(make_settings(), frame, "f.csv")
    assert schema.numeric == ["as_text_numbers"]
    assert schema.categorical == ["mixed", "flags"]


def test_entirely_blank_column_is_treated_as_numeric() -> None:
    frame = pd.DataFrame(
        {"corporation": ["a"], "empty": pd.Series([None], dtype=object), "exited": [1]}
    )
    assert infer_schema(make_settings(), frame, "f.csv").numeric == ["empty"]


def test_target_and_several_id_columns_are_never_features() -> None:
    frame = pd.DataFrame({"cid": [1, 2], "region": [3, 4], "x": [1.0, 2.0], "y": [0, 1]})
    settings = make_settings(target="y", id_columns=["cid", "region"])
    schema = infer_schema(settings, frame, "f.csv")
    assert schema.numeric == ["x"]
    assert schema.categorical == []
    assert schema.columns == ["cid", "region", "x", "y"]


def test_explicit_feature_lists_win_over_inference() -> None:
    settings = make_settings(
        numeric_features=["lastyear_activity"],
        categorical_features=["lastmonth_activity", "plan"],
    )
    schema = infer_schema(settings, demo_frame(), "f.csv")
    assert schema.numeric == ["lastyear_activity"]
    assert schema.categorical == ["lastmonth_activity", "plan"]


def test_explicit_categorical_list_lets_numeric_be_inferred_from_the_rest() -> None:
    settings = make_settings(categorical_features=["lastmonth_activity"])
    schema = infer_schema(settings, demo_frame(), "f.csv")
    assert schema.categorical == ["lastmonth_activity"]
    assert schema.numeric == ["lastyear_activity", "number_of_employees"]


def test_explicit_numeric_list_leaves_other_numbers_out() -> None:
    settings = make_settings(numeric_features=["lastmonth_activity"])
    schema = infer_schema(settings, demo_frame(), "f.csv")
    assert schema.numeric == ["lastmonth_activity"]
    assert schema.categorical == ["plan"]


@pytest.mark.parametrize(
    ("overrides", "column"),
    [
        (
            {
                "numeric_features": ["lastmonth_activity"],
                "categorical_features": ["lastmonth_activity"],
            },
            "lastmonth_activity",
        ),
        ({"numeric_features": ["exited"]}, "exited"),
        ({"categorical_features": ["corporation"]}, "corporation"),
    ],
)
def test_a_column_with_two_roles_is_refused(overrides: dict[str, Any], column: str) -> None:
    with pytest.raises(SchemaError, match="more than one role") as info:
        infer_schema(make_settings(**overrides), demo_frame(), "f.csv")
    assert column in str(info.value)


def test_missing_target_is_refused_and_names_the_file_and_column() -> None:
    frame = demo_frame().drop(columns=["exited"])
    with pytest.raises(SchemaError) as info:
        infer_schema(make_settings(), frame, "upload.csv")
    message = str(info.value)
    assert "upload.csv" in message
    assert "exited" in message
    assert isinstance(info.value, DataError)
    assert isinstance(info.value, ValueError)


def test_missing_id_column_is_refused() -> None:
    frame = demo_frame().drop(columns=["corporation"])
    with pytest.raises(SchemaError, match="corporation"):
        infer_schema(make_settings(), frame, "upload.csv")


def test_frame_without_features_is_refused() -> None:
    frame = pd.DataFrame({"corporation": ["a"], "exited": [1]})
    with pytest.raises(SchemaError, match="no feature columns"):
        infer_schema(make_settings(), frame, "f.csv")


def test_schema_round_trips_through_a_dict() -> None:
    schema = Schema("churned", "Yes", ["id"], ["spend"], ["plan"])
    again = Schema.from_dict(schema.to_dict())
    assert again == schema
    assert not again.label_is_numeric
    assert Schema("exited", 1).label_is_numeric


def test_check_settings_accepts_a_matching_config() -> None:
    schema = infer_schema(make_settings(), demo_frame(), "f.csv")
    schema.check_settings(make_settings())
    schema.check_settings(
        make_settings(numeric_features=schema.numeric, categorical_features=schema.categorical)
    )


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        ({"target": "churned"}, "target"),
        ({"numeric_features": ["lastmonth_activity"]}, "numeric_features"),
        ({"categorical_features": []}, "categorical_features"),
    ],
)
def test_check_settings_refuses_a_contradicting_config(
    overrides: dict[str, Any], named: str
) -> None:
    schema = infer_schema(make_settings(), demo_frame(), "f.csv")
    with pytest.raises(SchemaError, match=named):
        schema.check_settings(make_settings(**overrides))


@pytest.mark.parametrize(
    "overrides", [{"positive_label": "Yes"}, {"id_columns": ["corporation", "plan"]}]
)
def test_check_settings_refuses_changed_label_or_identifiers(overrides: dict[str, Any]) -> None:
    schema = infer_schema(make_settings(), demo_frame(), "f.csv")
    with pytest.raises(SchemaError):
        schema.check_settings(make_settings(**overrides))


def test_ingest_refuses_config_that_contradicts_stored_schema(workspace: Settings) -> None:
    first = ingest(workspace)
    assert first.rows_added > 0
    changed = workspace.model_copy(update={"numeric_features": ["lastmonth_activity"]})
    with pytest.raises(SchemaError, match="numeric_features"):
        ingest(changed)


def test_declaring_a_column_with_its_other_type_afterwards_points_at_retype() -> None:
    """A config that only moves a feature between numeric and categorical is refused with the
    way forward: re-type the stored data."""
    schema = infer_schema(make_settings(), demo_frame(), "f.csv")
    assert "lastmonth_activity" in schema.numeric
    moved = make_settings(categorical_features=["lastmonth_activity", "plan"])

    with pytest.raises(SchemaError, match="categorical_features differ") as info:
        schema.check_settings(moved)

    assert "`beryl dataset retype lastmonth_activity --as categorical`" in str(info.value)
    with pytest.raises(SchemaError, match="start a new output_folder_path"):
        schema.check_settings(make_settings(target="churned"))


def test_origins_say_where_each_type_came_from_and_change_no_meaning() -> None:
    settings = make_settings(numeric_features=["lastyear_activity"])
    schema = infer_schema(settings, demo_frame(), "first.csv")

    assert schema.origin == {
        "lastyear_activity": "listed in numeric_features in config.json",
        "plan": "inferred as categorical from the first ingested file first.csv",
    }
    bare = Schema.from_dict({k: v for k, v in schema.to_dict().items() if k != "origin"})
    assert bare == schema and bare.key() == schema.key()
    assert Schema.from_dict(schema.to_dict()).origin == schema.origin
    assert "origin" not in bare.to_dict()  # as written before origins were recorded
    moved = Schema(schema.target, schema.positive_label, schema.id_columns, [], ["plan"])
    assert moved.key() != schema.key()
