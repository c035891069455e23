"""MLflow tracking against a real ``mlflow server`` on 127.0.0.1 (``tests/mlflow_server.py``):
passes become runs, versions are registered, ``champion`` follows production, and a server that
is down costs nothing but one line, then is caught up with."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from tests.conftest import CliRunner
from tests.mlflow_server import MlflowServer
from tests.test_api import make_workspace

from beryl import config
from beryl.data.demo import generate, write_csv
from beryl.model.export import sample_frame
from beryl.monitoring.tracking import CHAMPION, DOWN_MARK, RUN_TAG, VERSION_TAG, track
from beryl.workspace import Workspace

mlflow = pytest.importorskip("mlflow")

pytestmark = pytest.mark.slow
MODEL = "beryl-attrition"


def tracked_workspace(root: Path, url: str) -> Path:
    # a generous timeout: on a busy 2-core machine the fresh server's first answers are slow
    _, config_path = make_workspace(root, run=False, mlflow={"tracking_uri": url, "timeout_s": 60})
    return config_path


def drop_file(config_path: Path, seed: int) -> None:
    settings = config.load(config_path)
    write_csv(generate(300, seed=seed), settings.input_folder / f"more{seed}.csv")


def runs_by_history_id(client: mlflow.MlflowClient) -> dict[int, object]:
    experiment = client.get_experiment_by_name("beryl")
    found = client.search_runs([experiment.experiment_id], max_results=1000)
    ids = [int(r.data.tags[RUN_TAG]) for r in found]
    assert len(ids) == len(set(ids)), f"a recorded command was logged twice: {sorted(ids)}"
    return {int(r.data.tags[RUN_TAG]): r for r in found}


def champion(client: mlflow.MlflowClient) -> str:
    version = client.get_model_version_by_alias(MODEL, CHAMPION)
    return str(version.tags[VERSION_TAG])


def test_passes_are_runs_versions_are_registered_and_champion_follows_production(
    tmp_path: Path, beryl_cli: CliRunner
) -> None:
    server = MlflowServer(tmp_path / "mlflow")
    server.start()
    try:
        config_path = tracked_workspace(tmp_path / "ws", server.url)
        first = beryl_cli("run", config=config_path)
        assert first.returncode == 0, first.stderr
        assert "MLflow" not in first.stderr
        client = mlflow.MlflowClient(tracking_uri=server.url)
        runs = runs_by_history_id(client)
        run = runs[1]
        assert run.info.run_name == "run #1" and run.info.status == "FINISHED"
        assert run.data.tags["beryl.outcome"] == "promoted"
        assert run.data.tags[VERSION_TAG] == "v0001"
        assert 0 < run.data.metrics["candidate_f1"] <= 1
        assert run.data.metrics["rows_added"] > 0 and "step.train_s" in run.data.metrics
        assert run.data.params["model.max_iter"] == "1000"
        artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert {"model_card.json", "data.json", "model"} <= artifacts
        data = json.loads(Path(client.download_artifacts(run.info.run_id, "data.json")).read_text())
        assert data["files"] and all(len(f["sha256"]) == 64 for f in data["files"])
        assert champion(client) == "v0001"
        # The champion loads with MLflow and scores as Beryl's production model does.
        ws = Workspace(config.load(config_path))
        model = ws.registry.model("v0001")
        frame = sample_frame(model, rows=500, seed=2)
        mlflow.set_tracking_uri(server.url)
        try:
            loaded = mlflow.pyfunc.load_model(f"models:/{MODEL}@{CHAMPION}")
        finally:
            mlflow.set_tracking_uri(None)
        answer = loaded.predict(frame)
        labels, chances = model.predict_frame(frame)
        np.testing.assert_allclose(answer["probability"], chances, rtol=0, atol=1e-9)
        assert (answer["label"].to_numpy() == labels).all()

        drop_file(config_path, seed=41)
        second = beryl_cli("run", config=config_path)
        assert second.returncode == 0, second.stderr
        drop_file(config_path, seed=42)
        assert beryl_cli("train", config=config_path).returncode == 0
        assert beryl_cli("models", "promote", "v0003", config=config_path).returncode == 0
        assert champion(client) == "v0003"
        assert beryl_cli("models", "rollback", config=config_path).returncode == 0
        production = Workspace(config.load(config_path)).registry.production()
        assert champion(client) == production != "v0003"
        runs = runs_by_history_id(client)
        commands = [runs[i].data.tags["beryl.command"] for i in sorted(runs)]
        assert commands == ["run", "run", "train", "promote", "rollback"]
        registered = client.search_model_versions(f"name = '{MODEL}'")
        assert sorted(v.tags[VERSION_TAG] for v in registered) == ["v0001", "v0002", "v0003"]
    finally:
        server.stop()


def test_a_server_that_is_down_is_reported_once_and_caught_up_with(
    tmp_path: Path, beryl_cli: CliRunner
) -> None:
    server = MlflowServer(tmp_path / "mlflow")  # not started yet: down from the first pass
    config_path = tracked_workspace(tmp_path / "ws", server.url)
    first = beryl_cli("run", config=config_path)
    assert first.returncode == 0, first.stderr
    assert first.stderr.count(f"MLflow tracking at {server.url} failed") == 1
    assert (tmp_path / "ws" / DOWN_MARK).exists()
    drop_file(config_path, seed=51)
    second = beryl_cli("run", config=config_path)
    assert second.returncode == 0, second.stderr
    assert "MLflow" not in second.stderr  # said once, not on every pass
    server.start()
    try:
        third = beryl_cli("run", config=config_path)  # nothing new: a pass all the same
        assert third.returncode == 0, third.stderr
        assert f"MLflow tracking at {server.url} answers again: 3 runs caught up" in third.stderr
        assert not (tmp_path / "ws" / DOWN_MARK).exists()
        client = mlflow.MlflowClient(tracking_uri=server.url)
        assert sorted(runs_by_history_id(client)) == [1, 2, 3]
        production = Workspace(config.load(config_path)).registry.production()
        assert champion(client) == production
        # A run a killed command left unfinished is replaced; nothing is logged twice.
        experiment = client.get_experiment_by_name("beryl").experiment_id
        half = client.create_run(experiment, tags={RUN_TAG: "4"}, run_name="run #4")
        fourth = beryl_cli("run", config=config_path)
        assert fourth.returncode == 0, fourth.stderr
        runs = runs_by_history_id(client)
        assert sorted(runs) == [1, 2, 3, 4]
        assert runs[4].info.run_id != half.info.run_id
        assert client.get_run(half.info.run_id).info.lifecycle_stage == "deleted"
    finally:
        server.stop()


def test_without_a_tracking_uri_nothing_is_tracked(tmp_path: Path) -> None:
    _, config_path = make_workspace(tmp_path / "ws", run=True)
    assert track(Workspace(config.load(config_path))) is None
    assert not (tmp_path / "ws" / DOWN_MARK).exists()


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ("ftp://127.0.0.1:5000", "http:// or https://"),
        ("http://user:secret@127.0.0.1:5000", "MLFLOW_TRACKING_USERNAME"),
    ],
)
def test_a_bad_tracking_uri_is_refused_in_one_line(
    tmp_path: Path, beryl_cli: CliRunner, value: str, words: str
) -> None:
    _, config_path = make_workspace(tmp_path / "ws", run=False)
    data = json.loads(config_path.read_text())
    config_path.write_text(json.dumps(data | {"mlflow": {"tracking_uri": value}}))
    done = beryl_cli("run", config=config_path)
    assert done.returncode == 2
    assert words in done.stderr and "Traceback" not in done.stderr
    assert "secret" not in done.stderr
