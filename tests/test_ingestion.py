"""Tests for beryl.data.ingestion: new-file detection, cleaning, deduplication and quarantine."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from beryl import config
from beryl.config import Settings
from beryl.data import rowhash
from beryl.data.cleaning import clean_dataset
from beryl.data.csvfiles import read_csv_bytes
from beryl.data.dataset import Dataset
from beryl.data.ingestion import IngestionResult, ingest
from beryl.data.manifest import FileRecord
from beryl.data.scan import scan_input
from beryl.data.schema import Schema
from beryl.errors import DataError, SchemaError

HEADER = "corporation,lastmonth_activity,lastyear_activity,number_of_employees,exited\n"
NUMERIC = ["lastmonth_activity", "lastyear_activity", "number_of_employees"]
DEMO_SCHEMA = Schema("exited", 1, ["corporation"], NUMERIC, [])

MakeWorkspace = Callable[..., Settings]


def new_workspace(root: Path, **overrides: Any) -> Settings:
    """A minimal workspace: config.json with input folder ``in`` (and any overrides)."""
    data: dict[str, Any] = {"input_folder_path": "in", **overrides}
    root.mkdir(parents=True, exist_ok=True)
    (root / "in").mkdir(exist_ok=True)
    (root / "config.json").write_text(json.dumps(data), encoding="utf-8")
    return config.load(root / "config.json", environ={})


@pytest.fixture
def make_ws(tmp_path: Path) -> MakeWorkspace:
    def make(**overrides: Any) -> Settings:
        return new_workspace(tmp_path / "ws", **overrides)

    return make


def put(settings: Settings, name: str, text: str) -> Path:
    path = settings.input_folder / name
    path.write_text(text, encoding="utf-8")
    return path


def by_name(result: IngestionResult) -> dict[str, FileRecord]:
    return {r.name: r for r in result.records}


def snapshot_lines(settings: Settings) -> list[str]:
    return (settings.output_folder / "finaldata.csv").read_text(encoding="utf-8").splitlines()


def ingested_names(settings: Settings) -> list[str]:
    text = (settings.output_folder / "ingestedfiles.txt").read_text(encoding="utf-8")
    return text.splitlines()


# --- the original sample data ---------------------------------------------------------------


def test_original_practice_data_gives_26_unique_rows(tmp_path: Path, udacity: Path) -> None:
    practice = tmp_path / "practicedata"
    practice.mkdir()
    for source in sorted((udacity / "practicedata").glob("*.csv")):
        shutil.copyfile(source, practice / source.name)
    (tmp_path / "config.json").write_text(json.dumps({"input_folder_path": "practicedata"}))
    settings = config.load(tmp_path / "config.json", environ={})

    result = ingest(settings)

    assert not result.partial
    assert sorted(r.name for r in result.ingested) == ["dataset1.csv", "dataset2.csv"]
    assert result.rows_added == 26
    assert result.dataset_rows == 26
    dataset = Dataset(settings.output_folder)
    assert dataset.rows == 26
    frame = dataset.read()
    assert len(frame) == 26
    assert not frame.duplicated().any()
    lines = snapshot_lines(settings)
    assert len(lines) == 27
    assert lines[0].replace('"', "") == HEADER.strip()
    assert len(set(lines[1:])) == 26
    assert sorted(ingested_names(settings)) == ["dataset1.csv", "dataset2.csv"]
    # the same rows the original approach (concat + drop_duplicates) finds
    original = pd.concat([pd.read_csv(p) for p in sorted(practice.glob("*.csv"))])
    expected = original.drop_duplicates().astype({c: "float64" for c in NUMERIC})
    got = frame.astype({"corporation": object})
    key = ["corporation", *NUMERIC, "exited"]
    pd.testing.assert_frame_equal(
        got.sort_values(key).reset_index(drop=True)[key],
        expected.sort_values(key).reset_index(drop=True)[key],
        check_dtype=False,
    )
    # the originals are untouched
    for source in (udacity / "practicedata").glob("*.csv"):
        assert (practice / source.name).read_bytes() == source.read_bytes()


def test_demo_workspace_dataset_is_the_deduplicated_union(workspace: Settings) -> None:
    result = ingest(workspace)

    sources = sorted(workspace.input_folder.glob("*.csv"))
    assert sorted(r.name for r in result.ingested) == [p.name for p in sources]
    union = pd.concat([pd.read_csv(p) for p in sources], ignore_index=True)
    assert result.dataset_rows == len(union.drop_duplicates())
    read = {r.name: r.rows_read for r in result.records}
    assert read == {p.name: len(pd.read_csv(p)) for p in sources}
    assert sum(r.rows_kept for r in result.records) == result.rows_added


# --- idempotence (property) ------------------------------------------------------------------

_cell = st.one_of(st.none(), st.integers(0, 3), st.sampled_from([0.5, 2.25]))
_row = st.tuples(st.sampled_from(["aa", "bb", "cc"]), _cell, _cell, _cell, st.sampled_from([0, 1]))
_file = st.lists(_row, min_size=1, max_size=6)


def _csv(rows: list[tuple[Any, ...]]) -> str:
    def cell(value: Any) -> str:
        return "" if value is None else str(value)

    return HEADER + "".join(",".join(cell(v) for v in row) + "\n" for row in rows)


def _state(settings: Settings) -> tuple[Any, ...]:
    manifest = json.loads((settings.output_folder / "dataset.json").read_text())
    return (
        manifest["files"],
        manifest["batches"],
        (settings.output_folder / "finaldata.csv").read_bytes(),
        (settings.output_folder / "ingestedfiles.txt").read_bytes(),
        Dataset(settings.output_folder).rows,
        sorted(p.name for p in (settings.output_folder / "batches").iterdir()),
    )


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(files=st.lists(_file, min_size=1, max_size=3))
def test_ingesting_the_same_files_twice_changes_nothing(files: list[list[Any]]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        ws = new_workspace(Path(tmp) / "ws")
        for index, rows in enumerate(files):
            put(ws, f"part{index}.csv", _csv(rows))

        first = ingest(ws)
        assert not first.partial, [r.reason for r in first.quarantined]
        before = _state(ws)
        second = ingest(ws)

        assert _state(ws) == before
        assert second.records == []
        assert second.batch is None
        assert second.rows_added == 0
        assert sorted(second.unchanged) == sorted(f"part{i}.csv" for i in range(len(files)))
        # and the dataset holds each distinct row once
        union = pd.concat(
            [pd.read_csv(p) for p in sorted(ws.input_folder.glob("*.csv"))], ignore_index=True
        )
        assert first.dataset_rows == len(union.drop_duplicates())
        assert not Dataset(ws.output_folder).read().duplicated().any()


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(files=st.lists(_file, min_size=2, max_size=3))
def test_one_pass_or_one_file_per_pass_gives_the_same_rows(files: list[list[Any]]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        together = new_workspace(Path(tmp) / "together")
        apart = new_workspace(Path(tmp) / "apart")
        for index, rows in enumerate(files):
            put(together, f"part{index}.csv", _csv(rows))
        ingest(together)
        for index, rows in enumerate(files):
            put(apart, f"part{index}.csv", _csv(rows))
            assert not ingest(apart).partial

        key = ["corporation", *NUMERIC, "exited"]
        one = Dataset(together.output_folder).read().sort_values(key, na_position="first")
        many = Dataset(apart.output_folder).read().sort_values(key, na_position="first")
        pd.testing.assert_frame_equal(one.reset_index(drop=True), many.reset_index(drop=True))
        assert len(Dataset(apart.output_folder).batches) <= len(files)


# --- changed files, renamed copies, duplicate rows ---------------------------------------------


def test_resent_file_with_changed_content_adds_only_new_rows(make_ws: MakeWorkspace) -> None:
    ws = make_ws()
    put(ws, "a.csv", HEADER + "aaa,1,2,3,0\nbbb,4,5,6,1\n")
    first = ingest(ws)
    assert first.rows_added == 2

    put(ws, "a.csv", HEADER + "aaa,1,2,3,0\nbbb,4,5,6,1\nccc,7,8,9,0\n")
    second = ingest(ws)

    record = by_name(second)["a.csv"]
    assert record.status == "ingested"
    assert (record.rows_read, record.rows_kept) == (3, 1)
    assert second.rows_added == 1
    assert second.dataset_rows == 3
    frame = Dataset(ws.output_folder).read()
    assert sorted(frame["corporation"]) == ["aaa", "bbb", "ccc"]
    assert len(snapshot_lines(ws)) == 4
    assert ingested_names(ws) == ["a.csv"]
    assert len(Dataset(ws.output_folder).files) == 2  # both versions are on record


def test_renamed_copy_is_a_duplicate_file_and_adds_nothing(make_ws: MakeWorkspace) -> None:
    ws = make_ws()
    original = put(ws, "a.csv", HEADER + "aaa,1,2,3,0\nbbb,4,5,6,1\n")
    ingest(ws)
    manifest_before = Dataset(ws.output_folder).batches

    shutil.copyfile(original, ws.input_folder / "copy_of_a.csv")
    result = ingest(ws)

    record = by_name(result)["copy_of_a.csv"]
    assert record.status == "duplicate-file"
    assert record.rows_kept == 0
    assert "a.csv" in (record.reason or "")
    assert result.batch is None
    assert result.dataset_rows == 2
    assert Dataset(ws.output_folder).batches == manifest_before
    assert ingested_names(ws) == ["a.csv"]
    assert not result.partial
    # and the duplicate is not reconsidered next time
    again = ingest(ws)
    assert again.records == []
    assert "copy_of_a.csv" in again.unchanged


def test_renamed_copy_in_the_same_pass_is_a_duplicate_file(make_ws: MakeWorkspace) -> None:
    ws = make_ws()
    put(ws, "a.csv", HEADER + "aaa,1,2,3,0\n")
    put(ws, "b.csv", HEADER + "aaa,1,2,3,0\n")
    result = ingest(ws)
    assert by_name(result)["a.csv"].status == "ingested"
    assert by_name(result)["b.csv"].status == "duplicate-file"
    assert ingested_names(ws) == ["a.csv"]


def test_duplicate_rows_within_and_across_files_are_kept_once(make_ws: MakeWorkspace) -> None:
    ws = make_ws()
    put(ws, "a.csv", HEADER + "aaa,1,2,3,0\naaa,1,2,3,0\nbbb,4,,6,1\nbbb,4,,6,1\n")
    put(ws, "b.csv", HEADER + "bbb,4,,6,1\nccc,7,8,9,0\naaa,1,2,3,0\n")
    put(ws, "c.csv", HEADER + "aaa,1,2,3,0\n")

    result = ingest(ws)

    records = by_name(result)
    assert (records["a.csv"].rows_read, records["a.csv"].rows_kept) == (4, 2)
    assert (records["b.csv"].rows_read, records["b.csv"].rows_kept) == (3, 1)
    assert (records["c.csv"].rows_read, records["c.csv"].rows_kept) == (1, 0)
    assert result.rows_added == 3
    assert result.batch is not None
    assert result.batch.rows == 3
    assert all(r.batch == result.batch.id for r in records.values())
    frame = Dataset(ws.output_folder).read()
    assert frame["corporation"].tolist() == ["aaa", "bbb", "ccc"]
    assert len(snapshot_lines(ws)) == 4


def test_rows_already_in_the_dataset_are_not_added_again(make_ws: MakeWorkspace) -> None:
    ws = make_ws()
    put(ws, "a.csv", HEADER + "aaa,1,2,3,0\nbbb,4,5,6,1\n")
    ingest(ws)
    put(ws, "b.csv", HEADER + "bbb,4,5,6,1\n aaa ,1.0,2,3,0\n")

    result = ingest(ws)

    record = by_name(result)["b.csv"]
    assert (record.status, record.rows_read, record.rows_kept) == ("ingested", 2, 0)
    assert record.batch is None
    assert result.batch is None
    assert Dataset(ws.output_folder).rows == 2
    assert ingested_names(ws) == ["a.csv", "b.csv"]


# --- quarantine --------------------------------------------------------------------------------

GOOD = HEADER + "good,1,2,3,0\n"


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("", ["bad.csv", "empty"]),
        ("\n\n", ["bad.csv", "empty"]),
        (HEADER, ["bad.csv", "no data rows"]),
        (
            "corporation,lastmonth_activity,lastyear_activity,number_of_employees\nx,1,2,3\n",
            ["bad.csv", "missing column", "exited"],
        ),
        (HEADER + "x,1,2,3,0\ny,1,oops,3,1\n", ["bad.csv", "'lastyear_activity'", "row 2", "oops"]),
        (HEADER + "x,1,2,3,0\ny,1,2,3,\nz,1,2,3,  \n", ["bad.csv", "'exited'", "rows 2, 3"]),
        (HEADER + "x,1,2,3,0\ny,1,2,3\n", ["bad.csv", "Expected 5 columns", "y,1,2,3"]),
        (HEADER + "x,1,2,3,0,extra\n", ["bad.csv", "Expected 5 columns", "x,1,2,3,0,extra"]),
        (HEADER + "x,1,2,3,maybe\n", ["bad.csv", "'exited'", "row 1", "maybe"]),
        (HEADER + "x,1,2,3,0.5\n", ["bad.csv", "'exited'", "row 1"]),
        (HEADER + "x,1,inf,3,0\n", ["bad.csv", "'lastyear_activity'", "infinite", "row 1"]),
        (HEADER.replace("exited", "corporation"), ["bad.csv", "corporation"]),
    ],
    ids=[
        "empty",
        "blank-lines",
        "header-only",
        "no-target",
        "text-in-numeric",
        "blank-label",
        "short-row",
        "long-row",
        "text-label",
        "fractional-label",
        "infinite",
        "duplicate-column",
    ],
)
def test_bad_file_is_quarantined_left_in_place_and_good_files_go_in(
    make_ws: MakeWorkspace, content: str, expected: list[str]
) -> None:
    ws = make_ws()
    put(ws, "first.csv", HEADER + "seed,9,9,9,1\n")
    ingest(ws)  # fixes the schema
    bad = put(ws, "bad.csv", content)
    put(ws, "good.csv", GOOD)
    before = bad.read_bytes()

    result = ingest(ws)

    record = by_name(result)["bad.csv"]
    assert record.status == "quarantined"
    assert record.rows_kept == 0
    reason = record.reason or ""
    for part in expected:
        assert part in reason, f"{part!r} not in {reason!r}"
    assert result.partial
    assert bad.read_bytes() == before
    assert by_name(result)["good.csv"].status == "ingested"
    assert result.rows_added == 1
    assert result.dataset_rows == 2
    assert ingested_names(ws) == ["first.csv", "good.csv"]
    stored = Dataset(ws.output_folder).files
    assert [f.status for f in stored if f.name == "bad.csv"] == ["quarantined"]


def test_bad_file_in_the_first_pass_does_not_stop_the_good_ones(make_ws: MakeWorkspace) -> None:
    ws = make_ws()
    put(ws, "a_empty.csv", "")
    put(ws, "b_no_label.csv", "corporation,lastmonth_activity\nx,1\n")
    put(ws, "c_good.csv", GOOD)

    result = ingest(ws)

    assert [r.name for r in result.quarantined] == ["a_empty.csv", "b_no_label.csv"]
    assert [r.name for r in result.ingested] == ["c_good.csv"]
    assert Dataset(ws.output_folder).schema == DEMO_SCHEMA


def test_symlink_and_directory_named_csv_are_quarantined(
    make_ws: MakeWorkspace, tmp_path: Path
) -> None:
    ws = make_ws()
    outside = tmp_path / "secret.csv"
    outside.write_text(HEADER + "leak,1,2,3,0\n")
    link = ws.input_folder / "link.csv"
    link.symlink_to(outside)
    folder = ws.input_folder / "folder.csv"
    folder.mkdir()
    put(ws, "good.csv", GOOD)

    result = ingest(ws)

    records = by_name(result)
    assert records["link.csv"].status == "quarantined"
    assert "symbolic link" in (records["link.csv"].reason or "")
    assert records["folder.csv"].status == "quarantined"
    assert "not a regular file" in (records["folder.csv"].reason or "")
    assert records["good.csv"].status == "ingested"
    frame = Dataset(ws.output_folder).read()
    assert frame["corporation"].tolist() == ["good"]
    assert link.is_symlink()
    assert link.resolve() == outside.resolve()
    assert outside.read_text() == HEADER + "leak,1,2,3,0\n"
    assert folder.is_dir()
    # not recorded again while unchanged
    assert ingest(ws).records == []


def test_quarantined_file_is_retried_once_fixed(make_ws: MakeWorkspace) -> None:
    ws = make_ws()
    put(ws, "a.csv", GOOD)
    ingest(ws)
    put(ws, "b.csv", HEADER + "x,1,oops,3,0\n")
    assert by_name(ingest(ws))["b.csv"].status == "quarantined"

    unchanged = ingest(ws)
    assert unchanged.records == []
    assert "b.csv" in unchanged.unchanged

    put(ws, "b.csv", HEADER + "x,1,2,3,0\n")
    fixed = ingest(ws)

    record = by_name(fixed)["b.csv"]
    assert (record.status, record.rows_read, record.rows_kept) == ("ingested", 1, 1)
    assert not fixed.partial
    assert fixed.dataset_rows == 2
    assert ingested_names(ws) == ["a.csv", "b.csv"]
    statuses = [f.status for f in Dataset(ws.output_folder).files if f.name == "b.csv"]
    assert statuses == ["quarantined", "ingested"]


def test_only_csv_files_are_read(make_ws: MakeWorkspace) -> None:
    ws = make_ws()
    put(ws, "a.csv", GOOD)
    put(ws, "B.CSV", HEADER + "upper,1,2,3,0\n")
    put(ws, "notes.txt", "not data")
    put(ws, "data.csv.bak", HEADER + "backup,1,2,3,0\n")
    put(ws, "noextension", HEADER + "noext,1,2,3,0\n")

    result = ingest(ws)

    assert sorted(r.name for r in result.records) == ["B.CSV", "a.csv"]
    assert sorted(Dataset(ws.output_folder).read()["corporation"]) == ["good", "upper"]


def test_missing_input_folder_is_a_data_error(make_ws: MakeWorkspace) -> None:
    ws = make_ws()
    ws.input_folder.rmdir()
    with pytest.raises(DataError, match=re.escape(str(ws.input_folder))):
        ingest(ws)


def test_nothing_new_writes_nothing(make_ws: MakeWorkspace) -> None:
    ws = make_ws()
    result = ingest(ws)
    assert result.records == []
    assert not result.changed
    assert not (ws.output_folder / "dataset.json").exists()


# --- alignment and cleaning through ingest ----------------------------------------------------


def test_columns_are_aligned_by_name(make_ws: MakeWorkspace) -> None:
    ws = make_ws()
    put(ws, "a.csv", HEADER + "aaa,1,2,3,0\n")
    ingest(ws)
    put(
        ws,
        "b.csv",
        "exited,note,number_of_employees,corporation,lastyear_activity,lastmonth_activity\n"
        "1,hello,30,bbb,20,10\n"
        "0,again,3,aaa,2,1\n",
    )

    result = ingest(ws)

    record = by_name(result)["b.csv"]
    assert (record.status, record.rows_read, record.rows_kept) == ("ingested", 2, 1)
    frame = Dataset(ws.output_folder).read()
    assert list(frame.columns) == DEMO_SCHEMA.columns
    row = frame[frame["corporation"] == "bbb"].iloc[0]
    assert (row["lastmonth_activity"], row["lastyear_activity"]) == (10.0, 20.0)
    assert (row["number_of_employees"], row["exited"]) == (30.0, 1)
    assert snapshot_lines(ws)[-1] == '"bbb",10,20,30,1'


def test_blanks_in_numeric_columns_are_missing_and_text_is_trimmed(
    make_ws: MakeWorkspace,
) -> None:
    ws = make_ws()
    put(ws, "a.csv", HEADER + "  aaa  ,1,,3,0\nbbb, 4 , ,,1\n")

    result = ingest(ws)

    assert not result.partial, [r.reason for r in result.quarantined]
    frame = Dataset(ws.output_folder).read()
    assert frame["corporation"].tolist() == ["aaa", "bbb"]
    assert frame["lastmonth_activity"].tolist() == [1.0, 4.0]
    assert frame["lastyear_activity"].isna().all()
    assert frame["number_of_employees"].isna().tolist() == [False, True]
    assert snapshot_lines(ws)[1:] == ['"aaa",1,,3,0', '"bbb",4,,,1']


def test_string_label_and_categorical_column(make_ws: MakeWorkspace) -> None:
    ws = make_ws(target="churned", positive_label="Yes", id_columns=["id"])
    put(ws, "a.csv", "id,plan,spend,churned\nc1, gold ,10,Yes\nc2,silver,,No\nc3,gold,7.5, No \n")

    result = ingest(ws)

    assert not result.partial, [r.reason for r in result.quarantined]
    dataset = Dataset(ws.output_folder)
    assert dataset.schema == Schema("churned", "Yes", ["id"], ["spend"], ["plan"])
    frame = dataset.read()
    assert frame["plan"].tolist() == ["gold", "silver", "gold"]
    assert frame["churned"].tolist() == ["Yes", "No", "No"]
    assert frame["spend"].isna().tolist() == [False, True, False]
    assert pd.api.types.is_string_dtype(frame["churned"])
    assert pd.api.types.is_float_dtype(frame["spend"])
    # the same text labels in a later file are not refused as non-integers
    put(ws, "b.csv", "id,plan,spend,churned\nc4,bronze,1,Yes\n")
    assert by_name(ingest(ws))["b.csv"].status == "ingested"


def test_identifier_text_is_kept_as_written(make_ws: MakeWorkspace) -> None:
    ws = make_ws()
    put(ws, "a.csv", HEADER + "007,1,2,3,0\n0123,4,5,6,1\n")
    put(ws, "b.csv", HEADER + "007,1,2,3,0\n12.5,4,5,6,1\n")

    result = ingest(ws)

    frame = Dataset(ws.output_folder).read()
    assert sorted(frame["corporation"]) == ["007", "0123", "12.5"]
    assert by_name(result)["b.csv"].rows_kept == 1


# --- clean_dataset directly --------------------------------------------------------------------


def test_clean_dataset_types_and_column_order() -> None:
    raw = read_csv_bytes(
        b"exited,extra,number_of_employees,lastyear_activity,lastmonth_activity,corporation\n"
        b"1,x, 3 ,,1.5, abc \n0,y,4,2,7,def\n",
        "in.csv",
    )

    out = clean_dataset(raw, DEMO_SCHEMA, "in.csv")

    assert list(out.columns) == DEMO_SCHEMA.columns
    assert isinstance(out.index, pd.RangeIndex)
    assert pd.api.types.is_string_dtype(out["corporation"])
    for column in NUMERIC:
        assert out[column].dtype == np.float64
    assert out["exited"].dtype == np.int64
    assert out["corporation"].tolist() == ["abc", "def"]
    assert out["number_of_employees"].tolist() == [3.0, 4.0]
    assert np.isnan(out["lastyear_activity"].iloc[0])
    assert out["exited"].tolist() == [1, 0]


def test_clean_dataset_accepts_a_bom_and_padded_header() -> None:
    raw = pd.DataFrame(
        {
            "\ufeffcorporation": ["a"],
            " lastmonth_activity ": ["1"],
            "lastyear_activity": [2],
            "number_of_employees": [3.0],
            "exited": ["1"],
        }
    )
    out = clean_dataset(raw, DEMO_SCHEMA, "bom.csv")
    assert list(out.columns) == DEMO_SCHEMA.columns
    assert out.iloc[0].tolist() == ["a", 1.0, 2.0, 3.0, 1]


def test_clean_dataset_errors_name_source_column_and_rows() -> None:
    raw = pd.DataFrame(
        {
            "corporation": list("abcdefgh"),
            "lastmonth_activity": ["1", "x", "3", "y", "5", "z", "w", "v"],
            "lastyear_activity": [1.0] * 8,
            "number_of_employees": [1.0] * 8,
            "exited": [0] * 8,
        }
    )
    with pytest.raises(SchemaError) as info:
        clean_dataset(raw, DEMO_SCHEMA, "upload.csv")
    message = str(info.value)
    assert message.startswith("upload.csv: ")
    assert "'lastmonth_activity'" in message
    assert "rows 2, 4, 6, 7, 8" in message

    raw["lastmonth_activity"] = "1"
    raw["exited"] = pd.Series([0, 1, None, 1, "", 0, None, " "], dtype=object)
    with pytest.raises(SchemaError) as info:
        clean_dataset(raw, DEMO_SCHEMA, "upload.csv")
    message = str(info.value)
    assert "'exited'" in message
    assert "rows 3, 5, 7, 8" in message


def test_clean_dataset_shortens_long_row_lists() -> None:
    raw = pd.DataFrame(
        {
            "corporation": ["a"] * 9,
            "lastmonth_activity": ["bad"] * 9,
            "lastyear_activity": [1.0] * 9,
            "number_of_employees": [1.0] * 9,
            "exited": [0] * 9,
        }
    )
    with pytest.raises(SchemaError, match=r"rows 1, 2, 3, 4, 5 and 4 more"):
        clean_dataset(raw, DEMO_SCHEMA, "big.csv")


def test_clean_dataset_names_missing_columns() -> None:
    raw = pd.DataFrame({"corporation": ["a"], "exited": [1]})
    with pytest.raises(SchemaError) as info:
        clean_dataset(raw, DEMO_SCHEMA, "thin.csv")
    message = str(info.value)
    assert message.startswith("thin.csv: missing column(s)")
    for column in NUMERIC:
        assert column in message


def test_clean_dataset_string_label_keeps_text() -> None:
    schema = Schema("churned", "Yes", ["id"], ["spend"], ["plan"])
    raw = pd.DataFrame(
        {"id": [1, 2], "plan": [" a", "b "], "spend": ["", "2"], "churned": ["Yes ", "No"]}
    )
    out = clean_dataset(raw, schema, "s.csv")
    assert out["churned"].tolist() == ["Yes", "No"]
    assert out["plan"].tolist() == ["a", "b"]
    assert out["id"].tolist() == ["1", "2"]
    assert pd.api.types.is_string_dtype(out["plan"])
    assert out["spend"].isna().tolist() == [True, False]


@pytest.mark.parametrize("data", [b"", b"   \n", b'"unterminated\n'])
def test_read_csv_bytes_refuses_unreadable_input(data: bytes) -> None:
    with pytest.raises(SchemaError, match=r"weird\.csv"):
        read_csv_bytes(data, "weird.csv")


def test_progress_reports_each_new_file(make_ws: MakeWorkspace) -> None:
    ws = make_ws()
    put(ws, "a.csv", GOOD)
    put(ws, "b.csv", HEADER + "other,1,2,3,1\n")
    calls: list[tuple[str, int, int]] = []

    ingest(ws, progress=lambda name, done, total: calls.append((name, done, total)))

    assert calls == [("a.csv", 0, 2), ("b.csv", 1, 2), ("", 2, 2)]


def test_ingestion_record_has_hash_size_and_time(make_ws: MakeWorkspace) -> None:
    ws = make_ws()
    path = put(ws, "a.csv", GOOD)

    ingest(ws)

    (record,) = Dataset(ws.output_folder).files
    assert record.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert record.size == path.stat().st_size
    assert record.time.endswith("Z")
    assert (record.name, record.status) == ("a.csv", "ingested")


def test_fresh_files_are_read_again_until_their_times_have_settled(workspace: Settings) -> None:
    """A time within the settle period of the listing is not trusted: modification or change."""
    folder = workspace.input_folder
    old = time.time() - 3600
    for path in folder.glob("*.csv"):
        os.utime(path, (old, old))  # an old modification time, but a change time of now
    first = ingest(workspace)
    assert all(r.mtime_ns is not None and r.ctime_ns is None for r in first.ingested)
    again = scan_input(workspace, read_new=False)
    assert sorted(c.name for c in again.new) == ["dataset1.csv", "dataset2.csv", "dataset3.csv"]

    fresh = folder / "fresh.csv"
    fresh.write_text(HEADER + "f-1,1,2,3,0\n")
    ingest(workspace)
    record = next(r for r in Dataset(workspace.output_folder).files if r.name == "fresh.csv")
    assert record.mtime_ns is None  # changed moments ago: its time is not trusted
    fresh.write_text(HEADER + "f-2,1,2,3,0\n")  # same size, possibly the same coarse time
    scan = scan_input(workspace)
    assert [c.name for c in scan.new] == ["fresh.csv"]


@pytest.fixture
def settled(monkeypatch: pytest.MonkeyPatch) -> None:
    """Trust file times however fresh: in these tests every file was written before it is
    listed, and nothing writes it while it is read."""
    from beryl.data import scan

    monkeypatch.setattr(scan, "_SETTLE_NS", 0)


def _rewrite_in_place(path: Path, data: bytes) -> None:
    """New content of the same size into the same inode, the old times put back."""
    info = path.stat()
    with path.open("r+b") as handle:
        handle.write(data)
    os.utime(path, ns=(info.st_atime_ns, info.st_mtime_ns))


def _replace_with(path: Path, data: bytes) -> None:
    """A new file of the same size and modification time renamed over the old one."""
    info = path.stat()
    new = path.with_name(".new-" + path.name)
    new.write_bytes(data)
    os.utime(new, ns=(info.st_atime_ns, info.st_mtime_ns))
    os.replace(new, path)


@pytest.mark.parametrize(
    "rewrite", [_rewrite_in_place, _replace_with], ids=["same-inode", "replaced"]
)
def test_a_file_rewritten_with_the_same_size_and_times_is_read_again(
    make_ws: MakeWorkspace, settled: None, rewrite: Callable[[Path, bytes], None]
) -> None:
    ws = make_ws()
    path = put(ws, "a.csv", HEADER + "aaa,1,2,3,0\n")
    put(ws, "b.csv", HEADER + "bbb,4,5,6,1\n")
    old = time.time() - 3600
    os.utime(path, (old, old))
    ingest(ws)
    before = path.stat()

    rewrite(path, (HEADER + "zzz,7,8,9,0\n").encode())  # same size, same modification time
    after = path.stat()
    assert (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns)

    result = ingest(ws)

    record = by_name(result)["a.csv"]
    assert (record.status, record.rows_kept) == ("ingested", 1)
    assert (record.ino, record.ctime_ns) == (after.st_ino, after.st_ctime_ns)
    assert sorted(Dataset(ws.output_folder).read()["corporation"]) == ["aaa", "bbb", "zzz"]
    assert "b.csv" in result.unchanged and "b.csv" not in by_name(result)


def test_a_touched_file_is_read_once_then_listed_again(
    make_ws: MakeWorkspace, settled: None
) -> None:
    """Same content under a new identity (touched, chmod, copied back): read and hashed once,
    its record takes the new identity, and the next pass does not read it."""
    ws = make_ws()
    path = put(ws, "a.csv", HEADER + "aaa,1,2,3,0\n")
    ingest(ws)
    os.utime(path, (time.time() - 60, time.time() - 60))

    touched = ingest(ws)

    assert touched.records == [] and touched.unchanged == ["a.csv"]
    (record,) = Dataset(ws.output_folder).files
    assert (record.mtime_ns, record.ctime_ns) == (path.stat().st_mtime_ns, path.stat().st_ctime_ns)
    scan = scan_input(ws, read_new=False)
    assert (scan.new, scan.known) == ([], ["a.csv"])


def test_a_record_without_identity_is_read_again_once(
    make_ws: MakeWorkspace, settled: None
) -> None:
    """A dataset recorded by an older Beryl (name, size, mtime only) still loads; each file is
    read again once, found unchanged, and its identity recorded."""
    ws = make_ws()
    put(ws, "a.csv", HEADER + "aaa,1,2,3,0\n")
    ingest(ws)
    manifest_path = ws.output_folder / "dataset.json"
    manifest = json.loads(manifest_path.read_text())
    for record in manifest["files"]:
        for key in ("ctime_ns", "dev", "ino", "schema_key"):
            record.pop(key, None)
    manifest_path.write_text(json.dumps(manifest))

    assert [c.name for c in scan_input(ws, read_new=False).new] == ["a.csv"]
    assert ingest(ws).records == []
    assert scan_input(ws, read_new=False).known == ["a.csv"]


_COUNT_OPENS = """
import json, os, sys
from pathlib import Path
folder = os.path.realpath(sys.argv[2])
opened = []
def hook(event, args):
    if event == "open" and isinstance(args[0], (str, bytes, os.PathLike)):
        path = os.path.realpath(os.fsdecode(args[0]))
        if path.startswith(folder + os.sep):
            opened.append(path)
sys.addaudithook(hook)
from beryl import config
from beryl.data.ingestion import ingest
from beryl.data.scan import scan_input
settings = config.load(Path(sys.argv[1]), environ={})
scan = scan_input(settings)
result = ingest(settings)
print(json.dumps({"opened": opened, "known": scan.known, "records": len(result.records)}))
"""


def test_a_pass_over_an_unchanged_folder_opens_no_file(
    make_ws: MakeWorkspace, settled: None
) -> None:
    """Counted by the interpreter's audit hook in a fresh process: no input file is opened."""
    import subprocess
    import sys

    ws = make_ws()
    for index in range(5):
        put(ws, f"part{index}.csv", HEADER + f"c{index},1,2,3,{index % 2}\n")
    assert len(ingest(ws).ingested) == 5

    done = subprocess.run(
        [sys.executable, "-c", _COUNT_OPENS, str(ws.config_path), str(ws.input_folder)],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )

    outcome = json.loads(done.stdout)
    assert outcome == {
        "opened": [],
        "known": [f"part{i}.csv" for i in range(5)],
        "records": 0,
    }


@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.integers(0, 2**64 - 1), max_size=50),
    st.lists(st.integers(0, 2**64 - 1), max_size=50),
)
def test_membership_against_the_sorted_index_matches_isin(
    existing: list[int], new: list[int]
) -> None:
    from beryl.data.deduplication import _contains

    known = np.sort(np.array(existing, dtype=np.uint64))
    probe = np.array(new + existing[:5], dtype=np.uint64)
    assert _contains(known, probe).tolist() == np.isin(probe, known).tolist()


# --- the fast Arrow path agrees with the careful path --------------------------------------------
_ID_CELLS = [
    "a",
    "b",
    " a",
    "a ",
    "",
    "NA",
    "null",
    '"x, y"',
    '"two\nlines"',
    "007",
    "\u00a0z",
    "z\x1f",
]
_NUMBER_CELLS = ["1", "1.5", "-0", "1e3", "", "NA", " 5", "inf", "-Infinity", "1e400", "abc", "nan"]
_LABEL_CELLS = ["0", "1", "1.0", " 1", "", "2", "9007199254740993", "+1", "-0"]
_headers = st.sampled_from(
    [
        HEADER,
        "exited,corporation,number_of_employees,lastyear_activity,lastmonth_activity,extra\n",
        '"corporation","lastmonth_activity","lastyear_activity","number_of_employees","exited"\n',
        "corporation, lastmonth_activity,lastyear_activity,number_of_employees,exited\n",
        "\ufeff" + HEADER,
    ]
)
_cells = st.tuples(
    st.sampled_from(_ID_CELLS),
    st.sampled_from(_NUMBER_CELLS),
    st.sampled_from(_NUMBER_CELLS),
    st.sampled_from(_NUMBER_CELLS),
    st.sampled_from(_LABEL_CELLS),
)


def _file_text(header: str, rows: list[tuple[str, ...]], newline: str) -> bytes:
    names = [n.strip().strip('"').lstrip("\ufeff") for n in header.strip("\n").split(",")]
    order = ["corporation", *NUMERIC, "exited"]
    lines = []
    for row in rows:
        values = dict(zip(order, row, strict=True))
        lines.append(",".join(values.get(name, "9") for name in names))
    return (header.replace("\n", newline) + newline.join(lines) + newline).encode()


@settings(max_examples=300, deadline=None)
@given(_headers, st.lists(_cells, min_size=1, max_size=8), st.sampled_from(["\n", "\r\n"]))
def test_fast_path_gives_what_the_careful_path_gives(
    header: str, rows: list[tuple[str, ...]], newline: str
) -> None:
    """Whenever Arrow's direct parse is used, it equals the careful path's result exactly."""
    from beryl.data.cleaning import to_arrow
    from beryl.data.reading import _read_typed

    data = _file_text(header, rows, newline)
    fast = _read_typed(data, DEMO_SCHEMA)
    try:
        raw = read_csv_bytes(data, "f.csv", DEMO_SCHEMA.text_columns)
        careful = to_arrow(clean_dataset(raw, DEMO_SCHEMA, "f.csv"), DEMO_SCHEMA)
    except SchemaError:
        careful = None
    if fast is not None:
        assert careful is not None, data
        assert fast.schema == careful.schema
        assert fast.to_pylist() == careful.to_pylist(), data


def test_plain_files_take_the_fast_path() -> None:
    from beryl.data.reading import _read_typed

    for data in [
        (HEADER + "a,1,2,3,0\nb,,2.5,3,1\n").encode(),
        (HEADER + "a,1,2,3,0\r\nb,NA,2.5,3,1\r\n").encode(),
        (
            b'"corporation","lastmonth_activity","lastyear_activity","number_of_employees","exited"\n'
            b'"x, y",1,2,3,0\n'
        ),
    ]:
        table = _read_typed(data, DEMO_SCHEMA)
        assert table is not None, data
        assert table.num_rows == 2 if b"b," in data else 1


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(files=st.lists(_file, min_size=2, max_size=4), group=st.integers(1, 3000))
def test_the_group_size_changes_nothing(files: list[list[Any]], group: int) -> None:
    """Files are deduplicated a group at a time; any grouping gives the same batch."""
    from unittest import mock

    from beryl.data import deduplication

    with tempfile.TemporaryDirectory() as tmp:
        results = []
        for name, size in (("one", 10**9), ("small", group)):
            ws = new_workspace(Path(tmp) / name)
            for index, rows in enumerate(files):
                put(ws, f"part{index}.csv", _csv(rows))
            with mock.patch.object(deduplication, "_GROUP_BYTES", size):
                result = ingest(ws)
            kept = [(r.name, r.rows_read, r.rows_kept) for r in result.ingested]
            results.append((kept, Dataset(ws.output_folder).read()))
        assert results[0][0] == results[1][0]
        pd.testing.assert_frame_equal(results[0][1], results[1][1])


def test_rows_already_stored_are_found_in_a_dataset_hashed_by_an_older_version(
    make_ws: MakeWorkspace,
) -> None:
    """A dataset whose row hashes came from another hash function is hashed again first."""
    ws = make_ws()
    put(ws, "a.csv", HEADER + "a,1,2,3,0\nb,4,5,6,1\n")
    ingest(ws)
    dataset = Dataset(ws.output_folder)
    manifest = json.loads(dataset.manifest_path.read_text())
    manifest.pop("row_hash")  # as written before row_hash existed
    dataset.manifest_path.write_text(json.dumps(manifest))
    for batch in dataset.batches:  # hashes no current row has
        np.save(dataset.hashes_path(batch.id), np.array([1, 2], dtype=np.uint64))

    put(ws, "b.csv", HEADER + "a,1,2,3,0\nc,7,8,9,0\n")
    result = ingest(ws)

    assert result.rows_added == 1
    assert Dataset(ws.output_folder).manifest.row_hash == rowhash.VERSION
    assert not Dataset(ws.output_folder).read().duplicated().any()


def test_unreadable_file_is_quarantined_and_retried_once_changed(make_ws: MakeWorkspace) -> None:
    from unittest import mock

    from beryl.data import inputfile

    ws = make_ws()
    path = put(ws, "locked.csv", HEADER + "a,1,2,3,0\n")
    real_open = os.open

    def refusing_open(name: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        if os.path.basename(name) == "locked.csv":
            raise PermissionError(13, "Permission denied")
        return real_open(name, flags, *args, **kwargs)

    with mock.patch.object(inputfile.os, "open", refusing_open):
        first = ingest(ws)
        again = ingest(ws)
    assert [(r.name, r.status) for r in first.records] == [("locked.csv", "quarantined")]
    assert "locked.csv: cannot be read: Permission denied" in (first.records[0].reason or "")
    assert again.records == [] and again.unchanged == ["locked.csv"]

    path.write_text(HEADER + "a,1,2,3,0\nb,4,5,6,1\n")  # readable again, and changed
    assert ingest(ws).rows_added == 2


class _Listing:
    """``os.scandir`` of the input folder that runs ``after(folder)`` once it has listed the
    entries, before anything looks at them: a file that vanishes or changes meanwhile."""

    def __init__(self, folder: Path, after: Callable[[Path], None]) -> None:
        self.folder, self.after, self.real = folder, after, os.scandir

    def __call__(self, path: Any = ".") -> Any:
        entries = self.real(path)
        if os.fspath(path) != os.fspath(self.folder):
            return entries
        with entries:
            listed = list(entries)
        self.after(self.folder)
        return _Entries(listed)


class _Entries(list[Any]):
    def __enter__(self) -> _Entries:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


@pytest.mark.parametrize("read_new", [True, False])
def test_a_file_that_vanishes_after_the_listing_is_deferred(
    make_ws: MakeWorkspace, monkeypatch: pytest.MonkeyPatch, read_new: bool
) -> None:
    ws = make_ws()
    put(ws, "a_gone.csv", GOOD)
    put(ws, "b_good.csv", HEADER + "b,1,2,3,1\n")
    monkeypatch.setattr(
        os, "scandir", _Listing(ws.input_folder, lambda f: (f / "a_gone.csv").unlink())
    )

    scan = scan_input(ws, read_new=read_new)

    assert scan.deferred == ["a_gone.csv"]
    assert [c.name for c in scan.new] == ["b_good.csv"]
    assert scan.rejected == []


def test_a_file_that_vanishes_after_the_listing_is_looked_at_next_pass(
    make_ws: MakeWorkspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    ws = make_ws()
    put(ws, "a_gone.csv", GOOD)
    put(ws, "b_good.csv", HEADER + "b,1,2,3,1\n")
    with monkeypatch.context() as patch:
        patch.setattr(
            os,
            "scandir",
            _Listing(ws.input_folder, lambda f: (f / "a_gone.csv").rename(f.parent / "away")),
        )
        first = ingest(ws)
    assert first.deferred == ["a_gone.csv"]
    assert [r.name for r in first.ingested] == ["b_good.csv"]

    (ws.input_folder.parent / "away").rename(ws.input_folder / "a_gone.csv")
    assert [r.name for r in ingest(ws).ingested] == ["a_gone.csv"]


def _swap_for_a_folder(path: Path) -> None:
    path.unlink()
    path.mkdir()


def test_a_file_swapped_for_a_folder_after_the_listing_is_refused_as_a_folder(
    make_ws: MakeWorkspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Between the listing and the read (scan) or between the stat and the open (ingest): the
    folder is refused as the listing refuses one, once, and the other files go on."""
    ws = make_ws()
    put(ws, "a_swapped.csv", GOOD)
    put(ws, "b_good.csv", HEADER + "b,1,2,3,1\n")
    with monkeypatch.context() as patch:
        patch.setattr(
            os,
            "scandir",
            _Listing(ws.input_folder, lambda f: _swap_for_a_folder(f / "a_swapped.csv")),
        )
        scan = scan_input(ws)
    assert [(r.name, r.status) for r in scan.rejected] == [("a_swapped.csv", "quarantined")]
    assert "a_swapped.csv is not a regular file" in (scan.rejected[0].reason or "")

    (ws.input_folder / "a_swapped.csv").rmdir()
    put(ws, "a_swapped.csv", GOOD)

    def swap(name: str, done: int, total: int) -> None:  # after the stat, before the open
        if name == "a_swapped.csv":
            _swap_for_a_folder(ws.input_folder / name)

    result = ingest(ws, progress=swap)

    record = by_name(result)["a_swapped.csv"]
    assert record.status == "quarantined"
    assert "a_swapped.csv is not a regular file" in (record.reason or "")
    assert by_name(result)["b_good.csv"].status == "ingested"
    assert ingest(ws).records == []  # recorded once: the next listing finds the same folder


def test_a_read_error_quarantines_the_file_and_the_pass_goes_on(
    make_ws: MakeWorkspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An I/O error while a file is read, whole or in blocks, in the scan or the ingestion."""
    import errno

    from beryl.data import ingestion
    from beryl.data.inputfile import InputFile

    ws = make_ws()
    put(ws, "a_small.csv", GOOD)
    put(ws, "b_large.csv", HEADER + "".join(f"l{i},1,2,3,0\n" for i in range(200)))
    put(ws, "c_good.csv", HEADER + "c,1,2,3,1\n")
    real = InputFile.pread

    def failing(self: InputFile, buffer: Any, position: int) -> int:
        if self.path.name == "c_good.csv":
            return real(self, buffer, position)
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(InputFile, "pread", failing)
    monkeypatch.setattr(ingestion, "WHOLE_FILE_BYTES", 2000)  # b_large.csv is read in blocks

    scan = scan_input(ws)
    result = ingest(ws)

    assert sorted(r.name for r in scan.rejected) == ["a_small.csv", "b_large.csv"]
    for record in (*scan.rejected, *result.quarantined):
        assert f"{record.name}: cannot be read: Input/output error" in (record.reason or "")
    assert sorted(r.name for r in result.quarantined) == ["a_small.csv", "b_large.csv"]
    assert [r.name for r in result.ingested] == ["c_good.csv"]
    assert not list((ws.output_folder).glob(".beryl-tmp-*"))  # no spill file left


_AS_NOBODY = """
import json, sys
from pathlib import Path
from beryl import config
from beryl.data.scan import scan_input
settings = config.load(Path(sys.argv[1]), environ={})
scan = scan_input(settings)
print(json.dumps({"rejected": [(r.name, r.reason) for r in scan.rejected],
                  "new": [c.name for c in scan.new]}))
"""


def test_a_file_without_read_permission_is_quarantined_as_another_user(
    tmp_path: Path, beryl_cli: Any
) -> None:
    """Root reads every file, so this runs as nobody (setpriv) over a workspace it owns: the
    scan and ``beryl ingest`` quarantine the locked file with the reason, the rest goes in."""
    import subprocess
    import sys

    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root and setpriv to run as another user")
    root = Path(tempfile.mkdtemp(prefix="beryl-nobody-", dir="/tmp"))
    try:
        root.chmod(0o755)
        ws = new_workspace(root / "ws")
        put(ws, "a_locked.csv", GOOD)
        put(ws, "b_good.csv", HEADER + "b,1,2,3,1\n")
        for path in [root / "ws", *(root / "ws").rglob("*")]:
            os.chown(path, 65534, 65534)
        (ws.input_folder / "a_locked.csv").chmod(0)
        nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
        env = {**os.environ, "HOME": str(root), "XDG_CONFIG_HOME": str(root / "xdg")}
        probe = subprocess.run([*nobody, "true"], capture_output=True, env=env)
        if probe.returncode != 0:
            pytest.skip(f"setpriv cannot switch users here: {probe.stderr!r}")

        scan = subprocess.run(
            [*nobody, sys.executable, "-c", _AS_NOBODY, str(ws.config_path)],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        )
        assert scan.returncode == 0, scan.stderr
        outcome = json.loads(scan.stdout)
        assert outcome["new"] == ["b_good.csv"]
        ((name, reason),) = outcome["rejected"]
        assert name == "a_locked.csv"
        assert "a_locked.csv: cannot be read: Permission denied" in reason
        assert "read access" in reason

        done = subprocess.run(
            [
                *nobody,
                sys.executable,
                "-m",
                "beryl",
                "--config",
                str(ws.config_path),
                "ingest",
                "--json",
            ],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        )
        assert done.returncode == 10, done.stderr
        assert "Traceback" not in done.stderr
        records = {r["name"]: r for r in json.loads(done.stdout)["records"]}
        assert records["a_locked.csv"]["status"] == "quarantined"
        assert "Permission denied" in records["a_locked.csv"]["reason"]
        assert records["b_good.csv"]["status"] == "ingested"
    finally:
        shutil.rmtree(root, ignore_errors=True)


_CONTROL_NAMES = {
    "newline": ("\n", "\\n"),
    "carriage-return": ("\r", "\\r"),
    "tab": ("\t", "\\t"),
    "escape": ("\x1b", "\\x1b"),
    "delete": ("\x7f", "\\x7f"),
    "next-line": ("\x85", "\\x85"),
    "line-separator": ("\u2028", "\\u2028"),
}


@pytest.mark.parametrize(("char", "shown"), _CONTROL_NAMES.values(), ids=list(_CONTROL_NAMES))
def test_a_file_name_with_a_control_character_is_quarantined_and_never_listed(
    make_ws: MakeWorkspace, char: str, shown: str
) -> None:
    """Such a name would break ingestedfiles.txt (one name per line) into phantom lines: it is
    refused with its characters escaped, and no line-based file gets it."""
    ws = make_ws()
    put(ws, f"bad{char}name.csv", HEADER + "phantom,1,2,3,0\n")
    put(ws, "good.csv", GOOD)

    result = ingest(ws)

    records = by_name(result)
    record = records[f"bad{shown}name.csv"]
    assert record.status == "quarantined"
    assert record.reason == (
        f"bad{shown}name.csv: the file name contains a control character ({shown}): rename the file"
    )
    assert records["good.csv"].status == "ingested"
    assert (ws.output_folder / "ingestedfiles.txt").read_text(encoding="utf-8") == "good.csv\n"
    assert Dataset(ws.output_folder).read()["corporation"].tolist() == ["good"]
    for path in ws.output_folder.rglob("*"):
        if path.is_file() and path.suffix in {".txt", ".csv", ".json"}:
            assert f"bad{char}name" not in path.read_text(encoding="utf-8"), path
    assert ingest(ws).records == []  # not recorded again while unchanged


def test_control_characters_in_names_reach_no_line_of_the_cli_output(
    make_ws: MakeWorkspace, beryl_cli: Any
) -> None:
    ws = make_ws()
    for char, _ in _CONTROL_NAMES.values():
        put(ws, f"bad{char}name.csv", HEADER + "phantom,1,2,3,0\n")
    put(ws, "good.csv", GOOD)

    done = beryl_cli("ingest", config=ws.config_path)

    assert done.returncode == 10, done.stderr
    lines = (done.stdout + done.stderr).splitlines()
    assert not any("phantom" in line or line.startswith("name.csv") for line in lines)
    for _, shown in _CONTROL_NAMES.values():
        assert f"bad{shown}name.csv" in done.stdout


def test_text_in_a_column_inferred_as_numeric_says_where_the_type_came_from(
    make_ws: MakeWorkspace,
) -> None:
    ws = make_ws(target="churned", positive_label="Yes", id_columns=["id"])
    first = "id,plan,spend,churned\n" + "".join(f"f{i},{i % 3},{i},No\n" for i in range(10))
    put(ws, "a.csv", first)
    ingest(ws)
    plans = ["1", "2", "gold", "3", "1", "2", "1", "2", "silver", "3"]
    put(
        ws,
        "b.csv",
        "id,plan,spend,churned\n" + "".join(f"s{i},{p},{i},Yes\n" for i, p in enumerate(plans)),
    )

    record = by_name(ingest(ws))["b.csv"]

    assert record.status == "quarantined"
    reason = record.reason or ""
    assert reason.startswith(
        "b.csv: column 'plan' was inferred as numeric from the first ingested file a.csv; this "
        "file has text in it ('gold', 'silver') at rows 3, 9 ("
    )
    assert "list it in categorical_features in config.json" in reason
    assert "`beryl dataset retype plan --as categorical`" in reason


def test_text_in_a_column_declared_numeric_points_at_the_config(make_ws: MakeWorkspace) -> None:
    ws = make_ws(numeric_features=["lastmonth_activity", "lastyear_activity"])
    put(ws, "a.csv", GOOD.replace("number_of_employees,", "").replace("1,2,3,0", "1,2,0"))
    ingest(ws)
    put(ws, "b.csv", HEADER.replace("number_of_employees,", "") + "b,lots,2,1\n")

    reason = by_name(ingest(ws))["b.csv"].reason or ""

    assert reason.startswith(
        "b.csv: column 'lastmonth_activity' was listed in numeric_features in config.json; "
        "this file has text in it ('lots') at row 1"
    )
    assert "categorical_features instead of numeric_features in config.json" in reason


def test_a_dataset_recorded_without_origins_still_explains_its_types(
    make_ws: MakeWorkspace,
) -> None:
    """A manifest from before origins were recorded: the first ingested file is named."""
    ws = make_ws()
    put(ws, "a.csv", GOOD)
    ingest(ws)
    path = ws.output_folder / "dataset.json"
    manifest = json.loads(path.read_text())
    del manifest["schema"]["origin"]
    path.write_text(json.dumps(manifest))
    put(ws, "b.csv", HEADER + "b,1,x,3,1\n")

    reason = by_name(ingest(ws))["b.csv"].reason or ""

    assert (
        "column 'lastyear_activity' was inferred as numeric from the first ingested file a.csv"
        in reason
    )
    assert "origin" not in json.loads(path.read_text())["schema"]  # the record is not rewritten


_FEATURE_CELLS = ["1", "2.5", "", "NA", " 7", "x", "true", "2024-01-01", "1e3", "-0"]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(*[st.sampled_from(_FEATURE_CELLS)] * 3), min_size=1, max_size=6))
def test_first_file_schema_is_what_the_careful_reader_infers(rows: list[tuple[str, ...]]) -> None:
    from beryl.data.reading import first_schema
    from beryl.data.schema import infer_schema

    ws = config.from_mapping({}, Path("."))
    header = "corporation,f1,f2,f3,exited\n"
    data = (header + "".join(f"c{i},{','.join(r)},{i % 2}\n" for i, r in enumerate(rows))).encode()
    raw = read_csv_bytes(data, "f.csv", ["corporation", "exited"])
    assert first_schema(ws, data, "f.csv") == infer_schema(ws, raw, "f.csv")


def test_the_fast_path_knows_every_character_python_strips() -> None:
    """A value padded with any of them takes the careful path, which strips it."""
    from beryl.data.reading import PY_WHITESPACE

    assert "".join(c for c in map(chr, range(0x110000)) if c.isspace()) == PY_WHITESPACE


class _Collected:
    """A stand-in ``BatchWriter`` that keeps what the deduplicator writes, in order."""

    def __init__(self) -> None:
        self.tables: list[Any] = []

    def append(self, table: Any, hashes: np.ndarray) -> None:
        self.tables.append(table)

    def drain(self) -> None:
        pass


def test_many_groups_keep_the_first_of_every_row_with_few_runs_of_kept_hashes() -> None:
    """Sixty groups of a pass, rows repeated within and across them and against the stored
    dataset: exactly the first occurrence of each row not stored is kept, and the pass's kept
    hashes stay in about log2(groups) sorted runs (merged as a binary counter)."""
    import pyarrow as pa

    from beryl.data.deduplication import Deduplicator

    rng = np.random.default_rng(5)
    stored_values = rng.integers(0, 400, 150)
    stored = pa.table({"v": pa.array(stored_values, pa.int64())})
    dedup = Deduplicator([np.sort(np.unique(rowhash.row_hashes(stored)))], _Collected())
    seen: set[int] = set(stored_values.tolist())
    expected: list[int] = []
    for group in range(60):
        values = rng.integers(0, 3000, rng.integers(1, 200))
        table = pa.table({"v": pa.array(values, pa.int64())})
        dedup.add(FileRecord(f"f{group}.csv", "", "ingested", ""), table)
        dedup.flush()  # one group per file
        for value in values.tolist():
            if value not in seen:
                seen.add(value)
                expected.append(value)
        assert len(dedup.kept) <= int(np.log2(group + 1)) + 1
        assert all(len(a) > 2 * len(b) for a, b in zip(dedup.kept, dedup.kept[1:], strict=False))
    writer = dedup.writer
    assert isinstance(writer, _Collected)
    written = [v for table in writer.tables for v in table.column("v").to_pylist()]
    assert written == expected
    assert sum(len(run) for run in dedup.kept) == len(expected)
