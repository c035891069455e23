"""Every drift verdict has three states: drifted, not drifted, and not tested with the reason.
A batch too small to test is never reported as "no drift", anywhere."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from tests.test_event_loop import in_process

from beryl import config
from beryl.config import DriftSettings, Settings
from beryl.data.demo import add_batch, generate
from beryl.data.schema import Schema
from beryl.loop.passes import run_pass
from beryl.monitoring.drift import compare
from beryl.monitoring.results import DriftResult

SCHEMA = Schema(
    target="exited",
    positive_label=1,
    id_columns=["corporation"],
    numeric=["lastmonth_activity", "lastyear_activity", "number_of_employees"],
)


def test_a_batch_below_min_rows_is_not_tested_and_never_no_drift() -> None:
    result = compare(generate(500, seed=1), generate(26, seed=2), SCHEMA, DriftSettings())
    assert result.verdict == "not tested" and not result.dataset_drift
    assert result.note is not None and "min_rows=30" in result.note
    assert all(f.verdict == "not tested" for f in result.features.values())
    data = result.to_dict()
    assert data["verdict"] == "not tested" and data["note"] == result.note
    assert DriftResult.from_dict(data).verdict == "not tested"  # as the history reads it back


def test_the_share_counts_only_the_features_that_were_tested() -> None:
    reference, current = generate(800, seed=3), generate(400, seed=4, shift=1.5)
    current["number_of_employees"] = float("nan")  # nothing left to test in this column
    result = compare(reference, current, SCHEMA, DriftSettings())
    assert result.features["number_of_employees"].verdict == "not tested"
    tested = [f for f in result.features.values() if f.tested]
    assert len(tested) == 2
    assert result.drift_share == pytest.approx(sum(f.drifted for f in tested) / 2)
    assert result.verdict in ("drifted", "not drifted")
    assert result.note is not None
    assert result.note.startswith("number_of_employees not tested: ")


def test_every_surface_says_not_tested_for_a_small_batch(workspace: Settings) -> None:
    run_pass(workspace)
    add_batch(workspace.input_folder, "small.csv", rows=26, seed=9)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "beryl",
            "--config",
            str(workspace.root / "config.json"),
            "run",
            "--no-apicalls",
        ],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    line = next(x for x in done.stdout.splitlines() if x.startswith("Data drift"))
    assert "not tested" in line and "min_rows" in line and "no dataset drift" not in line

    diagnose = subprocess.run(
        [
            sys.executable,
            "-m",
            "beryl",
            "--config",
            str(workspace.root / "config.json"),
            "diagnose",
            "--no-outdated",
            "--json",
        ],
        capture_output=True,
        text=True,
    )
    assert diagnose.returncode == 0, diagnose.stderr
    assert json.loads(diagnose.stdout)["data_drift"]["verdict"] == "not tested"

    settings = config.load(workspace.root / "config.json")
    with in_process(settings) as (url, _):
        drift = httpx.get(f"{url}/drift", timeout=30).json()
        diagnostics = httpx.get(f"{url}/diagnostics", timeout=30).json()
        page = httpx.get(f"{url}/dashboard", timeout=30).text
        metrics = httpx.get(f"{url}/metrics", timeout=30).text
    assert drift["verdict"] == "not tested" and "min_rows" in drift["note"]
    assert all(f["verdict"] == "not tested" for f in drift["features"].values())
    assert diagnostics["data_drift"]["verdict"] == "not tested"
    badge = re.search(r'id="drift-status"[^>]*>([^<]*)<', page)
    assert badge is not None and badge.group(1) == "drift not tested", badge
    assert "no drift" not in page
    assert re.search(r"^beryl_data_drift_tested 0\.0$", metrics, re.MULTILINE)
    assert not re.search(r"^beryl_dataset_drift ", metrics, re.MULTILINE)


# -- problems stay visible until they are resolved -------------------------------------------------
def run_cli(workspace: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "beryl", "--config", str(workspace.root / "config.json"), *args],
        capture_output=True,
        text=True,
    )


def test_a_quarantined_file_stays_visible_and_every_pass_exits_10_until_it_is_fixed(
    workspace: Settings,
) -> None:
    assert run_cli(workspace, "run", "--no-apicalls").returncode == 0
    bad = workspace.input_folder / "broken.csv"
    bad.write_text("corporation,lastmonth_activity\nabcd,12\n")  # columns missing
    first = run_cli(workspace, "run", "--no-apicalls")
    assert first.returncode == 10, first.stdout + first.stderr
    again = run_cli(workspace, "run", "--no-apicalls", "--json")
    assert again.returncode == 10  # nothing new, and the problem is still there
    outcome = json.loads(again.stdout)
    assert [q["name"] for q in outcome["quarantined"]] == ["broken.csv"]
    text = run_cli(workspace, "run", "--no-apicalls")
    assert text.returncode == 10 and "Still quarantined" in text.stdout
    assert "broken.csv" in text.stdout

    diagnose = run_cli(workspace, "diagnose", "--no-outdated", "--json")
    assert [q["name"] for q in json.loads(diagnose.stdout)["quarantined_files"]] == ["broken.csv"]
    settings = config.load(workspace.root / "config.json")
    with in_process(settings) as (url, _):
        diagnostics = httpx.get(f"{url}/diagnostics", timeout=30).json()
        page = httpx.get(f"{url}/dashboard", timeout=30).text
        metrics = httpx.get(f"{url}/metrics", timeout=30).text
    assert [q["name"] for q in diagnostics["quarantined_files"]] == ["broken.csv"]
    assert diagnostics["outdated_packages"] is None  # not "nothing outdated": never checked
    assert "Input file broken.csv is quarantined" in page
    assert re.search(r"^beryl_quarantined_files 1\.0$", metrics, re.MULTILINE)

    bad.unlink()  # resolved: removed
    resolved = run_cli(workspace, "run", "--no-apicalls", "--json")
    assert resolved.returncode == 0 and json.loads(resolved.stdout)["quarantined"] == []


def test_a_pass_on_a_fresh_empty_workspace_says_there_is_no_data_yet(tmp_path: Path) -> None:
    from beryl.data.demo import init_workspace

    ws = init_workspace(tmp_path / "ws", rows=100, files=1, seed=5)
    settings = config.load(ws.config)
    for path in settings.input_folder.glob("*.csv"):
        path.unlink()
    done = run_cli(settings, "run", "--no-apicalls")
    assert done.returncode == 0
    assert "no data yet: put CSV files into" in done.stdout
    assert "since the last model was trained" not in done.stdout


@pytest.mark.parametrize("workers", [1, 2])
def test_serve_on_a_port_in_use_is_one_line_and_exit_8(workspace: Settings, workers: int) -> None:
    """An environment fault, not a data error (exit 3 was uvicorn's own startup failure)."""
    import socket

    with socket.create_server(("127.0.0.1", 0)) as holder:
        port = holder.getsockname()[1]
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "beryl",
                "--config",
                str(workspace.root / "config.json"),
                "serve",
                "--port",
                str(port),
                "--workers",
                str(workers),
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert done.returncode == 8, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in done.stderr
    assert f"cannot listen on 127.0.0.1:{port}: Address already in use" in lines[0]
    assert "--port" in lines[0]


def test_history_lists_passes_by_default_and_beryl_history_shows_outcomes(
    workspace: Settings,
) -> None:
    assert run_cli(workspace, "run", "--no-apicalls").returncode == 0
    assert run_cli(workspace, "diagnose", "--no-outdated").returncode == 0
    assert run_cli(workspace, "report").returncode == 0
    settings = config.load(workspace.root / "config.json")
    with in_process(settings) as (url, _):
        passes = httpx.get(f"{url}/history?limit=2", timeout=30).json()["runs"]
        every = httpx.get(f"{url}/history?limit=2&command=all", timeout=30).json()["runs"]
        bad = httpx.get(f"{url}/history?command=DROP%20TABLE", timeout=30)
    assert [r["command"] for r in passes] == ["run"]
    assert [r["command"] for r in every] == ["report", "diagnose"]
    assert bad.status_code == 422
    shown = run_cli(workspace, "history", "--command", "run")
    assert shown.returncode == 0 and "outcome" in shown.stdout and "promoted" in shown.stdout


def test_the_api_docs_need_nothing_from_the_network(workspace: Settings) -> None:
    """/docs and /redoc load their scripts and styles from Beryl itself (a host without
    internet still gets working pages), and with a token the assets are guarded like /docs."""
    settings = config.load(workspace.root / "config.json")
    with in_process(settings) as (url, _):
        for page in ("/docs", "/redoc"):
            html = httpx.get(f"{url}{page}", timeout=30).text
            sources = re.findall(r'(?:src|href)="([^"]+)"', html)
            sources += re.findall(r"url: '([^']+)'", html)
            assert sources, html
            assert not [s for s in sources if s.startswith(("http:", "https:", "//"))], sources
            for source in sources:
                answer = httpx.get(f"{url}{source}", timeout=30)
                assert answer.status_code == 200, source
                assert len(answer.content) > 100, source
    document = json.loads((workspace.root / "config.json").read_text())
    document["api"] = document.get("api", {}) | {"token": "s3cret-token"}
    (workspace.root / "config.json").write_text(json.dumps(document))
    with in_process(config.load(workspace.root / "config.json")) as (url, _):
        asset = "/docs/assets/swagger-ui-bundle.js"
        assert httpx.get(f"{url}{asset}", timeout=30).status_code == 401
        auth = {"Authorization": "Bearer s3cret-token"}
        assert httpx.get(f"{url}{asset}", headers=auth, timeout=30).status_code == 200


def test_bad_model_parameters_stop_a_pass_before_a_new_file_is_ingested(
    workspace: Settings,
) -> None:
    document = json.loads((workspace.root / "config.json").read_text())
    document["model"] = {"C": -1}
    (workspace.root / "config.json").write_text(json.dumps(document))
    done = run_cli(workspace, "run", "--no-apicalls")
    assert done.returncode == 2, done.stdout + done.stderr
    assert "model: " in done.stderr and "C" in done.stderr and "Traceback" not in done.stderr
    assert not (workspace.output_folder / "dataset.json").exists()  # nothing ingested yet


def test_bad_model_parameters_are_listed_with_the_other_config_errors(
    workspace: Settings,
) -> None:
    """One look at the error lists everything to fix, whatever the command."""
    document = json.loads((workspace.root / "config.json").read_text())
    document["model"] = {"C": -1, "solverr": "lbfgs"}
    document["drift"] = {"min_rows": 0}
    (workspace.root / "config.json").write_text(json.dumps(document))
    for command in (["config", "check"], ["diagnose", "--no-outdated"], ["run", "--no-apicalls"]):
        done = run_cli(workspace, *command)
        assert done.returncode == 2, command
        problems = [line for line in done.stderr.splitlines() if line.strip().startswith("- ")]
        assert len(problems) == 2, done.stderr
        assert any(p.strip().startswith("- drift.min_rows:") for p in problems)
        model = next(p for p in problems if p.strip().startswith("- model:"))
        assert "solverr" in model and "'C' parameter" in model
        assert "Traceback" not in done.stderr
    assert not (workspace.output_folder / "dataset.json").exists()


def test_config_check_says_a_good_file_is_valid_and_touches_nothing(workspace: Settings) -> None:
    before = sorted(p.name for p in workspace.root.iterdir())
    done = run_cli(workspace, "config", "check")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"{workspace.root / 'config.json'} is valid."
    assert sorted(p.name for p in workspace.root.iterdir()) == before
    document = json.loads((workspace.root / "config.json").read_text())
    document["model"] = {"C": -1}
    (workspace.root / "config.json").write_text(json.dumps(document))
    bad = run_cli(workspace, "config", "check")  # found only by scikit-learn: checked here too
    assert bad.returncode == 2 and "model: " in bad.stderr
