"""Tests for beryl.monitoring.diagnostics: profile, caching, timings, outdated packages and
predictions."""

from __future__ import annotations

import ast
import hashlib
import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import metadata
from pathlib import Path
from typing import ClassVar

import numpy as np
import pandas as pd
import pytest

from beryl.config import Settings
from beryl.data.dataset import Dataset
from beryl.data.demo import add_batch
from beryl.data.ingestion import ingest
from beryl.errors import EmptyDatasetError, ModelNotFoundError
from beryl.model.deployment import deploy
from beryl.model.registry import Registry
from beryl.model.training import train
from beryl.monitoring import diagnostics as diagnostics_module
from beryl.monitoring.diagnostics import (
    Diagnostics,
    compute_profile,
    dependencies,
    diagnose,
    measure_timings,
    outdated_packages,
    predict_test_data,
    profile,
    recorded_timings,
)
from beryl.monitoring.drift import compare
from beryl.monitoring.history import History
from beryl.workspace import Workspace

NUMERIC = ["lastmonth_activity", "lastyear_activity", "number_of_employees"]


@pytest.fixture
def ingested(workspace: Settings) -> Settings:
    ingest(workspace)
    return workspace


def test_profile_matches_pandas(ingested: Settings) -> None:
    dataset = Dataset(ingested.output_folder)
    frame = dataset.read()
    result = compute_profile(dataset)
    assert result["rows"] == len(frame) == dataset.rows
    assert set(result["summary_stats"]) == set(NUMERIC)
    assert frame[NUMERIC].isna().any().any(), "the demo data should have a few blanks"
    for column in NUMERIC:
        values = frame[column]
        stats = result["summary_stats"][column]
        assert stats["count"] == values.count()
        assert stats["mean"] == pytest.approx(values.mean())
        assert stats["median"] == pytest.approx(values.median())
        assert stats["std"] == pytest.approx(values.std())
        assert stats["min"] == values.min()
        assert stats["max"] == values.max()
        assert not np.isnan(stats["mean"])
    expected_missing = (frame.isna().mean() * 100).to_dict()
    assert set(result["missing_percent"]) == set(frame.columns)
    for column, percent in expected_missing.items():
        assert result["missing_percent"][column] == pytest.approx(percent)
    assert result["missing_percent"]["exited"] == 0.0
    assert result["batches"] == [b.id for b in dataset.batches]


def test_profile_of_a_column_with_nothing_present(tmp_path: Path, workspace: Settings) -> None:
    source = workspace.input_folder
    for path in source.glob("*.csv"):
        path.unlink()
    pd.DataFrame(
        {
            "corporation": ["a", "b", "c", "d"],
            "lastmonth_activity": [1.0, 2.0, np.nan, 4.0],
            "lastyear_activity": [np.nan] * 4,
            "number_of_employees": [5.0, 5.0, 5.0, 5.0],
            "exited": [0, 1, 0, 1],
        }
    ).to_csv(source / "tiny.csv", index=False)
    ingest(workspace)
    result = compute_profile(Dataset(workspace.output_folder))
    assert result["summary_stats"]["lastyear_activity"]["count"] == 0
    assert result["summary_stats"]["lastyear_activity"]["mean"] is None
    assert result["missing_percent"]["lastyear_activity"] == 100.0
    assert result["missing_percent"]["lastmonth_activity"] == 25.0
    assert result["summary_stats"]["lastmonth_activity"]["median"] == 2.0
    assert result["summary_stats"]["number_of_employees"]["std"] == 0.0


def test_profile_before_ingestion_is_an_empty_dataset_error(workspace: Settings) -> None:
    with pytest.raises(EmptyDatasetError):
        compute_profile(Dataset(workspace.output_folder))


def test_profile_is_cached_until_a_new_batch_arrives(ingested: Settings) -> None:
    first = profile(ingested)
    cache = ingested.output_folder / "profile.json"
    assert json.loads(cache.read_text()) == first

    # prove the second call reads the cache: a marker written into it comes back
    marked = {**first, "marker": "from cache"}
    cache.write_text(json.dumps(marked))
    assert profile(Workspace(ingested)) == marked

    add_batch(ingested.input_folder, "more", rows=200, seed=7)
    ingest(ingested)
    dataset = Dataset(ingested.output_folder)
    fresh = profile(ingested)
    assert "marker" not in fresh
    assert fresh["rows"] == dataset.rows > first["rows"]
    assert fresh["batches"] == [b.id for b in dataset.batches]
    assert len(fresh["batches"]) == 2
    frame = dataset.read()
    stats = fresh["summary_stats"]["lastyear_activity"]
    assert stats["mean"] == pytest.approx(frame["lastyear_activity"].mean())
    assert json.loads(cache.read_text())["batches"] == fresh["batches"]


def test_unreadable_cache_is_recomputed(ingested: Settings) -> None:
    cache = ingested.output_folder / "profile.json"
    cache.write_text("{torn")
    result = profile(ingested)
    assert result["rows"] == Dataset(ingested.output_folder).rows
    assert json.loads(cache.read_text())["rows"] == result["rows"]


def test_recorded_timings_read_the_last_ingest_and_train_steps(tmp_path: Path) -> None:
    history = History(tmp_path / "beryl.sqlite")
    assert recorded_timings(history) == {"ingest_s": None, "train_s": None}
    with history.run("run") as run:
        with run.step("ingest"):
            pass
        with run.step("train"):
            pass
    with history.run("ingest") as run, run.step("ingest"):
        pass
    latest_ingest = history.runs(limit=1)[0].steps[0].duration_s
    train_step = history.runs(limit=2)[1].steps[1]
    timings = recorded_timings(history)
    assert timings == {"ingest_s": latest_ingest, "train_s": train_step.duration_s}


def tree_hashes(root: Path) -> dict[str, str]:
    out = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        if path.is_symlink():
            out[rel] = "link:" + str(path.readlink())
        elif path.is_file():
            out[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
        else:
            out[rel] = "dir"
    return out


def test_measure_timings_leaves_the_workspace_byte_identical(ingested: Settings) -> None:
    train(ingested)
    deploy(ingested)
    before = tree_hashes(ingested.root)
    timings = measure_timings(ingested)
    assert set(timings) == {"ingest_s", "train_s"}
    assert all(value > 0 for value in timings.values())
    assert tree_hashes(ingested.root) == before
    assert Registry(ingested.model_folder).ids() == ["v0001"]


def test_measure_timings_on_a_workspace_never_ingested(workspace: Settings) -> None:
    before = tree_hashes(workspace.root)
    timings = measure_timings(workspace)
    assert timings["train_s"] > 0
    assert tree_hashes(workspace.root) == before


class FakeIndex(BaseHTTPRequestHandler):
    """Serves ``/<name>/json`` like PyPI's JSON API from the class's ``versions`` table."""

    versions: ClassVar[dict[str, str]] = {}
    bodies: ClassVar[dict[str, bytes]] = {}  # raw answers, for a misbehaving index

    def do_GET(self) -> None:
        parts = self.path.strip("/").split("/")
        if len(parts) == 2 and parts[1] == "json" and parts[0] in self.bodies:
            body = self.bodies[parts[0]]
            self.send_response(200)
        elif len(parts) == 2 and parts[1] == "json" and parts[0] in self.versions:
            body = json.dumps({"info": {"version": self.versions[parts[0]]}}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
        else:
            body = b'{"message": "Not Found"}'
            self.send_response(404)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def fake_index(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.delenv(name, raising=False)
    FakeIndex.versions = {
        "numpy": "999.0.0",
        "pandas": metadata.version("pandas"),
        "scipy": "0.1",
        "not-installed-pkg": "1.0",
    }
    FakeIndex.bodies = {
        "click": b"<html>captive portal</html>",
        "rich": b"[]",
        "fastapi": b'{"info": null}',
        "uvicorn": b'{"info": {"version": null}}',
    }
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeIndex)
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_outdated_packages_against_a_local_index(fake_index: str) -> None:
    names = ["numpy", "pandas", "scipy", "not-installed-pkg", "httpx"]
    table = outdated_packages(names, index_url=fake_index, timeout=5)
    rows = {row["module"]: row for row in table}
    assert [row["module"] for row in table] == names
    assert rows["numpy"] == {
        "module": "numpy",
        "installed": metadata.version("numpy"),
        "latest": "999.0.0",
        "outdated": True,
    }
    assert rows["pandas"]["latest"] == rows["pandas"]["installed"]
    assert rows["pandas"]["outdated"] is False
    assert rows["scipy"]["outdated"] is False  # installed is newer than the index says
    assert rows["not-installed-pkg"]["installed"] == "not installed"
    assert rows["not-installed-pkg"]["outdated"] is None
    assert rows["httpx"]["latest"] == "unknown"  # the index answers 404
    assert rows["httpx"]["outdated"] is None


def test_outdated_packages_with_a_trailing_slash_in_the_url(fake_index: str) -> None:
    table = outdated_packages(["numpy"], index_url=fake_index + "/", timeout=5)
    assert table[0]["outdated"] is True


def test_index_answering_html_gives_unknown(fake_index: str) -> None:
    (row,) = outdated_packages(["click"], index_url=fake_index, timeout=5)
    assert (row["latest"], row["outdated"]) == ("unknown", None)


@pytest.mark.parametrize("name", ["rich", "fastapi", "uvicorn"])
def test_index_answering_json_of_another_shape_gives_unknown(fake_index: str, name: str) -> None:
    (row,) = outdated_packages([name], index_url=fake_index, timeout=5)
    assert (row["latest"], row["outdated"]) == ("unknown", None)


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_unreachable_index_gives_unknown(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.delenv(name, raising=False)
    url = f"http://127.0.0.1:{closed_port()}"
    table = outdated_packages(["numpy", "pandas"], index_url=url, timeout=2)
    assert [(r["module"], r["latest"], r["outdated"]) for r in table] == [
        ("numpy", "unknown", None),
        ("pandas", "unknown", None),
    ]
    assert table[0]["installed"] == metadata.version("numpy")


def test_dependencies_are_the_declared_runtime_requirements() -> None:
    names = dependencies()
    assert {"numpy", "pandas", "scikit-learn", "pydantic"} <= set(names)
    assert "pytest" not in names  # extras are excluded


def test_predict_test_data_gives_one_prediction_per_test_row(ingested: Settings) -> None:
    registry = Registry(ingested.model_folder)
    train(ingested)
    with pytest.raises(ModelNotFoundError):
        predict_test_data(ingested)
    deploy(ingested)
    result = predict_test_data(Workspace(ingested))
    test = pd.read_csv(ingested.test_data / "testdata.csv")
    assert result.version == "v0001"
    assert len(result.predictions) == len(test)
    assert set(result.predictions) <= {0, 1}
    assert all(type(p) is int for p in result.predictions)
    model = registry.pipeline("v0001")
    threshold = registry.model("v0001").threshold
    expected = (model.predict_proba(test)[:, list(model.classes_).index(1)] > threshold).astype(int)
    assert result.predictions == expected.tolist()
    json.dumps(result.to_dict())  # JSON-able as the API returns it


def test_no_monitoring_module_predicts_but_through_the_one_function() -> None:
    """Diagnostics and reports predict with ``beryl.model.predict.predict`` (its decision rule),
    never with a model's own ``predict`` methods."""
    own = {"predict", "predict_proba", "predict_frame", "decision_function"}
    found = []
    modules = sorted(Path(diagnostics_module.__file__).parent.glob("*.py"))
    assert {"diagnostics.py", "reporting.py"} <= {path.name for path in modules}
    for path in modules:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
                continue
            if node.func.attr in own:
                found.append(f"{path.name}:{node.lineno} .{node.func.attr}(")
    assert found == []


def test_diagnose_gathers_everything_in_the_shape_of_its_json(ingested: Settings) -> None:
    workspace = Workspace(ingested)
    before = diagnose(workspace, check_outdated=False)
    assert before.production_version is None and before.predictions is None
    assert before.data_drift is None and before.outdated_packages is None
    train(ingested)
    deploy(ingested)
    dataset = Dataset(ingested.output_folder)
    assert dataset.schema is not None
    frame = dataset.read()
    drift = compare(frame, frame.head(100), dataset.schema, ingested.drift, reference_label="v0001")
    workspace.history.record_drift(drift)
    result = diagnose(workspace, check_outdated=False)
    assert isinstance(result, Diagnostics)
    assert result.production_version == "v0001"
    assert result.dataset_rows == Dataset(ingested.output_folder).rows
    assert result.data_drift == drift
    assert result.predictions == predict_test_data(workspace)
    data = result.to_dict()
    assert list(data) == [
        "production_version",
        "dataset_rows",
        "summary_stats",
        "missing_percent",
        "timings",
        "data_drift",
        "predictions",
        "quarantined_files",
        "model_drift",
    ]
    assert data["quarantined_files"] == []
    assert data["model_drift"] is None  # no pass has checked production on new rows yet
    assert data["data_drift"] == drift.to_dict()
    assert result.predictions is not None
    assert data["predictions"] == {
        "version": "v0001",
        "predictions": result.predictions.predictions,
    }
    assert json.loads(json.dumps(data)) == data
