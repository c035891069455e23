"""Tests for beryl.loop.passes: one pass of the loop (DESIGN section 1) and its CLI command."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import filelock
import pytest
from hypothesis import given
from hypothesis import strategies as st
from tests.conftest import CliRunner

from beryl import config
from beryl.config import Settings
from beryl.data.dataset import Dataset
from beryl.data.demo import add_batch, generate, init_workspace, write_csv
from beryl.errors import EXIT_OK, EXIT_PARTIAL, PipelineBusyError
from beryl.loop.passes import KEPT, NO_NEW_DATA, PROMOTED, run_pass, should_promote
from beryl.model.registry import Registry
from beryl.monitoring.history import History
from beryl.monitoring.reporting import report_version
from beryl.workspace import Workspace

REPORT_FILES = ("confusionmatrix.png", "classificationreport.png", "report.html")


# -- helpers --------------------------------------------------------------------------------------
def reconfigure(settings: Settings, **changes: Any) -> Settings:
    """Write ``changes`` into the workspace's config.json and load it again."""
    path = settings.root / "config.json"
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data, indent=2) + "\n")
    return config.load(path)


def production(settings: Settings) -> str | None:
    return Registry(settings.model_folder).production()


def manifest_version(settings: Settings) -> str:
    return str(json.loads((settings.prod_folder / "manifest.json").read_text())["version"])


def version_dirs(settings: Settings) -> list[str]:
    folder = settings.model_folder / "versions"
    return sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))


def file_records(settings: Settings) -> list[dict[str, Any]]:
    manifest = json.loads((settings.output_folder / "dataset.json").read_text())
    return list(manifest["files"])


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def deployed(workspace: Settings) -> Settings:
    """The ``workspace`` after its first pass: v0001 is in production."""
    first = run_pass(workspace, report=False)
    assert first.outcome == PROMOTED
    return workspace


@pytest.fixture
def weak_production(tmp_path: Path) -> Settings:
    """A workspace whose production model v0001 learnt from 300 rows with 45% flipped labels."""
    ws = init_workspace(tmp_path / "weak", rows=300, files=1, seed=0)
    for path in ws.source_files:
        path.unlink()
    settings = config.load(ws.config)
    add_batch(settings.input_folder, "noisy.csv", rows=300, seed=3, label_noise=0.45)
    first = run_pass(settings, report=False)
    assert (first.outcome, first.candidate) == (PROMOTED, "v0001")
    return settings


# -- the first pass -------------------------------------------------------------------------------
def test_first_pass_ingests_trains_promotes_deploys_and_reports(workspace: Settings) -> None:
    result = run_pass(workspace)

    assert result.outcome == PROMOTED and result.promoted
    assert result.exit_code == EXIT_OK
    assert result.reason == "no production model yet"
    assert result.candidate == "v0001"
    assert result.production is None and result.production_f1 is None
    assert result.drift_check is None  # nothing in production to check
    assert result.ingestion is not None
    assert [r.status for r in result.ingestion.records] == ["ingested"] * 3
    assert result.ingestion.dataset_rows == 600
    assert result.candidate_f1 is not None and 0.6 < result.candidate_f1 <= 1.0

    assert production(workspace) == "v0001"
    assert manifest_version(workspace) == "v0001"
    assert (workspace.prod_folder / "trainedmodel.pkl").exists()
    deployed_files = (workspace.prod_folder / "ingestedfiles.txt").read_text().splitlines()
    assert deployed_files == ["dataset1.csv", "dataset2.csv", "dataset3.csv"]
    assert float((workspace.model_folder / "latestscore.txt").read_text()) == result.candidate_f1

    for name in REPORT_FILES:
        assert (workspace.model_folder / name).stat().st_size > 1000
    assert set(result.reports.values()) == {workspace.model_folder / n for n in REPORT_FILES}
    assert result.api_calls is None

    runs = History(workspace.history_db).runs()
    assert len(runs) == 1
    run = runs[0]
    assert (run.id, run.command, run.status, run.exit_code) == (result.run_id, "run", "ok", 0)
    assert [s.name for s in run.steps] == [
        *("check", "ingest", "train", "score", "promote", "deploy", "record", "report")
    ]
    assert all(s.status == "ok" for s in run.steps)
    assert run.summary == "promoted: no production model yet"
    assert run.detail["candidate"] == "v0001"
    assert set(result.timings) == {s.name for s in run.steps}
    assert any(line.startswith("Decision: promoted") for line in result.summary())


def test_first_pass_without_report_writes_no_report_files(workspace: Settings) -> None:
    result = run_pass(workspace, report=False)

    assert result.outcome == PROMOTED
    assert result.reports == {}
    for name in REPORT_FILES:
        assert not (workspace.model_folder / name).exists()
    steps = [s.name for s in History(workspace.history_db).runs()[0].steps]
    assert steps == ["check", "ingest", "train", "score", "promote", "deploy", "record"]


# -- no new data ----------------------------------------------------------------------------------
_IDENTITY = ("mtime_ns", "ctime_ns", "dev", "ino")


def _without_identities(manifest: Path) -> Any:
    """The manifest without the files' identities: a file read within two seconds of its last
    change has none recorded, and the next pass that reads it again records them."""
    data = json.loads(manifest.read_text())
    for record in data.get("files", []):
        for key in _IDENTITY:
            record.pop(key, None)
    return data


def test_pass_without_new_data_changes_nothing(deployed: Settings) -> None:
    manifest = deployed.output_folder / "dataset.json"
    before = _without_identities(manifest)
    batches = [b.id for b in Dataset(deployed.output_folder).batches]
    versions = version_dirs(deployed)
    pointer = (deployed.model_folder / "production.json").read_bytes()
    deployment = deployed.prod_folder.resolve()

    result = run_pass(deployed, report=False)

    assert result.outcome == NO_NEW_DATA
    assert result.exit_code == EXIT_OK
    assert result.candidate is None and result.ingestion is None
    assert result.production == "v0001"
    assert _without_identities(manifest) == before
    assert [b.id for b in Dataset(deployed.output_folder).batches] == batches
    assert version_dirs(deployed) == versions == ["v0001"]
    assert (deployed.model_folder / "production.json").read_bytes() == pointer
    assert deployed.prod_folder.resolve() == deployment

    runs = History(deployed.history_db).runs()
    assert len(runs) == 2
    assert runs[0].id == result.run_id
    assert (runs[0].status, runs[0].exit_code) == ("ok", 0)
    assert runs[0].summary is not None and runs[0].summary.startswith("no-new-data")
    # Files changed less than two seconds before they were read are read again once (their
    # time cannot be trusted); the check itself never reads a file.
    assert [s.name for s in runs[0].steps] in (["check"], ["check", "ingest"])


def test_kept_candidate_is_not_retrained_when_no_new_file_arrives(deployed: Settings) -> None:
    add_batch(deployed.input_folder, "wrong.csv", rows=1500, seed=9, label_noise=0.9)
    kept = run_pass(deployed, report=False)
    assert kept.outcome == KEPT
    assert version_dirs(deployed) == ["v0001", "v0002"]

    # Nothing new arrived: the same data would only train the same rejected model again, and
    # every tick of the schedule would add another version.
    again = run_pass(deployed, report=False)

    assert again.outcome == NO_NEW_DATA
    assert again.candidate is None
    assert version_dirs(deployed) == ["v0001", "v0002"]


# -- promotion and keeping production -------------------------------------------------------------
def test_clearly_better_candidate_is_promoted_and_logged(weak_production: Settings) -> None:
    settings = reconfigure(weak_production, promotion_margin=0.1)
    add_batch(settings.input_folder, "clean.csv", rows=1500, seed=4)

    result = run_pass(settings, report=False)

    assert result.outcome == PROMOTED
    assert result.exit_code == EXIT_OK
    assert (result.production, result.candidate) == ("v0001", "v0002")
    assert result.candidate_f1 is not None and result.production_f1 is not None
    assert result.candidate_f1 - result.production_f1 >= 0.1
    assert "higher by" in result.reason and "margin 0.1" in result.reason
    assert production(settings) == "v0002"
    assert manifest_version(settings) == "v0002"

    lines = (settings.model_folder / "promotions.jsonl").read_text().splitlines()
    assert len(lines) == 2
    move = json.loads(lines[-1])
    assert (move["action"], move["from_version"], move["to_version"]) == (
        "promote",
        "v0001",
        "v0002",
    )
    assert move["from_f1"] == pytest.approx(result.production_f1)
    assert move["to_f1"] == pytest.approx(result.candidate_f1)
    assert result.reason in move["reason"]

    promotion = History(settings.history_db).promotions()[-1]
    assert promotion.run_id == result.run_id
    assert (promotion.from_version, promotion.to_version) == ("v0001", "v0002")
    assert promotion.from_f1 == pytest.approx(result.production_f1)
    assert promotion.to_f1 == pytest.approx(result.candidate_f1)

    steps = [s.name for s in History(settings.history_db).runs()[0].steps]
    assert steps == [
        *("check", "ingest", "data_drift", "drift_check", "train", "score", "promote"),
        *("deploy", "record"),
    ]


def test_promotion_log_records_the_scores_the_decision_compared(
    weak_production: Settings,
) -> None:
    # The labelled test data is refreshed between passes (test_data_path is a folder).
    write_csv(generate(400, seed=77, missing_rate=0.0), weak_production.test_data / "testdata.csv")
    add_batch(weak_production.input_folder, "clean.csv", rows=1500, seed=4)

    result = run_pass(weak_production, report=False)

    assert result.outcome == PROMOTED
    move = json.loads(
        (weak_production.model_folder / "promotions.jsonl").read_text().splitlines()[-1]
    )
    assert move["to_f1"] == pytest.approx(result.candidate_f1)
    assert move["from_f1"] == pytest.approx(result.production_f1)


def test_worse_candidate_is_kept_and_the_reason_recorded(deployed: Settings) -> None:
    pointer = (deployed.model_folder / "production.json").read_bytes()
    add_batch(deployed.input_folder, "wrong.csv", rows=1500, seed=9, label_noise=0.9)

    result = run_pass(deployed)

    assert result.outcome == KEPT and not result.promoted
    assert result.exit_code == EXIT_OK
    assert (result.production, result.candidate) == ("v0001", "v0002")
    assert result.candidate_f1 is not None and result.production_f1 is not None
    assert result.candidate_f1 < result.production_f1
    assert "not higher than production" in result.reason
    assert (deployed.model_folder / "production.json").read_bytes() == pointer
    assert manifest_version(deployed) == "v0001"
    assert len((deployed.model_folder / "promotions.jsonl").read_text().splitlines()) == 1
    assert result.api_calls is None  # only after a promotion
    assert set(result.reports) == {"confusion matrix", "classification report", "HTML report"}
    assert report_version(deployed) == "v0001"  # rebuilt: it describes production

    run = History(deployed.history_db).runs()[0]
    assert run.id == result.run_id
    assert run.summary == f"kept: {result.reason}"
    assert run.detail["outcome"] == KEPT
    assert run.detail["candidate_f1"] == pytest.approx(result.candidate_f1)
    assert run.detail["production_f1"] == pytest.approx(result.production_f1)
    assert [s.name for s in run.steps] == [
        *("check", "ingest", "data_drift", "drift_check", "train", "score", "report")
    ]
    assert len(History(deployed.history_db).promotions()) == 1


def test_margin_keeps_production_even_when_candidate_is_better(
    weak_production: Settings,
) -> None:
    settings = reconfigure(weak_production, promotion_margin=1.0)
    add_batch(settings.input_folder, "clean.csv", rows=1500, seed=4)

    result = run_pass(settings, report=False)

    assert result.outcome == KEPT
    assert result.candidate_f1 is not None and result.production_f1 is not None
    assert result.candidate_f1 > result.production_f1
    assert "below the margin 1.0" in result.reason
    assert production(settings) == "v0001"
    assert History(settings.history_db).runs()[0].summary == f"kept: {result.reason}"


# -- what counts as new data ----------------------------------------------------------------------
def test_renamed_copy_of_an_ingested_file_is_not_new(deployed: Settings) -> None:
    shutil.copyfile(deployed.input_folder / "dataset2.csv", deployed.input_folder / "copy.csv")
    batches = [b.id for b in Dataset(deployed.output_folder).batches]

    result = run_pass(deployed, report=False)

    assert result.outcome == NO_NEW_DATA
    assert result.exit_code == EXIT_OK
    assert result.candidate is None
    assert version_dirs(deployed) == ["v0001"]
    assert [b.id for b in Dataset(deployed.output_folder).batches] == batches
    copy = [r for r in file_records(deployed) if r["name"] == "copy.csv"]
    assert len(copy) == 1
    assert copy[0]["status"] == "duplicate-file"
    assert copy[0]["sha256"] == sha256(deployed.input_folder / "dataset2.csv")
    assert "dataset2.csv" in copy[0]["reason"]

    again = run_pass(deployed, report=False)  # recorded once, not every pass
    assert again.outcome == NO_NEW_DATA and again.ingestion is None
    assert len([r for r in file_records(deployed) if r["name"] == "copy.csv"]) == 1


def test_changed_file_with_the_same_name_is_new(deployed: Settings) -> None:
    path = deployed.input_folder / "dataset1.csv"
    old_hash = sha256(path)
    add_batch(deployed.input_folder, "dataset1.csv", rows=200, seed=11)
    assert sha256(path) != old_hash

    result = run_pass(deployed, report=False)

    assert result.ingestion is not None
    assert [r.name for r in result.ingestion.ingested] == ["dataset1.csv"]
    assert result.ingestion.rows_added == 200
    assert result.candidate == "v0002"
    assert result.outcome in (PROMOTED, KEPT)
    assert version_dirs(deployed) == ["v0001", "v0002"]
    card = Registry(deployed.model_folder).card("v0002")
    assert card.training["rows"] == 800
    records = [r for r in file_records(deployed) if r["name"] == "dataset1.csv"]
    assert [r["status"] for r in records] == ["ingested", "ingested"]
    assert {r["sha256"] for r in records} == {old_hash, sha256(path)}


# -- model drift check ----------------------------------------------------------------------------
def test_drift_check_scores_production_on_the_new_batch(deployed: Settings) -> None:
    add_batch(deployed.input_folder, "batch-5.csv", rows=600, seed=5)

    result = run_pass(deployed, report=False)

    assert result.ingestion is not None and result.ingestion.batch is not None
    drift = result.drift_check
    assert drift is not None
    assert drift.version == "v0001"
    assert drift.batches == [result.ingestion.batch.id]
    assert drift.rows == result.ingestion.rows_added == 600
    assert drift.f1_recorded == Registry(deployed.model_folder).card("v0001").f1
    assert 0.0 <= drift.f1_new_data <= 1.0
    assert drift.model_drift is False

    rows = [s for s in History(deployed.history_db).scores() if s.role == "drift-check"]
    assert len(rows) == 1
    assert (rows[0].run_id, rows[0].version) == (result.run_id, "v0001")
    assert rows[0].f1 == pytest.approx(drift.f1_new_data)
    assert result.ingestion.batch.id in rows[0].data
    step = next(s for s in History(deployed.history_db).runs()[0].steps if s.name == "drift_check")
    assert step.detail["model_drift"] is False


def test_noisy_batch_flags_model_drift(deployed: Settings) -> None:
    add_batch(deployed.input_folder, "noisy.csv", rows=600, seed=9, label_noise=0.5)

    result = run_pass(deployed, report=False)

    drift = result.drift_check
    assert drift is not None
    assert drift.model_drift is True
    assert drift.f1_new_data < drift.f1_recorded - drift.tolerance
    assert any("→ model drift" in line for line in result.summary())
    assert History(deployed.history_db).runs()[0].detail["drift_check"]["model_drift"] is True


# -- bad input ------------------------------------------------------------------------------------
def test_broken_file_makes_the_pass_partial_but_good_files_go_in(deployed: Settings) -> None:
    broken = deployed.input_folder / "broken.csv"
    broken.write_text(
        "corporation,lastmonth_activity,lastyear_activity,number_of_employees,exited\n"
        "abcd,lots,1200,10,0\n"
    )
    add_batch(deployed.input_folder, "batch-5.csv", rows=300, seed=5)

    result = run_pass(deployed, report=False)

    assert result.exit_code == EXIT_PARTIAL
    assert result.ingestion is not None
    assert [r.name for r in result.ingestion.ingested] == ["batch-5.csv"]
    assert [r.name for r in result.ingestion.quarantined] == ["broken.csv"]
    assert "lastmonth_activity" in (result.ingestion.quarantined[0].reason or "")
    assert result.ingestion.rows_added == 300
    assert result.candidate == "v0002"  # the pass went on: trained and scored
    assert result.outcome in (PROMOTED, KEPT)
    assert broken.exists()  # never deleted
    run = History(deployed.history_db).runs()[0]
    assert (run.status, run.exit_code) == ("partial", EXIT_PARTIAL)
    assert any("quarantined broken.csv" in line for line in result.summary())

    again = run_pass(deployed, report=False)  # retried only once it changes
    assert again.ingestion is None
    # the problem stays visible: every pass while the file is there is partial, naming it
    assert again.exit_code == EXIT_PARTIAL
    assert [r.name for r in again.quarantined] == ["broken.csv"]
    broken.unlink()
    assert run_pass(deployed, report=False).exit_code == EXIT_OK


# -- one pass at a time ---------------------------------------------------------------------------
def test_pass_refuses_to_start_while_another_holds_the_lock(workspace: Settings) -> None:
    with Workspace.of(workspace).lock.held(), pytest.raises(PipelineBusyError) as caught:
        run_pass(workspace, report=False)

    assert caught.value.exit_code == 5
    assert isinstance(caught.value, RuntimeError)
    assert "another pass is running" in str(caught.value)
    assert not (workspace.output_folder / "dataset.json").exists()
    assert production(workspace) is None
    # Released: the next pass runs.
    assert run_pass(workspace, report=False).outcome == PROMOTED


def test_second_lock_holder_is_refused(workspace: Settings) -> None:
    with (
        Workspace.of(workspace).lock.held(),
        pytest.raises(PipelineBusyError),
        Workspace.of(workspace).lock.held(),
    ):
        pytest.fail("two holders of the pass lock")  # pragma: no cover


def test_cli_run_while_another_process_holds_the_lock_exits_5(
    workspace: Settings, workspace_config: Path, beryl_cli: CliRunner
) -> None:
    with filelock.FileLock(str(workspace.lock_file)):
        out = beryl_cli("run", "--no-apicalls", config=workspace_config)

    assert out.returncode == 5
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert lines[0].startswith("error: another pass is running")
    assert "Traceback" not in out.stderr + out.stdout
    assert not (workspace.output_folder / "dataset.json").exists()


# -- the promotion rule ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("candidate", "current", "margin", "expected"),
    [
        (0.50, None, 0.0, True),  # no production model
        (0.10, None, 0.5, True),  # no production model, whatever the margin
        (0.80, 0.80, 0.0, False),  # equal: not strictly better
        (0.79, 0.80, 0.0, False),  # worse
        (0.82, 0.80, 0.05, False),  # better by less than the margin
        (0.85, 0.80, 0.05, True),  # better by exactly the margin
        (0.90, 0.80, 0.05, True),  # better by more than the margin
        (0.81, 0.80, 0.0, True),  # default margin: strictly better is enough
        (0.3, 0.2, 0.1, True),  # 0.3 - 0.2 is 0.0999…: still "by the margin"
    ],
)
def test_should_promote(
    candidate: float, current: float | None, margin: float, expected: bool
) -> None:
    promote, reason = should_promote(candidate, current, margin)
    assert promote is expected
    assert reason
    if current is None:
        assert reason == "no production model yet"


@given(
    current=st.floats(0.0, 1.0),
    lower=st.floats(0.0, 1.0),
    higher=st.floats(0.0, 1.0),
    margin=st.floats(0.0, 1.0),
)
def test_should_promote_is_monotonic_in_the_candidate_score(
    current: float, lower: float, higher: float, margin: float
) -> None:
    lower, higher = sorted((lower, higher))
    if should_promote(lower, current, margin)[0]:
        assert should_promote(higher, current, margin)[0]
    if should_promote(higher, current, margin)[0]:
        assert higher > current


# -- the CLI --------------------------------------------------------------------------------------
def test_cli_run_json_end_to_end(
    workspace: Settings, workspace_config: Path, beryl_cli: CliRunner
) -> None:
    first = beryl_cli("run", "--json", "--no-apicalls", config=workspace_config, check=True)
    answer = json.loads(first.stdout)
    assert answer["outcome"] == PROMOTED
    assert answer["exit_code"] == 0
    assert answer["candidate"] == "v0001"
    assert answer["api_calls"] is None
    assert {"check", "ingest", "train", "score", "promote", "deploy", "report"} <= set(
        answer["timings"]
    )
    assert production(workspace) == "v0001"

    second = beryl_cli("run", "--json", "--no-apicalls", config=workspace_config, check=True)
    again = json.loads(second.stdout)
    assert again["outcome"] == NO_NEW_DATA
    assert again["exit_code"] == 0
    assert again["run_id"] == answer["run_id"] + 1
    assert not (workspace.model_folder / "apireturns.txt").exists()
