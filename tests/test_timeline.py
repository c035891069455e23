"""Monitoring over time: model drift by pass against the recorded F1 and its tolerance band, data
drift per feature by pass, the last decision, the files not ingested as they are and the growth
of the dataset, the same on the dashboard, in the report, in ``beryl diagnose``, ``/diagnostics``
and the metrics; the report is rebuilt on every pass that ingests."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from tests.test_event_loop import in_process

from beryl import config
from beryl.config import Settings
from beryl.data.demo import add_batch, init_workspace
from beryl.loop.checks import model_drift
from beryl.monitoring.history import History
from beryl.monitoring.reporting import REPORT_FILE, REPORT_RECORD
from beryl.workspace import Workspace


def run_cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "beryl", "--config", str(settings.root / "config.json"), *args],
        capture_output=True,
        text=True,
    )


def written_at(settings: Settings) -> str:
    return str(json.loads((settings.model_folder / REPORT_RECORD).read_text())["written_at"])


@pytest.fixture(scope="module")
def four_passes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """Pass 1 trains; pass 2 brings labels the model gets wrong (model drift); pass 3 a batch
    too small to test; pass 4 only a copy of a known file and a broken file."""
    ws = init_workspace(tmp_path_factory.mktemp("timeline") / "ws", rows=600, files=3, seed=0)
    settings = config.load(ws.config)
    outputs, reports = [], []
    for step in range(4):
        if step == 1:
            add_batch(settings.input_folder, "noisy.csv", rows=400, seed=11, label_noise=0.45)
        elif step == 2:
            add_batch(settings.input_folder, "small.csv", rows=26, seed=12)
        elif step == 3:
            shutil.copy(settings.input_folder / "dataset1.csv", settings.input_folder / "copy.csv")
            (settings.input_folder / "broken.csv").write_text("corporation,exited\nabcd,1\n")
        outputs.append(run_cli(settings, "run", "--no-apicalls"))
        reports.append(written_at(settings))
    return {"settings": settings, "outputs": outputs, "reports": reports}


def test_model_drift_is_drifted_then_not_tested_with_its_reason(
    four_passes: dict[str, object],
) -> None:
    settings = four_passes["settings"]
    outputs = four_passes["outputs"]
    assert isinstance(settings, Settings) and isinstance(outputs, list)
    assert [o.returncode for o in outputs] == [0, 0, 0, 10], [o.stderr for o in outputs]
    checks = History(settings.history_db).model_drift_checks()
    assert [c.verdict for c in checks] == ["drifted", "not tested"]
    drifted, small = checks
    assert drifted.f1_new_data is not None and drifted.f1_recorded is not None
    assert drifted.f1_new_data < drifted.f1_recorded - settings.model_drift_tolerance
    assert small.rows == 26 and small.note is not None and "min_rows=30" in small.note
    line = next(x for x in outputs[2].stdout.splitlines() if x.startswith("Model drift"))
    assert "not tested (only 26 new labelled rows" in line
    assert "→ model drift." not in line and "no model drift" not in line


def test_a_model_drift_check_below_min_rows_is_never_a_verdict(workspace: Settings) -> None:
    """The check itself: too few rows is not tested, even when the F1 there is far off."""
    from beryl.loop.passes import run_pass

    run_pass(workspace)
    ws = Workspace.of(workspace)
    production = ws.registry.production()
    assert production is not None
    batches = [b.id for b in ws.dataset.batches]
    enough = model_drift(ws.registry, production, ws.dataset, batches, 0.05, min_rows=30)
    assert enough.verdict in ("drifted", "not drifted") and enough.note is None
    too_few = model_drift(ws.registry, production, ws.dataset, batches, 0.05, min_rows=10_000)
    assert too_few.verdict == "not tested" and not too_few.model_drift
    assert too_few.note == f"only {too_few.rows} new labelled rows, fewer than min_rows=10000"


def test_the_report_is_rebuilt_on_every_pass_that_ingests_and_opens_with_the_decision(
    four_passes: dict[str, object],
) -> None:
    settings, reports = four_passes["settings"], four_passes["reports"]
    assert isinstance(settings, Settings) and isinstance(reports, list)
    assert len(set(reports)) == 4  # passes 3 (kept) and 4 (files only) rewrote it too
    page = (settings.model_folder / REPORT_FILE).read_text()
    assert page.index('id="lead"') < page.index("Model card")
    lead = re.search(r'<p id="decision-summary">([^<]*)</p>', page)
    assert lead is not None
    assert lead.group(1).startswith("Pass #3: candidate v0003 was kept out of production.")
    assert "Reason: candidate F1 is not higher than production" in lead.group(1)
    assert page.count('class="model-drift-point"') == 2
    assert 'data-file="broken.csv" data-status="quarantined" data-waiting="true"' in page
    assert 'data-file="copy.csv" data-status="duplicate-file"' in page
    assert page.count('class="growth-row"') == 3  # three batches: 600, 400 and 26 rows


def test_a_pass_that_ingests_nothing_leaves_the_report_alone(
    four_passes: dict[str, object],
) -> None:
    settings = four_passes["settings"]
    assert isinstance(settings, Settings)
    before = written_at(settings)
    again = run_cli(settings, "run", "--no-apicalls")
    assert again.returncode == 10  # broken.csv is still there
    assert written_at(settings) == before


def test_dashboard_diagnostics_and_metrics_show_the_same_history(
    four_passes: dict[str, object],
) -> None:
    settings = four_passes["settings"]
    assert isinstance(settings, Settings)
    ws = Workspace.of(settings)
    with in_process(settings) as (url, _):
        page = httpx.get(f"{url}/dashboard", timeout=30).text
        diagnostics = httpx.get(f"{url}/diagnostics", timeout=30).json()
        metrics = httpx.get(f"{url}/metrics", timeout=30).text
    badge = re.search(r'id="model-drift-status"[^>]*>([^<]*)<', page)
    assert badge is not None and badge.group(1) == "model drift not tested"
    live = re.search(r'id="live-drift-status"[^>]*>([^<]*)<', page)
    assert live is not None and live.group(1) == "live drift not tested"  # no traffic yet
    points = re.findall(r'class="model-drift-point"[^>]*data-verdict="([^"]*)"', page)
    assert points == ["drifted", "not tested"]
    recorded = re.findall(r'class="model-drift-point"[^>]*data-recorded="([^"]*)"', page)
    cards = {c.id: c for c in ws.registry.cards()}
    assert [float(r) for r in recorded] == [cards["v0001"].f1, cards["v0002"].f1]
    # Data drift per feature over time: one column per pass with a drift check.
    columns = re.findall(r'class="drift-pass" data-run="(\d+)" data-verdict="([^"]*)"', page)
    assert [verdict for _, verdict in columns] == ["not drifted", "not tested"]
    cells = re.findall(r'class="drift-cell num" data-feature="([^"]*)" data-run="(\d+)"', page)
    assert len(cells) == 2 * 3
    # The last decision: candidate against production, the figures of their cards.
    for role, version in (("candidate", "v0003"), ("production", "v0002")):
        row = re.search(rf'<tr data-role="{role}" data-version="{version}">(.*?)</tr>', page)
        assert row is not None, role
        shown = dict(re.findall(r'data-metric="(\w+)">([^<]*)<', row.group(1)))
        for name in ("f1", "precision", "recall"):
            assert shown[name] == f"{cards[version].metrics[name]:.4f}"
    growth = [
        int(v) for v in re.findall(r'class="growth-bar" data-batch="[^"]*" data-rows="(\d+)"', page)
    ]
    assert growth == [b.rows for b in ws.dataset.batches] == [600, 400, 26]
    assert re.search(r'data-file="copy.csv" data-status="duplicate-file"', page)
    # The same class names in the confusion matrix, the report and the predictions.
    assert "actual<br>0" in page and "predicted<br>1" in page and "not 1" not in page
    assert cards["v0002"].metrics["confusion_labels"] == ["0", "1"]

    assert diagnostics["model_drift"]["verdict"] == "not tested"
    assert diagnostics["model_drift"]["rows"] == 26
    assert re.search(r"^beryl_model_drift_tested 0\.0$", metrics, re.MULTILINE)
    assert not re.search(r"^beryl_model_drift ", metrics, re.MULTILINE)  # no false "no drift"
    diagnose = run_cli(settings, "diagnose", "--no-outdated", "--json")
    assert json.loads(diagnose.stdout)["model_drift"]["verdict"] == "not tested"
    text = run_cli(settings, "diagnose", "--no-outdated")
    assert "Model drift check — Pass #3: production v0002" in text.stdout.replace("\n", " ")


def test_a_drifted_model_lights_the_header_and_the_metric(tmp_path: Path) -> None:
    ws = init_workspace(tmp_path / "ws", rows=600, files=3, seed=0)
    settings = config.load(ws.config)
    assert run_cli(settings, "run", "--no-apicalls").returncode == 0
    add_batch(settings.input_folder, "noisy.csv", rows=400, seed=11, label_noise=0.45)
    assert run_cli(settings, "run", "--no-apicalls").returncode == 0
    with in_process(settings) as (url, _):
        page = httpx.get(f"{url}/dashboard", timeout=30).text
        metrics = httpx.get(f"{url}/metrics", timeout=30).text
    badge = re.search(r'id="model-drift-status" data-level="(\w+)">([^<]*)<', page)
    assert badge is not None and badge.group(1) == "red"
    assert badge.group(2).startswith("model drift · F1 0.")
    assert re.search(r"^beryl_model_drift 1\.0$", metrics, re.MULTILINE)
    assert re.search(r"^beryl_model_drift_tested 1\.0$", metrics, re.MULTILINE)
    f1 = re.search(r"^beryl_production_f1_new_data (\S+)$", metrics, re.MULTILINE)
    check = History(settings.history_db).model_drift_checks()[-1]
    assert f1 is not None and float(f1.group(1)) == pytest.approx(check.f1_new_data)
