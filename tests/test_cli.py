"""End-to-end: the real ``beryl`` CLI in a subprocess over a temporary workspace."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import CliRunner

from beryl.errors import EXIT_PARTIAL


def test_whole_loop_through_the_cli(tmp_path: Path, beryl_cli: CliRunner) -> None:
    root = tmp_path / "ws"
    beryl_cli("init", str(root), "--rows", "800", "--files", "3", check=True)
    config = root / "config.json"
    assert config.exists()

    out = beryl_cli("ingest", "--json", config=config, check=True)
    record = json.loads(out.stdout)
    assert [r["status"] for r in record["records"]] == ["ingested"] * 3
    assert record["dataset_rows"] == 800
    assert (root / "ingesteddata" / "finaldata.csv").read_text().count("\n") == 801

    card = json.loads(beryl_cli("train", "--json", config=config, check=True).stdout)
    assert card["id"] == "v0001"
    scored = json.loads(beryl_cli("score", "--json", config=config, check=True).stdout)
    assert 0.6 < scored["f1"] <= 1.0
    assert float((root / "models" / "latestscore.txt").read_text()) == scored["f1"]

    beryl_cli("deploy", config=config, check=True)
    prod = root / "production_deployment"
    assert {p.name for p in prod.iterdir()} >= {
        "trainedmodel.pkl",
        "ingestedfiles.txt",
        "latestscore.txt",
        "manifest.json",
    }
    assert json.loads((prod / "manifest.json").read_text())["version"] == "v0001"

    diag = json.loads(beryl_cli("diagnose", "--json", "--no-outdated", config=config).stdout)
    assert diag["production_version"] == "v0001"
    assert set(diag["summary_stats"]) == {
        "lastmonth_activity",
        "lastyear_activity",
        "number_of_employees",
    }
    assert len(diag["predictions"]["predictions"]) == 200  # test data: rows // 4

    beryl_cli("report", config=config, check=True)
    for name in ("confusionmatrix.png", "classificationreport.png", "report.html"):
        assert (root / "models" / name).stat().st_size > 1000

    runs = json.loads(beryl_cli("history", "--json", config=config, check=True).stdout)
    commands = [r["command"] for r in runs]
    assert {"ingest", "train", "score", "deploy", "report"} <= set(commands)
    assert all(r["status"] == "ok" for r in runs)


def test_second_model_promote_and_rollback(tmp_path: Path, beryl_cli: CliRunner) -> None:
    root = tmp_path / "ws"
    beryl_cli("init", str(root), "--rows", "300", check=True)
    config = root / "config.json"
    for command in ("ingest", "train", "deploy"):
        beryl_cli(command, config=config, check=True)
    beryl_cli("add-batch", "--rows", "200", "--seed", "5", config=config, check=True)
    beryl_cli("ingest", config=config, check=True)
    beryl_cli("train", config=config, check=True)
    beryl_cli("models", "promote", "v0002", config=config, check=True)
    listed = json.loads(beryl_cli("models", "list", "--json", config=config, check=True).stdout)
    assert [m["id"] for m in listed if m["production"]] == ["v0002"]
    beryl_cli("models", "rollback", config=config, check=True)
    listed = json.loads(beryl_cli("models", "list", "--json", config=config, check=True).stdout)
    assert [m["id"] for m in listed if m["production"]] == ["v0001"]
    manifest = json.loads((root / "production_deployment" / "manifest.json").read_text())
    assert manifest["version"] == "v0001"
    shown = json.loads(
        beryl_cli("models", "show", "v0002", "--json", config=config, check=True).stdout
    )
    assert shown["training"]["rows"] == 500


def test_bad_config_is_one_clear_error(tmp_path: Path, beryl_cli: CliRunner) -> None:
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"inptu_folder_path": "x", "promotion_margin": "lots"}))
    result = beryl_cli("ingest", config=config)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "inptu_folder_path" in result.stderr and "promotion_margin" in result.stderr


def test_missing_config_points_to_init(tmp_path: Path, beryl_cli: CliRunner) -> None:
    result = beryl_cli("train", cwd=tmp_path)
    assert result.returncode == 2
    assert "beryl init" in result.stderr
    assert "Traceback" not in result.stderr


def test_partial_ingestion_exit_code(workspace_config: Path, beryl_cli: CliRunner) -> None:
    source = workspace_config.parent / "sourcedata"
    (source / "broken.csv").write_text("corporation,lastmonth_activity\nabc,not-a-number\n")
    result = beryl_cli("ingest", "--json", config=workspace_config)
    assert result.returncode == EXIT_PARTIAL
    records = {r["name"]: r for r in json.loads(result.stdout)["records"]}
    assert records["broken.csv"]["status"] == "quarantined"
    assert "exited" in records["broken.csv"]["reason"]
    assert sum(r["status"] == "ingested" for r in records.values()) == 3
    assert (source / "broken.csv").exists()
    runs = json.loads(beryl_cli("history", "--json", config=workspace_config).stdout)
    assert runs[0]["status"] == "partial" and runs[0]["exit_code"] == EXIT_PARTIAL


def test_tampered_model_is_refused(workspace_config: Path, beryl_cli: CliRunner) -> None:
    beryl_cli("ingest", config=workspace_config, check=True)
    beryl_cli("train", config=workspace_config, check=True)
    model = workspace_config.parent / "models" / "versions" / "v0001" / "model.pkl"
    data = bytearray(model.read_bytes())
    data[-5] ^= 0xFF
    model.write_bytes(bytes(data))
    result = beryl_cli("deploy", config=workspace_config)
    assert result.returncode == 4
    assert "do not match their signature" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (workspace_config.parent / "production_deployment").exists()


def test_train_before_ingest_says_what_to_do(workspace_config: Path, beryl_cli: CliRunner) -> None:
    result = beryl_cli("train", config=workspace_config)
    assert result.returncode == 3
    assert "beryl ingest" in result.stderr


def test_bad_model_parameters_stop_training_not_the_other_commands(
    workspace_config: Path, beryl_cli: CliRunner
) -> None:
    """Model parameters are checked (by scikit-learn) by whatever trains; commands that never
    train start without loading scikit-learn."""
    data = json.loads(workspace_config.read_text())
    data["model"] = {"bogus_param": 1, "C": -1}
    workspace_config.write_text(json.dumps(data))

    beryl_cli("ingest", config=workspace_config, check=True)
    for args in (["train"], ["run", "--no-apicalls"]):
        result = beryl_cli(*args, config=workspace_config)
        assert result.returncode == 2, result.stderr
        assert "bogus_param" in result.stderr and "'C'" in result.stderr
        assert str(workspace_config) in result.stderr
        assert "Traceback" not in result.stderr
    assert not (workspace_config.parent / "models" / "versions").exists()
