"""`beryl models export`: MLflow model directories and ONNX graphs that score as Beryl does.

The MLflow exports are loaded with MLflow's own ``mlflow.pyfunc.load_model`` and
``mlflow.sklearn.load_model``; the ONNX graphs run on onnxruntime. Both are compared with the
version's data-only model on random records with missing values and unseen categories.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from tests.conftest import CliRunner
from tests.test_api import make_mixed_workspace

from beryl import config
from beryl.data.schema import Schema
from beryl.errors import ModelError
from beryl.model.card import ModelCard
from beryl.model.export import check_agrees, example_record, export, sample_frame
from beryl.model.linear import LinearModel
from beryl.model.onnxgraph import build, feeds
from beryl.workspace import Workspace

mlflow = pytest.importorskip("mlflow")
onnxruntime = pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> tuple[Workspace, Path]:
    _, config_path = make_mixed_workspace(tmp_path_factory.mktemp("export") / "ws")
    return Workspace(config.load(config_path)), config_path


def production_model(workspace: Workspace) -> tuple[str, LinearModel]:
    version = workspace.registry.require_production()
    return version, workspace.registry.model(version)


def hand_made(classes: tuple[object, ...], positive: object, threshold: float) -> LinearModel:
    """A two-feature-kind model with made-up parameters (no training needed)."""
    schema = Schema(
        target="churned",
        positive_label=positive,  # type: ignore[arg-type]
        numeric=["spend", "visits"],
        categorical=["plan", "region"],
    )
    rng = np.random.default_rng(11)
    width = 2 + 3 + 2
    rows = 1 if len(classes) == 2 else len(classes)
    return LinearModel(
        schema=schema,
        classes=classes,
        numeric_fill=np.array([10.0, 3.0]),
        mean=np.array([12.0, 2.5]),
        scale=np.array([4.0, 1.5]),
        categorical_fill=("basic", "north"),
        categories=(("basic", "plus", "pro"), ("north", "south")),
        coef=rng.normal(0, 1.5, (rows, width)),
        intercept=rng.normal(0, 1, rows),
        threshold=threshold,
    )


def card_for(model: LinearModel, version: str = "v0042") -> ModelCard:
    return ModelCard(
        id=version,
        created="2026-12-01T00:00:00Z",
        schema=model.schema.to_dict(),
        parameters={},
        classes=list(model.classes),
        training={},
        libraries={},
        metrics={"f1": 0.5},
    )


# -- MLflow ----------------------------------------------------------------------------------------
def test_the_mlflow_export_loads_with_mlflow_and_scores_as_beryl(
    workspace: tuple[Workspace, Path], beryl_cli: CliRunner, tmp_path: Path
) -> None:
    ws, config_path = workspace
    version, model = production_model(ws)
    out = tmp_path / "attrition"
    done = beryl_cli("models", "export", "production", "--format", "mlflow", "-o", str(out),
                     config=config_path)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert version in done.stdout and "MLmodel" in done.stdout
    described = mlflow.models.Model.load(str(out))
    assert set(described.flavors) >= {"sklearn", "python_function"}
    inputs = {c["name"]: c["type"] for c in json.loads(described.to_dict()["signature"]["inputs"])}
    assert inputs == {
        **{n: "double" for n in model.schema.numeric},
        **{n: "string" for n in model.schema.categorical},
    }
    frame = sample_frame(model, rows=3000, seed=21)  # missing values, unseen categories
    labels, chances = model.predict_frame(frame)
    pyfunc = mlflow.pyfunc.load_model(str(out))
    answer = pyfunc.predict(frame)
    assert list(answer.columns) == ["label", "probability"]
    np.testing.assert_allclose(answer["probability"], chances, rtol=0, atol=1e-9)
    assert (answer["label"].to_numpy() == labels).all()
    assert 0 < (labels == model.schema.positive_label).sum() < len(labels)  # both labels occur
    # The sklearn flavour alone decides at Beryl's threshold too, without Beryl's loader.
    estimator = mlflow.sklearn.load_model(str(out))
    assert (estimator.predict(frame) == labels).all()
    # The input example is the model's own fill values, and it is accepted as it is.
    example = described.load_input_example(str(out))
    pd.testing.assert_frame_equal(example, example_record(model), check_dtype=False)
    assert len(pyfunc.predict(example)) == 1
    card = json.loads((out / "beryl_card.json").read_text())
    assert card["id"] == version
    details = json.loads((out / "beryl.json").read_text())
    assert details["threshold"] == model.threshold and details["version"] == version


def test_the_mlflow_export_needs_no_beryl_to_load(
    workspace: tuple[Workspace, Path], tmp_path: Path
) -> None:
    ws, _ = workspace
    version, model = production_model(ws)
    out = tmp_path / "m"
    export(model, ws.registry.card(version), "mlflow", out)
    frame = sample_frame(model, rows=50, seed=3)
    frame.to_json(tmp_path / "records.json", orient="records")
    code = (
        "import sys, json, pandas as pd, mlflow.pyfunc\n"
        "frame = pd.read_json(sys.argv[2], orient='records', dtype=False)\n"
        "answer = mlflow.pyfunc.load_model(sys.argv[1]).predict(frame)\n"
        "assert not [m for m in sys.modules if m == 'beryl' or m.startswith('beryl.')]\n"
        "print(json.dumps(answer['probability'].tolist()))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(out), str(tmp_path / "records.json")],
        capture_output=True, text=True, check=False, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    np.testing.assert_allclose(json.loads(done.stdout), model.predict_frame(frame)[1], atol=1e-9)


@pytest.mark.parametrize(
    ("classes", "positive", "threshold"),
    [(("stayed", "left"), "left", 0.3), ((0, 1), 0, 0.7), (("a", "b", "c"), "b", 0.5)],
)
def test_hand_made_models_export_for_mlflow_with_their_labels(
    tmp_path: Path, classes: tuple[object, ...], positive: object, threshold: float
) -> None:
    model = hand_made(classes, positive, threshold)
    export(model, card_for(model), "mlflow", tmp_path / "m")
    frame = sample_frame(model, rows=2000, seed=4)
    answer = mlflow.pyfunc.load_model(str(tmp_path / "m")).predict(frame)
    labels, chances = model.predict_frame(frame)
    np.testing.assert_allclose(answer["probability"], chances, rtol=0, atol=1e-9)
    assert answer["label"].tolist() == labels.tolist()


# -- ONNX ------------------------------------------------------------------------------------------
def test_the_onnx_export_runs_on_onnxruntime_as_beryl_scores(
    workspace: tuple[Workspace, Path], beryl_cli: CliRunner, tmp_path: Path
) -> None:
    ws, config_path = workspace
    version, model = production_model(ws)
    out = tmp_path / "onnx"
    done = beryl_cli("models", "export", version, "--format", "onnx", "-o", str(out), "--json",
                     config=config_path)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["files"] == ["beryl.json", "model.onnx"]
    session = onnxruntime.InferenceSession(str(out / "model.onnx"))
    assert {i.name for i in session.get_inputs()} == set(model.schema.features)
    frame = sample_frame(model, rows=5000, seed=8)
    labels, chances = model.predict_frame(frame)
    got_labels, got = session.run(["label", "probability"], feeds(model, frame))
    np.testing.assert_allclose(got[:, 0], chances, rtol=0, atol=1e-6)
    assert (got_labels[:, 0] == labels).all()
    assert json.loads((out / "beryl.json").read_text())["missing_values"].startswith("numbers")


@pytest.mark.parametrize(
    ("classes", "positive", "threshold"),
    [(("stayed", "left"), "left", 0.3), (("left", "stayed"), "left", 0.6), ((0, 1), 0, 0.5)],
)
def test_onnx_graphs_of_hand_made_models_agree_with_beryl(
    classes: tuple[object, ...], positive: object, threshold: float
) -> None:
    model = hand_made(classes, positive, threshold)
    session = onnxruntime.InferenceSession(build(model, card_for(model)).SerializeToString())
    frame = sample_frame(model, rows=4000, seed=9)
    frame.loc[::7, "plan"] = np.nan  # NaN as well as None for missing text
    labels, chances = model.predict_frame(frame)
    got_labels, got = session.run(["label", "probability"], feeds(model, frame))
    np.testing.assert_allclose(got[:, 0], chances, rtol=0, atol=1e-9)
    assert got_labels[:, 0].tolist() == labels.tolist()


def test_onnx_refuses_a_model_of_more_than_two_classes(tmp_path: Path) -> None:
    model = hand_made(("a", "b", "c"), "b", 0.5)
    with pytest.raises(ModelError, match="two-class models; v0042 has 3 classes"):
        export(model, card_for(model), "onnx", tmp_path / "o")
    assert not (tmp_path / "o").exists()
    assert list(tmp_path.iterdir()) == []  # no half-built folder left beside it


# -- refusals --------------------------------------------------------------------------------------
def test_an_export_that_disagrees_with_beryl_is_refused() -> None:
    model = hand_made(("stayed", "left"), "left", 0.4)
    frame = sample_frame(model, rows=100)
    labels, chances = model.predict_frame(frame)
    check_agrees(model, frame, labels, chances, "test")  # agrees: nothing raised
    with pytest.raises(ModelError, match="largest probability difference 1e-06"):
        check_agrees(model, frame, labels, chances + 1e-6, "test")
    flipped = labels.copy()
    flipped[0] = "stayed" if labels[0] == "left" else "left"
    with pytest.raises(ModelError, match="1 of 100 labels differ"):
        check_agrees(model, frame, flipped, chances, "test")


def test_export_mistakes_are_one_line_and_change_nothing(
    workspace: tuple[Workspace, Path], beryl_cli: CliRunner, tmp_path: Path
) -> None:
    _, config_path = workspace
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "keep.txt").write_text("mine")
    cases = [
        (["production", "--format", "onnx", "-o", str(taken)], 2, "already exists"),
        (["v9999", "--format", "onnx", "-o", str(tmp_path / "x")], 4, "v9999"),
        (["production", "--format", "tflite", "-o", str(tmp_path / "y")], 2, "tflite"),
    ]
    for args, code, words in cases:
        done = beryl_cli("models", "export", *args, config=config_path)
        assert done.returncode == code, (args, done.stderr)
        assert words in done.stderr and "Traceback" not in done.stderr
    assert [p.name for p in taken.iterdir()] == ["keep.txt"]
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def test_a_card_is_only_needed_for_its_id_when_building_a_graph() -> None:
    model = hand_made((0, 1), 1, 0.5)
    proto = build(model, SimpleNamespace(id="v7"))  # type: ignore[arg-type]
    props = {p.key: p.value for p in proto.metadata_props}
    assert props["beryl_model_version"] == "v7" and props["missing_text"] == "the empty string"
