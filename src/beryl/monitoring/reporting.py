"""Render evaluation results as PNG images and a self-contained HTML report, from plain data.

``build_report`` writes a version's report into the model folder, and last ``report.json``
beside it: the version it describes, when, and the sha256 of each file. ``report_version`` reads
it back, so whether the report is current is known without reading the HTML::

    build_report(workspace, "v0002")     # confusionmatrix.png, classificationreport.png, ...
    report_version(workspace)            # "v0002"; None when no whole report is there
"""

from __future__ import annotations

import base64
import html
import json
import numbers
from pathlib import Path
from typing import TYPE_CHECKING, Any

from beryl._io import (
    atomic_write_json,
    atomic_write_text,
    atomic_write_with,
    read_json,
    sha256_file,
    utc_now,
)
from beryl.workspace import Workspace

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from beryl.config import Settings

REPORT_FILE = "report.html"
REPORT_RECORD = "report.json"
_RECORD_FORMAT = 1

_SUMMARY_ROWS = ("accuracy", "micro avg", "macro avg", "weighted avg", "samples avg")
_REPORT_COLUMNS = ("precision", "recall", "f1-score", "support")
_METRIC_ORDER = (
    *("n", "threshold", "accuracy", "precision", "recall", "f1", "roc_auc", "brier"),
    "confusion_matrix",
)
_MAX_TABLE_DEPTH = 3
_MIME = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".svg": "image/svg+xml"}
_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:2rem auto;max-width:1000px;
color:#1f2328;padding:0 1rem}
h1{border-bottom:2px solid #d0d7de;padding-bottom:.3rem}
table{border-collapse:collapse;margin:.5rem 0}
th,td{border:1px solid #d0d7de;padding:.3rem .6rem;text-align:left;vertical-align:top}
th{background:#f6f8fa}
td.num{text-align:right;font-variant-numeric:tabular-nums}
pre{background:#f6f8fa;padding:.5rem;margin:0;white-space:pre-wrap}
figure{margin:1rem 0}img{max-width:100%;border:1px solid #d0d7de}
figcaption{font-style:italic;color:#57606a}
"""


def _save_figure(fig: Figure, path: Path) -> Path:
    """Render ``fig`` with the Agg canvas into ``path`` atomically, then free the figure."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    try:
        atomic_write_with(path, lambda tmp: fig.savefig(tmp, format="png", bbox_inches="tight"))
        return path
    finally:
        fig.clear()


def render_confusion_matrix(
    matrix: list[list[int]], labels: list[str], path: Path, *, title: str = "Confusion matrix"
) -> Path:
    """Draw a count-annotated confusion-matrix heatmap (rows actual, columns predicted) as PNG."""
    from matplotlib.figure import Figure

    n = len(labels)
    if n == 0 or len(matrix) != n or any(len(row) != n for row in matrix):
        raise ValueError(f"confusion matrix must be {n}x{n} to match labels, got {matrix!r}")
    counts = [[int(v) for v in row] for row in matrix]
    peak = max(1, *(v for row in counts for v in row))
    side = max(4.0, 1.0 * n + 2.5)
    fig = Figure(figsize=(side + 1.0, side), dpi=100)
    ax = fig.add_subplot()
    image = ax.imshow(counts, cmap="Blues", vmin=0, vmax=peak)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    for i, row in enumerate(counts):
        for j, value in enumerate(row):
            colour = "white" if value > peak / 2 else "black"
            ax.text(j, i, str(value), ha="center", va="center", color=colour, fontsize=12)
    ax.set_xticks(range(n), labels=[str(label) for label in labels])
    ax.set_yticks(range(n), labels=[str(label) for label in labels])
    ax.set_xlabel("Predicted")
    ax.set_ylabel("Actual")
    ax.set_title(title)
    return _save_figure(fig, path)


def _report_rows(report: dict[str, Any]) -> list[list[str]]:
    """Turn a classification_report dict into table rows: classes first, then summary rows."""
    rows: list[list[str]] = []
    classes = [key for key in report if key not in _SUMMARY_ROWS]
    for key in [*classes, *(k for k in _SUMMARY_ROWS if k in report)]:
        value = report[key]
        if isinstance(value, dict):
            cells = [f"{float(value.get(col, float('nan'))):.3f}" for col in _REPORT_COLUMNS[:3]]
            cells.append(str(round(float(value.get("support", 0)))))
        else:  # sklearn stores plain accuracy as one float; support is the weighted total
            total = report.get("weighted avg", {}).get("support")
            cells = ["", "", f"{float(value):.3f}", "" if total is None else str(round(total))]
        rows.append([str(key), *cells])
    return rows


def render_classification_report(
    report: dict[str, Any], path: Path, *, title: str = "Classification report"
) -> Path:
    """Draw sklearn's ``classification_report(output_dict=True)`` as a PNG table."""
    from matplotlib.figure import Figure
    from matplotlib.transforms import Bbox

    rows = _report_rows(report)
    if not rows:
        raise ValueError("classification report is empty")
    label_inches = 0.4 + 0.11 * max(12, *(len(row[0]) for row in rows))
    width = label_inches + 4.4  # four numeric columns of 1.1 inch each
    fig = Figure(figsize=(width, 0.8 + 0.35 * (len(rows) + 1)), dpi=100)
    ax = fig.add_subplot()
    ax.axis("off")
    ax.set_title(title)
    first = label_inches / width
    table = ax.table(
        cellText=rows,
        colLabels=["", *_REPORT_COLUMNS],
        colWidths=[first, *([(1 - first) / 4] * 4)],
        cellLoc="right",
        bbox=Bbox.from_bounds(0.0, 0.0, 1.0, 1.0),
    )
    table.auto_set_font_size(False)
    table.set_fontsize(10)
    for (r, c), cell in table.get_celld().items():
        if r == 0 or c == 0:
            cell.set_text_props(fontweight="bold", ha="left" if c == 0 else "right")
            cell.set_facecolor("#f0f0f0")
    return _save_figure(fig, path)


def _fmt(value: Any, digits: int | None = None) -> str:
    """Format a scalar for display (escaped); floats use ``digits`` decimals when given."""
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, numbers.Integral):
        return str(int(value))
    if isinstance(value, numbers.Real) and digits is not None:
        return f"{float(value):.{digits}f}"
    return html.escape(str(value))


def _render_value(value: Any, depth: int = 0) -> str:
    """Render a JSON-like value as HTML: nested tables, lists, or escaped JSON when deep."""
    if isinstance(value, dict | list | tuple) and depth >= _MAX_TABLE_DEPTH:
        text = json.dumps(value, indent=2, default=str, ensure_ascii=False)
        return f"<pre>{html.escape(text)}</pre>"
    if isinstance(value, dict):
        if not value:
            return "<em>(empty)</em>"
        body = "".join(
            f"<tr><th>{html.escape(str(k))}</th><td>{_render_value(v, depth + 1)}</td></tr>"
            for k, v in value.items()
        )
        return f"<table>{body}</table>"
    if isinstance(value, list | tuple):
        if not value:
            return "<em>(none)</em>"
        items = "".join(f"<li>{_render_value(v, depth + 1)}</li>" for v in value)
        return f"<ul>{items}</ul>"
    return _fmt(value)


def _render_matrix(matrix: Any) -> str:
    """Render a list-of-lists matrix as a compact numeric table."""
    if not isinstance(matrix, list | tuple) or not all(isinstance(r, list | tuple) for r in matrix):
        return _render_value(matrix)
    body = "".join(
        "<tr>" + "".join(f'<td class="num">{_fmt(v)}</td>' for v in row) + "</tr>" for row in matrix
    )
    return f"<table>{body}</table>"


def _render_metrics(metrics: dict[str, Any]) -> str:
    """Render the metrics dict as a two-column table, well-known keys first."""
    keys = [k for k in _METRIC_ORDER if k in metrics]
    keys += [k for k in metrics if k not in _METRIC_ORDER]
    rows = []
    for key in keys:
        value = metrics[key]
        if key == "confusion_matrix":
            cell = f"<td>{_render_matrix(value)}</td>"
        elif isinstance(value, dict | list | tuple):
            cell = f"<td>{_render_value(value)}</td>"
        else:
            cell = f'<td class="num">{_fmt(value, digits=4)}</td>'
        rows.append(f"<tr><th>{html.escape(str(key))}</th>{cell}</tr>")
    return "<table>" + "".join(rows) + "</table>"


def _chosen_section(tuning: dict[str, Any]) -> str:
    """The card's tuning in words: settings, threshold, cross-validated F1, calibration."""
    from beryl.model.tuning import describe

    lines = describe(tuning) or ["This version was trained before Beryl recorded its tuning."]
    return "<ul>" + "".join(f"<li>{html.escape(line.strip())}</li>" for line in lines) + "</ul>"


def _reliability_section(metrics: dict[str, Any]) -> str:
    """Predicted probability against the observed rate, per bin, with the Brier score."""
    curve = metrics.get("reliability") or []
    rows = "".join(
        f'<tr><td class="num">{p["low"]:.1f}–{p["high"]:.1f}</td>'
        f'<td class="num">{p["rows"]}</td><td class="num">{p["predicted"]:.3f}</td>'
        f'<td class="num">{p["observed"]:.3f}</td></tr>'
        for p in curve
    )
    brier = metrics.get("brier")
    lead = (
        f"<p>Brier score {_fmt(brier, digits=4)} (0 is perfect); decisions at the threshold "
        f"{_fmt(metrics.get('threshold'), digits=4)}. A calibrated model's observed rates match "
        "its predicted probabilities.</p>"
    )
    return (
        lead + "<table><tr><th>probability</th><th>rows</th><th>mean predicted</th>"
        f"<th>observed rate</th></tr>{rows}</table>"
    )


def _embed_image(caption: str, path: Path) -> str:
    """Return a <figure> with the image inlined as a base64 data: URI."""
    mime = _MIME.get(path.suffix.lower(), "image/png")
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    alt = html.escape(caption)
    return (
        f'<figure><img src="data:{mime};base64,{data}" alt="{alt}">'
        f"<figcaption>{alt}</figcaption></figure>"
    )


def render_html(
    *,
    title: str,
    card: dict[str, Any],
    metrics: dict[str, Any],
    images: dict[str, Path],
    sections: list[tuple[str, str]] | None = None,
    lead: tuple[str, str] | None = None,
) -> str:
    """Build a self-contained HTML report (inline CSS, embedded images, no external URLs);
    ``lead`` (heading, HTML) opens it, before the model card."""
    safe_title = html.escape(title)
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{safe_title}</title><style>{_CSS}</style></head><body>",
        f"<h1>{safe_title}</h1>",
    ]
    if lead is not None:
        parts.append(f'<section id="lead"><h2>{html.escape(lead[0])}</h2>{lead[1]}</section>')
    parts += [
        f"<section><h2>Model card</h2>{_render_value(card)}</section>",
        f"<section><h2>Metrics</h2>{_render_metrics(metrics)}</section>",
    ]
    if images:
        figures = "".join(_embed_image(caption, p) for caption, p in images.items())
        parts.append(f"<section><h2>Figures</h2>{figures}</section>")
    for heading, body in sections or []:
        parts.append(f"<section><h2>{html.escape(heading)}</h2>{body}</section>")
    parts.append("</body></html>\n")
    return "\n".join(parts)


def write_html(path: Path, html: str) -> Path:
    """Write ``html`` to ``path`` atomically (temp file, fsync, rename) as UTF-8."""
    atomic_write_text(path, html)
    return path


def build_report(workspace: Workspace | Settings, version: str | None = None) -> dict[str, Path]:
    """Write the confusion matrix, classification report and HTML report of a model version,
    then ``report.json`` naming them.

    The version defaults to production (else the latest trained); it is scored on the test data
    now, so the report always matches the files it describes.
    """
    from sklearn.metrics import classification_report

    from beryl.data.csvfiles import read_labelled
    from beryl.data.schema import Schema
    from beryl.model.predict import predict
    from beryl.model.scoring import compute_metrics
    from beryl.monitoring.dashboard import drift_section
    from beryl.monitoring.overview import timeline
    from beryl.monitoring.panels import (
        decision_table,
        drift_over_time,
        files_table,
        growth_chart,
        model_drift_chart,
    )

    workspace = Workspace.of(workspace)
    registry, folder = workspace.registry, workspace.settings.model_folder
    version = version or registry.production() or registry.latest()
    card = registry.card(version)
    schema = Schema.from_dict(card.schema)
    frame, _ = read_labelled(workspace.settings.test_data, schema)
    model = registry.model(version)
    metrics = compute_metrics(model, frame, schema)
    truth = [str(v) for v in frame[schema.target].tolist()]
    predicted = [str(v) for v in predict(model, frame[schema.features]).labels]
    written = {
        "confusion matrix": render_confusion_matrix(
            metrics["confusion_matrix"],
            metrics["confusion_labels"],
            folder / "confusionmatrix.png",
            title=f"Confusion matrix of {version}",
        ),
        "classification report": render_classification_report(
            classification_report(truth, predicted, output_dict=True, zero_division=0),
            folder / "classificationreport.png",
            title=f"Classification report of {version}",
        ),
    }
    history = timeline(workspace)
    production = registry.production()
    serving = (
        f"<p>In production: <strong>{html.escape(production)}</strong>. This report describes "
        f"{html.escape(version)}, scored on the test data as it is now.</p>"
        if production
        else "<p>No model is in production yet.</p>"
    )
    page = render_html(
        title=f"Beryl model report: {version}",
        card=card.to_dict(),
        metrics=metrics,
        images={label.capitalize(): path for label, path in written.items()},
        lead=("Decision", decision_table(history.decision) + serving),
        sections=[
            ("How this model was chosen", _chosen_section(card.tuning)),
            ("Calibration on the test data", _reliability_section(metrics)),
            ("Model drift over time", model_drift_chart(history.model_drift)),
            ("Data drift", drift_section(workspace.history.latest_drift())),
            ("Data drift per feature over time", drift_over_time(history.drifts)),
            ("Input files not ingested as they are", files_table(history.files)),
            ("Dataset growth per batch", growth_chart(history.batches)),
        ],
    )
    written["HTML report"] = write_html(folder / REPORT_FILE, page)
    record = {
        "format": _RECORD_FORMAT,
        "version": version,
        "written_at": utc_now(),
        "files": {
            label: {"name": path.name, "sha256": sha256_file(path)}
            for label, path in written.items()
        },
    }
    atomic_write_json(folder / REPORT_RECORD, record)  # last: it vouches for the files above
    return written


def report_version(workspace: Workspace | Settings) -> str | None:
    """The version the report in the model folder describes, from ``report.json``; None when
    there is no record, or a file it names is missing or not the one written (a report torn
    by a kill, or written by a version of Beryl from before the record)."""
    folder = Workspace.of(workspace).settings.model_folder
    try:
        record = read_json(folder / REPORT_RECORD)
        version, files = record["version"], list(record["files"].values())
        whole = bool(files) and all(
            sha256_file(folder / Path(file["name"]).name) == file["sha256"] for file in files
        )
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return None
    return version if whole and isinstance(version, str) else None
