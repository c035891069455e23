"""Tests for beryl.data.retype and `beryl dataset retype`: changing a stored column's type."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from tests.conftest import CliRunner

from beryl import config
from beryl.config import Settings
from beryl.data.dataset import Dataset
from beryl.data.ingestion import ingest
from beryl.data.retype import retype
from beryl.errors import EmptyDatasetError, SchemaError

HEADER = "id,activity,plan,churned\n"


def workspace(root: Path, **overrides: Any) -> Settings:
    data: dict[str, Any] = {
        "input_folder_path": "in",
        "target": "churned",
        "positive_label": "Yes",
        "id_columns": ["id"],
        "model": {"max_iter": 200},
        **overrides,
    }
    root.mkdir(parents=True, exist_ok=True)
    (root / "in").mkdir(exist_ok=True)
    (root / "config.json").write_text(json.dumps(data), encoding="utf-8")
    return config.load(root / "config.json", environ={})


def put(settings: Settings, name: str, rows: list[tuple[Any, ...]]) -> None:
    lines = "".join(",".join("" if v is None else str(v) for v in row) + "\n" for row in rows)
    (settings.input_folder / name).write_text(HEADER + lines, encoding="utf-8")


def numeric_plans(count: int, prefix: str = "a") -> list[tuple[Any, ...]]:
    return [(f"{prefix}{i}", i, i % 3 + 1, "Yes" if i % 2 else "No") for i in range(count)]


def tree(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` with its content."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def plan_values(settings: Settings) -> list[Any]:
    frame = Dataset(settings.output_folder).read()
    return [
        None if v is None or (isinstance(v, float) and math.isnan(v)) else v for v in frame["plan"]
    ]


def edit_config(settings: Settings, **changes: Any) -> Settings:
    path = settings.root / "config.json"
    data = json.loads(path.read_text())
    for key, value in changes.items():
        if value is None:
            data.pop(key, None)
        else:
            data[key] = value
    path.write_text(json.dumps(data))
    return config.load(path, environ={})


def test_a_column_inferred_as_numeric_is_retyped_and_the_refused_file_goes_in(
    tmp_path: Path, beryl_cli: CliRunner
) -> None:
    """The whole way through the CLI: the refusal says what to do, and doing it works."""
    ws = workspace(tmp_path / "ws")
    cfg = ws.root / "config.json"
    put(ws, "a.csv", numeric_plans(20))
    assert beryl_cli("ingest", config=cfg).returncode == 0
    put(ws, "b.csv", [(f"b{i}", i, ["gold", "silver", "3"][i % 3], "Yes") for i in range(9)])

    refused = beryl_cli("ingest", "--json", config=cfg)

    assert refused.returncode == 10
    (record,) = json.loads(refused.stdout)["records"]
    assert record["status"] == "quarantined"
    assert (
        "column 'plan' was inferred as numeric from the first ingested file a.csv"
        in (record["reason"])
    )
    assert "beryl dataset retype plan --as categorical" in record["reason"]

    edit_config(ws, categorical_features=["plan"])
    stale = beryl_cli("ingest", config=cfg)
    assert stale.returncode == 3
    assert "beryl dataset retype plan --as categorical" in stale.stderr

    done = beryl_cli("dataset", "retype", "plan", "--as", "categorical", config=cfg)

    assert done.returncode == 0, done.stderr
    assert "Re-typed 'plan' as categorical in 1 batch(es), 20 rows." in done.stdout
    again = beryl_cli("ingest", "--json", config=cfg)
    assert again.returncode == 0, again.stderr
    (record,) = json.loads(again.stdout)["records"]
    assert (record["name"], record["status"], record["rows_kept"]) == ("b.csv", "ingested", 9)
    dataset = Dataset(ws.output_folder)
    assert dataset.schema is not None and dataset.schema.categorical == ["plan"]
    assert sorted(set(plan_values(ws))) == ["1", "2", "3", "gold", "silver"]
    trained = beryl_cli("train", "--json", config=cfg)
    assert trained.returncode == 0, trained.stderr
    assert json.loads(trained.stdout)["schema"]["categorical"] == ["plan"]
    history = beryl_cli("history", "--json", config=cfg)
    assert "retype" in [run["command"] for run in json.loads(history.stdout)]


def test_numbers_become_the_text_their_file_would_have_held(tmp_path: Path) -> None:
    ws = workspace(tmp_path / "ws")
    rows = [("a", 1, 7, "Yes"), ("b", 2, 2.5, "No"), ("c", 3, None, "No"), ("d", 4, "1e3", "Yes")]
    rows += [("e", 5, "-0", "No"), ("f", 6, 0.1, "Yes")]
    put(ws, "a.csv", rows)
    ingest(ws)

    result = retype(ws, "plan", "categorical")

    assert (result.changed, result.rows, result.merged) == (True, 6, 0)
    assert plan_values(ws) == ["7", "2.5", None, "1000", "0", "0.1"]
    snapshot = (ws.output_folder / "finaldata.csv").read_text().splitlines()
    assert snapshot[0].replace('"', "") == "id,activity,plan,churned"
    assert snapshot[1] == '"a",1,"7","Yes"'
    # rows hash as the same rows read from a file with the text do: nothing is added again
    put(ws, "b.csv", [("a", 1, "7", "Yes"), ("b", 2, " 2.5 ", "No"), ("c", 3, "", "No")])
    again = ingest(ws)
    (record,) = again.records
    assert (record.status, record.rows_read, record.rows_kept) == ("ingested", 3, 0)


def test_text_becomes_numbers_and_rows_equal_once_converted_are_kept_once(
    tmp_path: Path,
) -> None:
    ws = workspace(tmp_path / "ws", categorical_features=["plan"])
    put(ws, "a.csv", [("a", 1, "7", "Yes"), ("b", 2, "2.5", "No")])
    ingest(ws)
    put(ws, "b.csv", [("a", 1, "7.0", "Yes"), ("c", 3, "", "No")])
    ingest(ws)
    ws = edit_config(ws, categorical_features=None)

    result = retype(ws, "plan", "numeric")

    assert (result.changed, result.rows, result.merged) == (True, 3, 1)
    assert plan_values(ws) == [7.0, 2.5, None]
    dataset = Dataset(ws.output_folder)
    assert dataset.rows == 3 and [b.rows for b in dataset.batches] == [2, 1]
    assert not dataset.read().duplicated().any()


def test_text_that_is_not_a_number_refuses_naming_batch_and_rows_and_changes_nothing(
    tmp_path: Path,
) -> None:
    ws = workspace(tmp_path / "ws", categorical_features=["plan"])
    put(ws, "a.csv", [("a", 1, "7", "Yes"), ("b", 2, "gold", "No"), ("c", 3, "x", "No")])
    ingest(ws)
    ws = edit_config(ws, categorical_features=None)
    batch = Dataset(ws.output_folder).batches[0].id
    before = tree(ws.output_folder)

    with pytest.raises(SchemaError) as info:
        retype(ws, "plan", "numeric")

    message = str(info.value)
    assert message.startswith(
        f"cannot re-type 'plan' as numeric: batch {batch}: column 'plan' has values that are "
        "not numbers ('gold', 'x') at rows 2, 3; nothing was changed"
    )
    assert "\n" not in message
    assert tree(ws.output_folder) == before


@pytest.mark.parametrize("failing", [2, 1], ids=["second-batch", "first-batch"])
def test_a_failure_midway_leaves_the_dataset_exactly_as_it_was(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failing: int
) -> None:
    ws = workspace(tmp_path / "ws")
    put(ws, "a.csv", numeric_plans(10))
    ingest(ws)
    put(ws, "b.csv", numeric_plans(10, "b"))
    ingest(ws)
    assert len(Dataset(ws.output_folder).batches) == 2
    before = tree(ws.output_folder)
    real = Dataset.batch_writer
    calls = []

    def batch_writer(self: Dataset, *args: Any, **kwargs: Any) -> Any:
        writer = real(self, *args, **kwargs)
        calls.append(writer)
        if len(calls) == failing:

            def fail(*_: Any) -> None:
                raise OSError(28, "No space left on device")

            monkeypatch.setattr(writer, "append", fail)
        return writer

    monkeypatch.setattr(Dataset, "batch_writer", batch_writer)

    with pytest.raises(OSError, match="No space left"):
        retype(ws, "plan", "categorical")

    assert tree(ws.output_folder) == before
    assert Dataset(ws.output_folder).schema is not None
    assert Dataset(ws.output_folder).schema.numeric == ["activity", "plan"]


def test_after_a_retype_the_old_batches_are_named_by_nothing(tmp_path: Path) -> None:
    ws = workspace(tmp_path / "ws")
    put(ws, "a.csv", numeric_plans(5))
    ingest(ws)
    old = Dataset(ws.output_folder)
    (old_batch,) = old.batches

    result = retype(ws, "plan", "categorical")

    new = Dataset(ws.output_folder)
    (new_batch,) = new.batches
    assert result.batches == {old_batch.id: new_batch.id}
    assert new_batch.id != old_batch.id
    assert (new_batch.created, new_batch.rows, new_batch.files) == (
        old_batch.created,
        old_batch.rows,
        old_batch.files,
    )
    assert [r.batch for r in new.files] == [new_batch.id]
    # Set aside at once: a manifest rebuilt from the batches' records never finds them twice.
    assert not old.batch_path(old_batch.id).exists()
    assert list((ws.output_folder / ".recovered").rglob(f"{old_batch.id}.parquet"))
    assert pd.api.types.is_string_dtype(new.read()["plan"])
    assert "re-typed as categorical with `beryl dataset retype`" in new.schema.origin["plan"]


def test_a_config_that_disagrees_with_the_new_types_is_refused(tmp_path: Path) -> None:
    ws = workspace(tmp_path / "ws", numeric_features=["activity", "plan"])
    put(ws, "a.csv", numeric_plans(5))
    ingest(ws)
    before = tree(ws.output_folder)

    with pytest.raises(SchemaError) as info:
        retype(ws, "plan", "categorical")

    assert "numeric_features in config.json is ['activity', 'plan'], not ['activity']" in str(
        info.value
    )
    assert "list 'plan' in categorical_features (not in numeric_features)" in str(info.value)
    assert tree(ws.output_folder) == before
    # said so, the config's order is the schema's
    ws = edit_config(ws, numeric_features=["activity"], categorical_features=["plan"])
    assert retype(ws, "plan", "categorical").schema.categorical == ["plan"]
    assert retype(ws, "plan", "categorical").changed is False


@pytest.mark.parametrize(
    ("column", "expected"),
    [("churned", "label column"), ("id", "identifier column"), ("nope", "no feature column")],
)
def test_only_features_can_be_retyped(tmp_path: Path, column: str, expected: str) -> None:
    ws = workspace(tmp_path / "ws")
    with pytest.raises(EmptyDatasetError):
        retype(ws, "plan", "categorical")
    put(ws, "a.csv", numeric_plans(3))
    ingest(ws)
    with pytest.raises(SchemaError, match=expected):
        retype(ws, column, "categorical")


def test_the_loop_goes_on_after_a_retype(tmp_path: Path, beryl_cli: CliRunner) -> None:
    """Production was trained with the old type: its drift is not tested (and said so), the
    pass trains and judges a candidate with the new type, and nothing crashes."""
    ws = workspace(tmp_path / "ws")
    cfg = ws.root / "config.json"
    (ws.root / "testdata").mkdir()
    rows = numeric_plans(30, prefix="t")
    (ws.root / "testdata" / "test.csv").write_text(
        HEADER + "".join(",".join(map(str, r)) + "\n" for r in rows)
    )
    put(ws, "a.csv", numeric_plans(40))
    first = beryl_cli("run", "--no-apicalls", config=cfg)
    assert first.returncode == 0, first.stdout + first.stderr
    put(ws, "b.csv", [(f"b{i}", i, ["gold", "silver", "3"][i % 3], "Yes") for i in range(30)])
    assert beryl_cli("run", "--no-apicalls", config=cfg).returncode == 10
    edit_config(ws, categorical_features=["plan"])
    done = beryl_cli("dataset", "retype", "plan", "--as", "categorical", config=cfg)
    assert done.returncode == 0, done.stderr
    after = beryl_cli("run", "--no-apicalls", config=cfg)
    assert after.returncode == 0, after.stdout + after.stderr
    assert "Traceback" not in after.stdout + after.stderr
    assert "Data drift and model drift: not tested" in after.stdout
    assert "Candidate v0002" in after.stdout
