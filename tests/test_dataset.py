"""Tests for beryl.data.dataset: the manifest, immutable batches and the finaldata.csv snapshot."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from beryl import config
from beryl.config import Settings
from beryl.data.dataset import Dataset
from beryl.data.demo import add_batch
from beryl.data.ingestion import ingest
from beryl.data.manifest import BatchInfo, FileRecord, Manifest, SnapshotState
from beryl.data.schema import Schema
from beryl.errors import EmptyDatasetError, StateError

HEADER = "corporation,lastmonth_activity,lastyear_activity,number_of_employees,exited\n"
NUMERIC = ["lastmonth_activity", "lastyear_activity", "number_of_employees"]


def with_options(settings: Settings, **overrides: Any) -> Settings:
    """Rewrite the workspace's config.json with ``overrides`` and load it again."""
    path = settings.root / "config.json"
    data = json.loads(path.read_text())
    data.update(overrides)
    path.write_text(json.dumps(data))
    return config.load(path, environ={})


def write_ws(root: Path, **options: Any) -> Settings:
    """A minimal workspace with input folder ``in``; calling it again rewrites its config."""
    (root / "in").mkdir(parents=True, exist_ok=True)
    (root / "config.json").write_text(json.dumps({"input_folder_path": "in", **options}))
    return config.load(root / "config.json", environ={})


def file_bytes(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def read_snapshot(settings: Settings) -> pd.DataFrame:
    frame = pd.read_csv(
        settings.output_folder / "finaldata.csv", dtype={"corporation": str}, keep_default_na=False
    )
    for column in NUMERIC:
        frame[column] = pd.to_numeric(frame[column].replace("", np.nan)).astype("float64")
    return frame


def normalised(frame: pd.DataFrame) -> pd.DataFrame:
    out = frame.reset_index(drop=True).copy()
    out["corporation"] = out["corporation"].astype(object)
    for column in NUMERIC:
        out[column] = out[column].astype("float64")
    out["exited"] = out["exited"].astype("int64")
    return out


def test_manifest_round_trips_through_json() -> None:
    manifest = Manifest(
        schema=Schema("exited", 1, ["corporation"], NUMERIC, []),
        batches=[BatchInfo("b1", "2024-01-01T00:00:00.000000Z", 3, ["a.csv", "b.csv"])],
        files=[
            FileRecord("a.csv", "ab" * 32, "ingested", "t", 4, 3, "b1", None, 99),
            FileRecord("c.csv", "cd" * 32, "quarantined", "t", reason="c.csv: empty"),
        ],
        snapshot=SnapshotState(("b1",), 120),
    )

    data = json.loads(json.dumps(manifest.to_dict()))

    assert data["format"] == 1
    assert "reason" not in data["files"][0]
    assert "batch" not in data["files"][1]
    assert Manifest.from_dict(data) == manifest


def test_manifest_on_disk_matches_what_ingestion_recorded(workspace: Settings) -> None:
    result = ingest(workspace)

    dataset = Dataset(workspace.output_folder)
    assert dataset.schema == Schema("exited", 1, ["corporation"], NUMERIC, [])
    assert result.batch is not None
    assert [b.id for b in dataset.batches] == [result.batch.id]
    assert dataset.files == result.records
    assert dataset.rows == result.dataset_rows == len(dataset.read())
    raw = json.loads(dataset.manifest_path.read_text())
    assert Manifest.from_dict(raw) == dataset.manifest


def test_empty_dataset_reads_raise_empty_dataset_error(tmp_path: Path) -> None:
    dataset = Dataset(tmp_path / "nothing-yet")
    assert dataset.rows == 0
    assert dataset.schema is None
    assert dataset.row_hashes().size == 0
    with pytest.raises(EmptyDatasetError) as info:
        dataset.read()
    assert isinstance(info.value, LookupError)
    assert str(tmp_path / "nothing-yet") in str(info.value)


def test_unknown_batch_set_raises_empty_dataset_error(workspace: Settings) -> None:
    ingest(workspace)
    dataset = Dataset(workspace.output_folder)
    with pytest.raises(EmptyDatasetError):
        dataset.read(batches=["no-such-batch"])
    with pytest.raises(EmptyDatasetError):
        dataset.read(batches=[])


def test_unreadable_manifest_is_a_state_error_naming_it(tmp_path: Path) -> None:
    """Damaged workspace state, not bad input data: the API answers it 503, the CLI exit 7.
    Opening the dataset does not fail (a repair must be able to open it); reading it does."""
    (tmp_path / "dataset.json").write_text('{"schema": {"positive_label": 1}}')
    dataset = Dataset(tmp_path)
    for read in (lambda: dataset.rows, dataset.read, lambda: dataset.files, dataset.hash_runs):
        with pytest.raises(StateError, match=r"dataset\.json") as err:
            read()
        assert err.value.exit_code == 7


def test_earlier_batches_never_change(workspace: Settings) -> None:
    ingest(workspace)
    batches = workspace.output_folder / "batches"
    before = file_bytes(batches)
    assert len(before) == 3  # one parquet file, its hashes and its record

    add_batch(workspace.input_folder, "later", rows=50, seed=7)
    result = ingest(workspace)

    after = file_bytes(batches)
    assert result.rows_added > 0
    assert len(after) == 6
    for name, data in before.items():
        assert after[name] == data
    dataset = Dataset(workspace.output_folder)
    assert len(dataset.batches) == 2
    second = dataset.read(batches=[dataset.batches[1].id])
    assert len(second) == result.rows_added
    assert dataset.batches[1].files == ["later.csv"]


def test_batches_hold_only_new_rows_and_hashes_match(workspace: Settings) -> None:
    ingest(workspace)
    add_batch(workspace.input_folder, "later", rows=40, seed=3)
    ingest(workspace)
    dataset = Dataset(workspace.output_folder)

    frames = [dataset.read(batches=[b.id]) for b in dataset.batches]
    union = pd.concat(frames, ignore_index=True)
    assert [len(f) for f in frames] == [b.rows for b in dataset.batches]
    assert not union.duplicated().any()
    hashes = dataset.row_hashes()
    assert len(hashes) == dataset.rows
    assert len(np.unique(hashes)) == dataset.rows
    assert np.all(hashes[:-1] <= hashes[1:])
    assert dataset.read(columns=["exited"]).columns.tolist() == ["exited"]


def test_snapshot_equals_the_union_of_batches(workspace: Settings) -> None:
    ingest(workspace)
    add_batch(workspace.input_folder, "later", rows=60, seed=11)
    (workspace.input_folder / "extra.csv").write_text(HEADER + "qqqq,,12.5,3,1\n")
    ingest(workspace)
    dataset = Dataset(workspace.output_folder)
    assert len(dataset.batches) == 2

    union = pd.concat([dataset.read(batches=[b.id]) for b in dataset.batches])
    snapshot = read_snapshot(workspace)

    assert dataset.schema is not None
    assert list(snapshot.columns) == dataset.schema.columns
    pd.testing.assert_frame_equal(normalised(snapshot), normalised(union))
    pd.testing.assert_frame_equal(normalised(snapshot), normalised(dataset.read()))
    manifest = json.loads(dataset.manifest_path.read_text())
    assert manifest["snapshot"]["batches"] == [b.id for b in dataset.batches]
    assert manifest["snapshot"]["bytes"] == dataset.snapshot_path.stat().st_size


def test_appended_snapshot_equals_a_full_rewrite(tmp_path: Path) -> None:
    first = HEADER + "aaaa,1,2,3,0\nbbbb,4.5,,6,1\n"
    second = HEADER + "cccc,7,8,9,0\naaaa,1,2,3,0\n"

    def run(root: Path, snapshot_first: bool) -> bytes:
        settings = write_ws(root, write_csv_snapshot=snapshot_first)
        (settings.input_folder / "a.csv").write_text(first)
        ingest(settings)
        settings = write_ws(root, write_csv_snapshot=True)
        (settings.input_folder / "b.csv").write_text(second)
        ingest(settings)
        return (settings.output_folder / "finaldata.csv").read_bytes()

    appended = run(tmp_path / "appended", snapshot_first=True)
    rewritten = run(tmp_path / "rewritten", snapshot_first=False)

    assert appended == rewritten
    assert appended.decode().splitlines() == [
        '"corporation","lastmonth_activity","lastyear_activity","number_of_employees","exited"',
        '"aaaa",1,2,3,0',
        '"bbbb",4.5,,6,1',
        '"cccc",7,8,9,0',
    ]


def test_integral_floats_are_written_without_decimal_point(workspace: Settings) -> None:
    ingest(workspace)
    text = (workspace.output_folder / "finaldata.csv").read_text()
    lines = text.splitlines()
    assert len(lines) == Dataset(workspace.output_folder).rows + 1
    assert not re.search(r"\.0(,|$)", text, flags=re.MULTILINE)
    # the generated data has blanks for missing values, and they stay blank
    assert any(",," in line or line.endswith(",") for line in lines[1:])
    sources = "".join(p.read_text() for p in workspace.input_folder.glob("*.csv"))
    for line in lines[1:6]:
        assert line.replace('"', "") in sources


def test_no_snapshot_when_switched_off(workspace: Settings) -> None:
    settings = with_options(workspace, write_csv_snapshot=False)

    result = ingest(settings)

    assert result.rows_added > 0
    assert not (settings.output_folder / "finaldata.csv").exists()
    assert json.loads((settings.output_folder / "dataset.json").read_text())["snapshot"] == {}
    names = (settings.output_folder / "ingestedfiles.txt").read_text().splitlines()
    assert names == sorted(p.name for p in settings.input_folder.glob("*.csv"))


def test_switching_the_snapshot_off_leaves_no_stale_snapshot(workspace: Settings) -> None:
    ingest(workspace)
    settings = with_options(workspace, write_csv_snapshot=False)
    add_batch(settings.input_folder, "later", rows=30, seed=5)
    ingest(settings)

    path = settings.output_folder / "finaldata.csv"
    if path.exists():
        rows = len(path.read_text().splitlines()) - 1
        assert rows == Dataset(settings.output_folder).rows


def test_ingested_files_list_keeps_first_ingestion_order(workspace: Settings) -> None:
    ingest(workspace)
    add_batch(workspace.input_folder, "a_later", rows=20, seed=9)
    ingest(workspace)
    names = (workspace.output_folder / "ingestedfiles.txt").read_text().splitlines()
    assert names == ["dataset1.csv", "dataset2.csv", "dataset3.csv", "a_later.csv"]
    assert Dataset(workspace.output_folder).ingested_names() == names


def test_no_temporary_files_are_left_behind(workspace: Settings) -> None:
    ingest(workspace)
    add_batch(workspace.input_folder, "later", rows=30, seed=2)
    (workspace.input_folder / "broken.csv").write_text("")
    ingest(workspace)
    ingest(workspace)

    leftovers = [p for p in workspace.root.rglob("*") if p.name.startswith(".beryl-tmp-")]
    assert leftovers == []
    produced = {p.name for p in workspace.output_folder.iterdir()}
    assert produced == {"batches", "dataset.json", "finaldata.csv", "ingestedfiles.txt"}


def test_a_failed_ingestion_leaves_batches_and_snapshot_as_they_were(workspace: Settings) -> None:
    """Rows are appended to finaldata.csv as they are read; a failure cuts them off again."""
    from unittest import mock

    from beryl.data import snapshot

    ingest(workspace)

    def state() -> dict[str, bytes]:
        folder = workspace.output_folder
        return {p.name: p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}

    before = state()
    add_batch(workspace.input_folder, "later", rows=40, seed=4)
    add_batch(workspace.input_folder, "zlater", rows=40, seed=6)
    calls = []
    real_write = snapshot.write_rows

    def write_then_fail(handle: Any, table: Any) -> None:
        real_write(handle, table)
        calls.append(table.num_rows)
        if len(calls) == 2:  # the second file's rows are half way to disk
            raise OSError(28, "No space left on device")

    with (
        mock.patch.object(snapshot, "write_rows", write_then_fail),
        pytest.raises(StateError, match="no space left"),
    ):
        ingest(workspace)

    assert calls == [40, 40]
    assert state() == before
    leftovers = [p.name for p in workspace.output_folder.rglob("*") if "tmp" in p.name]
    assert leftovers == []
    assert ingest(workspace).rows_added == 80  # and the next pass ingests them


def test_repair_cuts_rows_an_unpublished_ingestion_appended(workspace: Settings) -> None:
    ingest(workspace)
    dataset = Dataset(workspace.output_folder)
    published = dataset.snapshot_path.read_bytes()
    with dataset.snapshot_path.open("ab") as handle:  # a pass killed before its manifest
        handle.write(b'"zzzz",1,2,3,0\n"yyyy",4,5')

    repaired = Dataset(workspace.output_folder).repair(write_snapshot=True)

    assert len(repaired) == 1
    assert repaired[0].startswith("cut finaldata.csv back to the published dataset (the 25 ")
    assert dataset.snapshot_path.read_bytes() == published
    assert Dataset(workspace.output_folder).repair(write_snapshot=True) == []
    # the rows cut off are kept, never deleted
    (cut,) = (workspace.output_folder / ".recovered").glob("*/finaldata.csv.cut")
    assert cut.read_bytes() == b'"zzzz",1,2,3,0\n"yyyy",4,5'


def test_repair_rewrites_a_snapshot_shorter_than_recorded(workspace: Settings) -> None:
    """The snapshot is flushed, not fsynced: after a power loss it may miss rows; repair
    rebuilds it from the batches."""
    ingest(workspace)
    dataset = Dataset(workspace.output_folder)
    published = dataset.snapshot_path.read_bytes()
    dataset.snapshot_path.write_bytes(published[: len(published) // 2])

    repaired = Dataset(workspace.output_folder).repair(write_snapshot=True)

    assert repaired == ["rewrote finaldata.csv"]
    assert dataset.snapshot_path.read_bytes() == published


def test_snapshot_rows_from_tables_with_empty_chunks(tmp_path: Path) -> None:
    """Arrow's CSV writer mangles a column whose first chunk is empty; the snapshot must not."""
    import pyarrow as pa

    from beryl.data.snapshot import appending

    def chunked(*parts: list[Any]) -> pa.ChunkedArray:
        return pa.chunked_array([pa.array(p, pa.large_string()) for p in parts])

    table = pa.table({"id": chunked([], ["a", "b"], [], ["c"]), "n": pa.array([1.0, 2.5, 3.0])})
    path = tmp_path / "snapshot.csv"
    with appending(path, ["id", "n"]) as write:
        write(table)
    assert path.read_text().splitlines() == ['"id","n"', '"a",1', '"b",2.5', '"c",3']


def test_batch_records_carry_the_records_of_the_ingestion_that_made_them(
    workspace: Settings,
) -> None:
    from beryl.data.manifest import records_by_batch

    ingest(workspace)
    (workspace.input_folder / "broken.csv").write_text("")  # a pass that adds no rows
    ingest(workspace)
    add_batch(workspace.input_folder, "later", rows=30, seed=5)
    ingest(workspace)
    dataset = Dataset(workspace.output_folder)
    first, second = dataset.batches

    groups = records_by_batch(dataset.manifest)

    assert [r.name for r in groups[first.id]] == ["dataset1.csv", "dataset2.csv", "dataset3.csv"]
    assert [r.name for r in groups[second.id]] == ["broken.csv", "later.csv"]
    for batch in dataset.batches:
        record = dataset.read_record(batch.id)
        assert record.files == groups[batch.id]
        assert (record.schema, record.classes) == (dataset.schema, dataset.manifest.classes)
        assert record.batch == batch  # sizes included, its own measured on reading
        assert set(batch.sizes) == {"parquet", "hashes", "record"}


@pytest.mark.parametrize(
    "raw",
    [
        [],
        {"batches": [{"id": "../x", "created": "t", "rows": 1, "files": []}]},
        {"batches": [{"id": "b", "created": "t", "rows": -1, "files": []}]},
        {"batches": [{"id": "b", "created": "t", "rows": 1, "files": [], "x": 1}]},
        {"files": [{"name": 1, "sha256": "s", "status": "ingested", "time": "t"}]},
        {"files": "none"},
    ],
)
def test_a_manifest_of_the_wrong_shape_is_damaged(tmp_path: Path, raw: Any) -> None:
    (tmp_path / "dataset.json").write_text(json.dumps(raw))
    dataset = Dataset(tmp_path)
    assert dataset.problem is not None and dataset.problem.rebuild
    with pytest.raises(StateError, match="is damaged"):
        dataset.read()
