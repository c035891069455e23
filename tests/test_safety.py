"""The loop against faults of the machine and of its users: full disks, read-only and closed
folders, a prediction that would overwrite its input, labels the model does not know and test
data that leaked into the training data. Each ends in one line that names the file and what to
do, with the workspace's state intact, and the next pass (or the command again) recovering.

Disks are filled and folders closed for real: a small tmpfs and read-only bind mounts (as root;
root ignores permissions, so closed folders use an unprivileged user).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from tests.conftest import CliRunner

from beryl import config
from beryl.config import Settings
from beryl.data.dataset import Dataset
from beryl.data.demo import init_workspace
from beryl.model.registry import Registry
from beryl.monitoring.history import History

ROOT = os.geteuid() == 0


@contextlib.contextmanager
def mounted(
    target: Path, *options: str, kind: str = "bind", source: Path | None = None
) -> Iterator[Path]:
    """Mount ``source`` (a bind) or a tmpfs on ``target`` for the block."""
    if not ROOT:
        pytest.skip("mounting needs root")
    target.mkdir(parents=True, exist_ok=True)
    if kind == "tmpfs":
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", ",".join(options), "tmpfs", str(target)], check=True
        )
    else:
        subprocess.run(["mount", "--bind", str(source), str(target)], check=True)
        if options:
            subprocess.run(
                ["mount", "-o", ",".join(["remount", "bind", *options]), str(target)], check=True
            )
    try:
        yield target
    finally:
        subprocess.run(["umount", "-l", str(target)], check=True)


def _fresh(root: Path, **overrides: object) -> Path:
    ws = init_workspace(root, rows=600, files=3, seed=5)
    data = json.loads(ws.config.read_text())
    data["package_index_url"] = "http://127.0.0.1:9"
    data.update(overrides)
    ws.config.write_text(json.dumps(data))
    return ws.config


def _clean_failure(result: subprocess.CompletedProcess[str]) -> str:
    assert "Traceback" not in result.stderr + result.stdout, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines, result.stdout
    return result.stderr


# -- predictions never overwrite their input ------------------------------------------------------
@pytest.mark.parametrize("how", ["same name", "a symlink", "a hard link", "another spelling"])
def test_predict_refuses_to_write_over_its_input(
    tmp_path: Path, beryl_cli: CliRunner, how: str
) -> None:
    config_path = _fresh(tmp_path / "ws")
    beryl_cli("run", "--no-apicalls", config=config_path, check=True)
    source = next((tmp_path / "ws" / "testdata").glob("*.csv"))
    before = source.read_bytes()
    output = {
        "same name": source,
        "a symlink": tmp_path / "link.csv",
        "a hard link": tmp_path / "hard.csv",
        "another spelling": source.parent / ".." / source.parent.name / source.name,
    }[how]
    if how == "a symlink":
        output.symlink_to(source)
    elif how == "a hard link":
        os.link(source, output)
    result = beryl_cli("predict", str(source), "-o", str(output), config=config_path)
    assert result.returncode == 3
    assert "is the input file" in _clean_failure(result)
    assert source.read_bytes() == before


# -- labels the model does not know ---------------------------------------------------------------
def test_test_labels_outside_the_models_classes_are_refused(
    tmp_path: Path, beryl_cli: CliRunner
) -> None:
    config_path = _fresh(tmp_path / "ws")
    beryl_cli("run", "--no-apicalls", config=config_path, check=True)
    test_file = next((tmp_path / "ws" / "testdata").glob("*.csv"))
    frame = pd.read_csv(test_file, dtype=str)
    frame.loc[[3, 7], "exited"] = "2"
    frame.to_csv(test_file, index=False)
    card_before = Registry(tmp_path / "ws" / "models").card("v0001").metrics
    result = beryl_cli("score", "--version", "v0001", config=config_path)
    assert result.returncode == 3
    message = _clean_failure(result)
    assert "'2'" in message or "2" in message
    assert "does not know" in message and "rows 4, 8" in message
    assert str(test_file.parent) in message
    assert Registry(tmp_path / "ws" / "models").card("v0001").metrics == card_before


# -- test data copied into the input folder -------------------------------------------------------
def test_test_rows_in_the_training_data_are_warned_about_everywhere(
    tmp_path: Path, beryl_cli: CliRunner
) -> None:
    config_path = _fresh(tmp_path / "ws")
    root = tmp_path / "ws"
    beryl_cli("run", "--no-apicalls", config=config_path, check=True)
    test_file = next((root / "testdata").glob("*.csv"))
    shutil.copy(test_file, root / "sourcedata" / "copied-test-data.csv")
    result = beryl_cli("run", "--no-apicalls", "--json", config=config_path)
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    rows = len(pd.read_csv(test_file))
    assert answer["test_overlap"] == {"rows": rows, "shared": rows, "share": 1.0}
    assert "also in the training data" in answer["reason"]
    text = beryl_cli("history", "--json", config=config_path, check=True).stdout
    assert json.loads(text)[0]["detail"]["test_overlap"]["shared"] == rows
    settings = config.load(config_path)
    registry = Registry(settings.model_folder)
    assert registry.card(registry.latest()).metrics["test_overlap"]["shared"] == rows
    if registry.production() == registry.latest():
        from beryl.monitoring.dashboard import render_dashboard
        from beryl.monitoring.overview import dashboard_data

        page = render_dashboard(dashboard_data(settings))
        assert 'id="warnings"' in page and "also in" in page


def test_no_overlap_no_warning(tmp_path: Path, beryl_cli: CliRunner) -> None:
    config_path = _fresh(tmp_path / "ws")
    result = beryl_cli("run", "--no-apicalls", "--json", config=config_path, check=True)
    answer = json.loads(result.stdout)
    assert answer["test_overlap"]["shared"] == 0 and "warning" not in answer["reason"]


# -- full disks -----------------------------------------------------------------------------------
def _rows(settings: Settings) -> int:
    return Dataset(settings.output_folder).rows


@pytest.mark.slow
def test_a_full_disk_at_any_step_costs_nothing_and_the_next_pass_recovers(
    tmp_path: Path, beryl_cli: CliRunner
) -> None:
    """The workspace on a small tmpfs, with ballast leaving less and less room: each pass either
    completes or stops with one line about the full disk; after the ballast goes, the next pass
    completes and the dataset holds every row exactly once."""
    template = tmp_path / "template"
    _fresh(template)
    outcomes: dict[int, int] = {}
    for free_kb in (40, 200, 600, 1200, 2000, 3000):
        disk = tmp_path / f"disk-{free_kb}"
        with mounted(disk, "size=16m", kind="tmpfs"):
            shutil.copytree(template, disk / "ws", symlinks=True)
            config_path = disk / "ws" / "config.json"
            used = shutil.disk_usage(disk)
            ballast = disk / "ballast"
            ballast.write_bytes(b"\0" * max(0, used.free - free_kb * 1024))
            result = beryl_cli("run", "--no-apicalls", config=config_path)
            outcomes[free_kb] = result.returncode
            if result.returncode not in (0, 11):
                assert result.returncode == 7, result.stderr
                assert "no space left" in _clean_failure(result).lower()
            ballast.unlink()
            again = beryl_cli("run", "--no-apicalls", config=config_path)
            assert again.returncode == 0, again.stdout + again.stderr
            settings = config.load(config_path)
            dataset = Dataset(settings.output_folder)
            frame = dataset.read()
            assert len(frame) == 600 - frame.duplicated().sum() == len(frame.drop_duplicates())
            registry = Registry(settings.model_folder)
            production = registry.require_production()
            assert registry.verify(production)
            manifest = json.loads((settings.prod_folder / "manifest.json").read_text())
            assert manifest["version"] == production
            assert not list(disk.rglob(".beryl-tmp-*"))
    assert 7 in outcomes.values(), outcomes  # some pass did meet the full disk


def test_a_disk_that_fills_after_the_promotion_records_it_and_runs_the_rest(
    tmp_path: Path, beryl_cli: CliRunner
) -> None:
    """The deployment folder cannot be written: the promotion stands, the run says
    'promoted-with-errors' (exit 11), the report is still written, and the next pass deploys."""
    config_path = _fresh(tmp_path / "ws")
    root = tmp_path / "ws"
    store = root / ".production_deployment.d"
    with mounted(store, "size=4k", "nr_inodes=4", kind="tmpfs"):
        result = beryl_cli("run", "--no-apicalls", config=config_path)
        assert result.returncode == 11, result.stdout + result.stderr
        assert "FAILED after the promotion: deploy" in result.stdout
        assert "Traceback" not in result.stdout + result.stderr
        settings = config.load(config_path)
        registry = Registry(settings.model_folder)
        assert registry.production() == "v0001"
        assert (settings.model_folder / "report.html").exists()
        run = History(settings.history_db).runs(1)[0]
        assert run.status == "promoted-with-errors" and run.exit_code == 11
        assert any("deploy" in e for e in run.detail["errors"])
    again = beryl_cli("run", "--no-apicalls", config=config_path)
    assert again.returncode == 0, again.stdout + again.stderr
    manifest = json.loads((settings.prod_folder / "manifest.json").read_text())
    assert manifest["version"] == "v0001"


# -- read-only workspaces and closed folders ------------------------------------------------------
def test_read_only_commands_work_on_a_read_only_workspace(
    tmp_path: Path, beryl_cli: CliRunner
) -> None:
    source = tmp_path / "source"
    config_path = _fresh(source / "ws")
    beryl_cli("run", "--no-apicalls", config=config_path, check=True)
    with mounted(tmp_path / "ro", "ro", source=source) as mount:
        ro_config = mount / "ws" / "config.json"
        for command in (
            ["history"],
            ["models", "list"],
            ["models", "show", "v0001"],
            ["diagnose", "--no-outdated"],
            [
                "predict",
                str(mount / "ws" / "testdata" / "testdata.csv"),
                "-o",
                str(tmp_path / "scored.csv"),
            ],
            ["cron"],
        ):
            result = beryl_cli(*command, config=ro_config)
            assert result.returncode == 0, (command, result.stderr)
            assert "Traceback" not in result.stderr
        for command in (["run", "--no-apicalls"], ["ingest"], ["train"]):
            result = beryl_cli(*command, config=ro_config)
            assert result.returncode == 7, (command, result.stdout, result.stderr)
            message = _clean_failure(result)
            assert "read-only" in message and str(mount) in message


NOBODY = 65534


@pytest.fixture
def open_tmp() -> Iterator[Path]:
    """A temporary folder another user can reach (pytest's own are private to root)."""
    import tempfile

    folder = Path(tempfile.mkdtemp(prefix="beryl-closed-"))
    folder.chmod(0o755)
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.parametrize("closed", ["models", "ingesteddata", "beryl.sqlite", "sourcedata/a file"])
def test_a_folder_closed_to_the_user_is_one_line_and_state_stays_intact(
    open_tmp: Path, closed: str
) -> None:
    if not ROOT or shutil.which("setpriv") is None:
        pytest.skip("needs root and setpriv to run Beryl as another user")
    import sys

    tmp_path = open_tmp
    root = tmp_path / "ws"
    config_path = _fresh(root)
    subprocess.run(
        [sys.executable, "-m", "beryl", "--config", str(config_path), "run", "--no-apicalls"],
        check=True,
        capture_output=True,
    )
    subprocess.run(["chown", "-R", f"{NOBODY}:{NOBODY}", str(root)], check=True)
    signing = Path(os.environ["XDG_CONFIG_HOME"]) / "beryl" / "signing.key"
    key_copy = tmp_path / "key"
    shutil.copy(signing, key_copy)
    os.chown(key_copy, NOBODY, NOBODY)
    key_copy.chmod(0o600)
    from beryl.data.demo import add_batch

    add_batch(root / "sourcedata", "new.csv", rows=200, seed=9)
    os.chown(root / "sourcedata" / "new.csv", NOBODY, NOBODY)
    target = root / ("sourcedata/new.csv" if closed == "sourcedata/a file" else closed)
    subprocess.run(["chown", "-R", "root:root", str(target)], check=True)
    target.chmod(0o500 if target.is_dir() else 0o400)
    if target.is_dir():
        for path in target.rglob("*"):
            path.chmod(0o500 if path.is_dir() else 0o400)
    settings = config.load(config_path)
    rows_before = _rows(settings)
    env = {k: v for k, v in os.environ.items() if k not in ("BERYL_CONFIG",)}
    env.update(
        HOME=str(tmp_path), BERYL_SIGNING_KEY_FILE=str(key_copy), BERYL_CONFIG=str(config_path)
    )
    result = subprocess.run(
        [
            "setpriv",
            f"--reuid={NOBODY}",
            f"--regid={NOBODY}",
            "--clear-groups",
            sys.executable,
            "-m",
            "beryl",
            "run",
            "--no-apicalls",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert "Traceback" not in result.stdout + result.stderr, result.stderr
    if closed == "sourcedata/a file":
        # an unreadable input file is quarantined; the pass goes on (exit 10: partial)
        assert result.returncode == 10, result.stdout + result.stderr
        assert "new.csv" in result.stdout and "ermission" in result.stdout
    else:
        assert result.returncode == 7, result.stdout + result.stderr
        assert "permission denied" in result.stderr and closed.split("/")[0] in result.stderr
        assert _rows(settings) == rows_before
        assert Registry(settings.model_folder).production() == "v0001"
