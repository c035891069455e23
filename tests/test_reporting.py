"""Tests for beryl.monitoring.reporting: PNG rendering, HTML report content and atomic writes."""

from __future__ import annotations

import base64
import html
import json
import os
import re
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import matplotlib.image as mpimg
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import classification_report

from beryl._io import sha256_file
from beryl.config import Settings
from beryl.data.ingestion import ingest
from beryl.errors import StateError
from beryl.model.deployment import deploy
from beryl.model.training import train
from beryl.monitoring import reporting
from beryl.monitoring.reporting import (
    REPORT_RECORD,
    build_report,
    render_classification_report,
    render_confusion_matrix,
    render_html,
    report_version,
    write_html,
)
from beryl.workspace import Workspace

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def png_size(path: Path) -> tuple[int, int]:
    """Width and height from the PNG's IHDR chunk."""
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def leftovers(folder: Path) -> list[str]:
    return [p.name for p in folder.iterdir() if p.name.startswith(".beryl-tmp-")]


def assert_real_png(path: Path) -> tuple[int, int]:
    assert path.is_file()
    assert path.read_bytes().startswith(PNG_MAGIC)
    assert path.stat().st_size > 2_000
    width, height = png_size(path)
    assert 200 <= width <= 4_000
    assert 100 <= height <= 4_000
    pixels = mpimg.imread(path)
    assert pixels.shape[:2] == (height, width)
    assert pixels.std() > 0.05, "image is blank"
    return width, height


def report_for(y_true: list[Any], y_pred: list[Any]) -> dict[str, Any]:
    report = classification_report(y_true, y_pred, output_dict=True, zero_division=0)
    assert isinstance(report, dict)
    return report


@pytest.fixture
def card() -> dict[str, Any]:
    return {
        "id": "model-20240501-abc123",
        "created_at": "2024-05-01T12:00:00Z",
        "owner": "<script>alert(1)</script>",
        "training": {"rows": 1200, "features": ["tenure", "monthly_charges"], "C": 1.0},
        "lineage": {"data": {"files": [{"name": "a.csv", "sha256": "deadbeef"}]}},
        "notes": None,
    }


@pytest.fixture
def metrics() -> dict[str, Any]:
    return {
        "f1": 0.8125,
        "precision": 0.75,
        "recall": 0.8863,
        "accuracy": 0.9,
        "roc_auc": None,
        "confusion_matrix": [[50, 3], [7, 40]],
        "n": 100,
    }


# --- confusion matrix ------------------------------------------------------------------------


def test_confusion_matrix_writes_real_png(tmp_path: Path) -> None:
    target = tmp_path / "cm.png"
    result = render_confusion_matrix([[50, 3], [7, 40]], ["No", "Yes"], target)
    assert result == target
    width, height = assert_real_png(target)
    assert width >= height * 0.8  # a square heatmap plus a colour bar
    assert leftovers(tmp_path) == []


def test_confusion_matrix_grows_with_labels(tmp_path: Path) -> None:
    small = render_confusion_matrix([[1, 2], [3, 4]], ["a", "b"], tmp_path / "2.png")
    matrix = [[i * 6 + j for j in range(6)] for i in range(6)]
    big = render_confusion_matrix(matrix, list("abcdef"), tmp_path / "6.png")
    assert png_size(big)[0] > png_size(small)[0]
    assert png_size(big)[1] > png_size(small)[1]


def test_confusion_matrix_all_zero_counts(tmp_path: Path) -> None:
    assert_real_png(render_confusion_matrix([[0, 0], [0, 0]], ["0", "1"], tmp_path / "z.png"))


def test_confusion_matrix_replaces_existing_file(tmp_path: Path) -> None:
    target = tmp_path / "cm.png"
    target.write_bytes(b"old content")
    render_confusion_matrix([[5, 1], [2, 7]], ["No", "Yes"], target)
    assert_real_png(target)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cm.png"]


@pytest.mark.parametrize(
    ("matrix", "labels"),
    [([[1, 2], [3, 4]], ["only"]), ([[1, 2], [3]], ["a", "b"]), ([], [])],
)
def test_confusion_matrix_rejects_bad_shape(
    tmp_path: Path, matrix: list[list[int]], labels: list[str]
) -> None:
    with pytest.raises(ValueError, match="confusion matrix"):
        render_confusion_matrix(matrix, labels, tmp_path / "cm.png")
    assert list(tmp_path.iterdir()) == []


# --- classification report -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("y_true", "y_pred"),
    [
        (["Yes", "No", "Yes", "No", "Yes"], ["Yes", "Yes", "Yes", "No", "No"]),
        (["0", "1", "1", "0", "1"], ["0", "1", "0", "0", "1"]),
        ([0, 1, 1, 0, 1], [0, 1, 0, 0, 1]),
        (["No", "No", "No"], ["Yes", "No", "No"]),  # a class never present in y_true
    ],
    ids=["yes-no", "string-digits", "ints", "unseen-class"],
)
def test_classification_report_png(tmp_path: Path, y_true: list[Any], y_pred: list[Any]) -> None:
    target = tmp_path / "report.png"
    assert render_classification_report(report_for(y_true, y_pred), target) == target
    assert_real_png(target)
    assert leftovers(tmp_path) == []


def test_classification_report_height_grows_with_classes(tmp_path: Path) -> None:
    two = report_for(["a", "b", "a"], ["a", "b", "b"])
    four = report_for(["a", "b", "c", "d"], ["a", "b", "c", "c"])
    small = render_classification_report(two, tmp_path / "two.png")
    big = render_classification_report(four, tmp_path / "four.png")
    assert png_size(big)[1] > png_size(small)[1]


def test_classification_report_rows_content() -> None:
    report = report_for(["Yes", "No", "Yes", "No"], ["Yes", "Yes", "Yes", "No"])
    rows = reporting._report_rows(report)
    assert [row[0] for row in rows] == ["No", "Yes", "accuracy", "macro avg", "weighted avg"]
    assert rows[0] == ["No", "1.000", "0.500", "0.667", "2"]
    assert rows[1] == ["Yes", "0.667", "1.000", "0.800", "2"]
    assert rows[2] == ["accuracy", "", "", "0.750", "4"]
    assert all(len(row) == 5 for row in rows)


def test_classification_report_rejects_empty(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="empty"):
        render_classification_report({}, tmp_path / "r.png")
    assert list(tmp_path.iterdir()) == []


# --- HTML ------------------------------------------------------------------------------------


@pytest.fixture
def images(tmp_path: Path) -> dict[str, Path]:
    cm = render_confusion_matrix([[50, 3], [7, 40]], ["No", "Yes"], tmp_path / "cm.png")
    report = report_for(["Yes", "No", "Yes"], ["Yes", "No", "No"])
    cr = render_classification_report(report, tmp_path / "cr.png")
    return {"Confusion matrix": cm, "Classification report": cr}


def test_html_contains_card_metrics_and_images(
    card: dict[str, Any], metrics: dict[str, Any], images: dict[str, Path]
) -> None:
    page = render_html(title="Beryl report", card=card, metrics=metrics, images=images)
    assert page.lstrip().lower().startswith("<!doctype html>")
    assert "<title>Beryl report</title>" in page
    assert card["id"] in page
    assert "tenure" in page and "monthly_charges" in page and "deadbeef" in page
    for value in ("0.8125", "0.7500", "0.8863", "0.9000", ">100<"):
        assert value in page
    assert "roc_auc" in page and "n/a" in page
    for cell in (">50<", ">3<", ">7<", ">40<"):
        assert cell in page
    uris = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(uris) == len(images)
    assert [base64.b64decode(u) for u in uris] == [p.read_bytes() for p in images.values()]
    for caption in images:
        assert f"<figcaption>{caption}</figcaption>" in page


def test_html_is_self_contained(
    card: dict[str, Any], metrics: dict[str, Any], images: dict[str, Path]
) -> None:
    card = {**card, "homepage": "https://example.com/model"}
    page = render_html(title="r", card=card, metrics=metrics, images=images)
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", page, re.IGNORECASE)
    assert "<link" not in page.lower()
    assert "<script" not in page.lower()
    assert "<style>" in page


def test_html_escapes_untrusted_values(card: dict[str, Any], metrics: dict[str, Any]) -> None:
    card = {**card, 'k"<b>': {"nested": "<img src=x onerror=alert(1)>"}}
    metrics = {**metrics, "model<i>": "<b>bold</b>"}
    page = render_html(title="<h1>t</h1>", card=card, metrics=metrics, images={})
    assert "<script>alert(1)</script>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<img src=x" not in page
    assert "&lt;img src=x onerror=alert(1)&gt;" in page
    assert "<b>" not in page and "<i>" not in page
    assert "&lt;h1&gt;t&lt;/h1&gt;" in page


def test_html_renders_deep_values_as_json(metrics: dict[str, Any]) -> None:
    card = {"id": "m", "a": {"b": {"c": {"d": {"e": "<deep>"}}}}}
    page = render_html(title="r", card=card, metrics=metrics, images={})
    pre = re.search(r"<pre>(.*?)</pre>", page, re.DOTALL)
    assert pre is not None
    assert "&quot;e&quot;: &quot;&lt;deep&gt;&quot;" in pre.group(1)


def test_html_sections_are_included_verbatim(card: dict[str, Any], metrics: dict[str, Any]) -> None:
    sections = [("Drift <summary>", "<p class='x'>No drift detected.</p>")]
    page = render_html(title="r", card=card, metrics=metrics, images={}, sections=sections)
    assert "<h2>Drift &lt;summary&gt;</h2>" in page
    assert "<p class='x'>No drift detected.</p>" in page
    assert page.index("Model card") < page.index("Metrics") < page.index("Drift")


@settings(max_examples=50, deadline=None)
@given(value=st.text())
def test_html_escapes_any_card_text(value: str) -> None:
    page = render_html(title="r", card={"id": "m", "v": value}, metrics={}, images={})
    assert f"<tr><th>v</th><td>{html.escape(value)}</td></tr>" in page


# --- write_html ------------------------------------------------------------------------------


def test_write_html_writes_and_replaces(tmp_path: Path) -> None:
    target = tmp_path / "report.html"
    target.write_text("old", encoding="utf-8")
    text = "<!DOCTYPE html><p>naïve — 数据</p>"
    assert write_html(target, text) == target
    assert target.read_text(encoding="utf-8") == text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.html"]


def test_write_html_creates_missing_folder(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b" / "report.html"
    write_html(target, "<p>x</p>")
    assert target.read_text(encoding="utf-8") == "<p>x</p>"


def test_write_html_failure_keeps_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "report.html"
    target.write_text("old", encoding="utf-8")

    def boom(fd: int) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", boom)
    with pytest.raises(StateError, match="disk full") as err:
        write_html(target, "new")
    assert str(target) in str(err.value)
    assert target.read_text(encoding="utf-8") == "old"
    assert leftovers(tmp_path) == []


def test_import_is_cheap_and_side_effect_free(tmp_path: Path) -> None:
    code = (
        "import importlib.util, sys\n"
        f"spec = importlib.util.spec_from_file_location('r', {reporting.__file__!r})\n"
        "module = importlib.util.module_from_spec(spec)\n"
        "spec.loader.exec_module(module)\n"
        "print('matplotlib' in sys.modules)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True
    )
    assert done.stdout.strip() == "False"
    assert list(tmp_path.iterdir()) == []


# --- build_report and report.json ----------------------------------------------------------


@pytest.fixture
def deployed(workspace: Settings) -> Workspace:
    """A workspace with one trained version in production."""
    ingest(workspace)
    train(workspace)
    deploy(workspace)
    return Workspace(workspace)


def test_a_report_records_the_version_it_describes(deployed: Workspace) -> None:
    folder = deployed.settings.model_folder
    assert report_version(deployed) is None  # no report yet
    written = build_report(deployed)
    assert set(written) == {"confusion matrix", "classification report", "HTML report"}
    assert "<title>Beryl model report: v0001</title>" in written["HTML report"].read_text()
    record = json.loads((folder / REPORT_RECORD).read_text())
    assert record["version"] == "v0001" and record["written_at"].endswith("Z")
    assert record["files"] == {
        label: {"name": path.name, "sha256": sha256_file(path)} for label, path in written.items()
    }
    assert all(path.parent == folder for path in written.values())
    assert report_version(deployed) == report_version(deployed.settings) == "v0001"
    train(deployed.settings)
    build_report(deployed, "v0002")
    assert report_version(deployed) == "v0002"


def test_a_report_cut_damaged_or_missing_has_no_version(deployed: Workspace) -> None:
    folder = deployed.settings.model_folder
    written = build_report(deployed)
    page = written["HTML report"]
    page.write_text("<html><body>cut")  # a torn report still titled by nothing
    assert report_version(deployed) is None
    build_report(deployed)
    written["confusion matrix"].unlink()
    assert report_version(deployed) is None
    build_report(deployed)
    for damage in ("{torn", "[]", '{"version": "v0001", "files": {}}', '{"files": {"x": 1}}'):
        (folder / REPORT_RECORD).write_text(damage)
        assert report_version(deployed) is None, damage
    build_report(deployed)
    record = json.loads((folder / REPORT_RECORD).read_text())
    record["files"]["HTML report"]["name"] = "../config.json"  # never a file outside the folder
    (folder / REPORT_RECORD).write_text(json.dumps(record))
    assert report_version(deployed) is None
