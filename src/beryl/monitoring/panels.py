"""The views over time that the dashboard and the HTML report share: model drift by pass, data
drift per feature by pass, the last promotion decision, the input files that were refused or
repeated, and how the dataset grew batch by batch.

``beryl.monitoring.overview.timeline`` gathers a ``Timeline``; each function here draws one part
of it as an HTML fragment with inline styles (so it reads the same outside the dashboard's
stylesheet), its numbers in ``data-*`` attributes for the browser test::

    fragment = model_drift_chart(timeline.model_drift)
    level, text = model_drift_badge(timeline.model_drift)   # the dashboard header's indicator
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from beryl.monitoring.charts import (
    AXIS,
    END,
    GRID,
    MIDDLE,
    Row,
    Segment,
    bar_chart,
    esc,
    fmt,
    html_table,
    is_number,
    legend,
    nice_step,
    num,
    svg_line,
    svg_open,
    svg_text,
    ticks,
    time_tag,
)
from beryl.monitoring.results import DRIFTED, NOT_TESTED
from beryl.monitoring.store import DriftRecord, ModelDriftRecord

_RED, _GREEN, _GREY, _BAND = "#dc2626", "#059669", "#94a3b8", "#d1fae5"
_MAX_PASSES = 12  # columns of the drift-over-time table
_MAX_BATCHES = 20  # bars of the growth chart
_NUM = '<td class="num" style="text-align:right">'
_CELL = {
    DRIFTED: "background:#fee2e2;color:#991b1b;font-weight:600",
    NOT_TESTED: "background:#f1f5f9;color:#64748b",
}


@dataclass(frozen=True)
class FileRow:
    """An input file that was not ingested as it is: quarantined, or a copy of one already read."""

    name: str
    status: str
    reason: str | None
    time: str | None
    waiting: bool  # quarantined and still in the input folder


@dataclass(frozen=True)
class BatchRow:
    """One batch the dataset grew by."""

    id: str
    created: str | None
    rows: int
    files: int


@dataclass(frozen=True)
class Decision:
    """What the latest pass that trained decided, and the figures it compared (same test data):
    ``figures`` maps "candidate" and "production" to their F1, precision and recall."""

    run_id: int | None
    outcome: str  # promoted | kept
    reason: str
    candidate: str
    production: str | None
    figures: dict[str, dict[str, float | None]]
    time: str | None = None


@dataclass(frozen=True)
class Timeline:
    """The monitoring history the dashboard and the report draw, oldest first."""

    model_drift: Sequence[ModelDriftRecord] = field(default_factory=tuple)
    drifts: Sequence[DriftRecord] = field(default_factory=tuple)
    decision: Decision | None = None
    files: Sequence[FileRow] = field(default_factory=tuple)
    batches: Sequence[BatchRow] = field(default_factory=tuple)


def model_drift_badge(checks: Sequence[ModelDriftRecord]) -> tuple[str, str]:
    """The header's model-drift indicator from the latest check: (level, text)."""
    if not checks:
        return "grey", "no check yet"
    last = checks[-1]
    if last.verdict == NOT_TESTED:
        return "grey", "model drift not tested"
    shown = f"F1 {fmt(last.f1_new_data, '.2f')} vs {fmt(last.f1_recorded, '.2f')}"
    if last.verdict == DRIFTED:
        return "red", f"model drift · {shown}"
    return "green", f"no model drift · {shown}"


def model_drift_summary(checks: Sequence[ModelDriftRecord]) -> str:
    """One sentence on the latest model-drift check."""
    if not checks:
        return "No model-drift check yet: it runs when labelled rows arrive after the first model."
    last = checks[-1]
    head = (
        f"Pass #{last.run_id}: production {last.version} scored F1 {fmt(last.f1_new_data)} on "
        f"{fmt(last.rows, ',')} new labelled rows, against {fmt(last.f1_recorded)} recorded "
        f"(tolerance {fmt(last.tolerance, 'g')})"
    )
    if last.verdict == NOT_TESTED:
        return f"{head}: not tested ({last.note})."
    return f"{head}: {'model drift' if last.verdict == DRIFTED else 'no model drift'}."


def model_drift_chart(checks: Sequence[ModelDriftRecord]) -> str:
    """Production F1 on each pass's new rows against its recorded F1, with the tolerance band
    (recorded minus tolerance up to recorded) shaded; drifted passes in red, untested hollow."""
    if not checks:
        return f'<p class="empty">{esc(model_drift_summary(checks))}</p>'
    left, right, top, bottom = 52, 628, 16, 228
    values = [v for c in checks for v in (c.f1_new_data, c.f1_recorded) if is_number(v)]
    values += [
        float(c.f1_recorded) - float(c.tolerance)
        for c in checks
        if is_number(c.f1_recorded) and is_number(c.tolerance)
    ]
    least, most = (min(values), max(values)) if values else (0.0, 1.0)
    step = nice_step(max(most - least, 0.05) * 1.2, 5)
    low, high = max(0.0, (least // step) * step), min(1.0, (most // step + 1) * step)
    high = high if high > low else low + step
    width = (right - left) / len(checks)

    def x_of(i: int) -> float:
        return left + (i + 0.5) * width

    def y_of(value: float) -> float:
        return bottom - (value - low) / (high - low) * (bottom - top)

    parts = [svg_open("model-drift-chart", 640, 270, "Model drift over time")]
    for value in ticks(low, high, step):
        parts.append(svg_line(left, y_of(value), right, y_of(value), GRID))
        parts.append(svg_text(left - 6, y_of(value) + 4, f"{value:.2f}", END))
    for i, check in enumerate(checks):
        recorded, tolerance = check.f1_recorded, check.tolerance
        if is_number(recorded) and is_number(tolerance):
            floor = max(float(recorded) - float(tolerance), low)
            parts.append(
                f'<rect class="tolerance-band" x="{x_of(i) - width / 2:.1f}" '
                f'y="{y_of(float(recorded)):.1f}" width="{width:.1f}" '
                f'height="{max(y_of(floor) - y_of(float(recorded)), 0.5):.1f}" fill="{_BAND}"/>'
                + svg_line(
                    x_of(i) - width / 2,
                    y_of(float(recorded)),
                    x_of(i) + width / 2,
                    y_of(float(recorded)),
                    _GREEN,
                    ' stroke-width="2"',
                )
            )
    every = max(1, -(-len(checks) // 14))
    for i, check in enumerate(checks):
        label = f"#{check.run_id}" if check.run_id is not None else str(i + 1)
        parts.append(svg_text(x_of(i), bottom + 17, label, MIDDLE) if i % every == 0 else "")
    parts.append(
        svg_line(left, bottom, right, bottom, AXIS) + svg_line(left, top, left, bottom, AXIS)
    )
    parts.append(svg_text((left + right) / 2, bottom + 36, "pass (run id)", MIDDLE))
    points = [(i, c) for i, c in enumerate(checks) if is_number(c.f1_new_data)]
    path = " ".join(f"{x_of(i):.1f},{y_of(float(c.f1_new_data or 0)):.1f}" for i, c in points)
    parts.append(
        f'<polyline points="{path}" fill="none" stroke="#2563eb" stroke-width="2"/>'
        if len(points) > 1
        else ""
    )
    for i, check in enumerate(checks):
        f1 = check.f1_new_data
        y = y_of(float(f1)) if is_number(f1) else bottom - 6
        colour = {DRIFTED: _RED, NOT_TESTED: _GREY}.get(check.verdict, "#2563eb")
        fill = "#fff" if check.verdict == NOT_TESTED else colour
        tip = (
            f"pass #{check.run_id}, {check.version}: F1 {fmt(f1)} on {fmt(check.rows, ',')} new "
            f"rows, recorded {fmt(check.f1_recorded)} → {check.verdict}"
            + (f" ({check.note})" if check.note else "")
        )
        parts.append(
            f'<circle class="model-drift-point" data-run="{esc(check.run_id)}" '
            f'data-version="{esc(check.version)}" data-f1="{num(f1)}" '
            f'data-recorded="{num(check.f1_recorded)}" data-tolerance="{num(check.tolerance)}" '
            f'data-verdict="{esc(check.verdict)}" cx="{x_of(i):.2f}" cy="{y:.2f}" r="4.5" '
            f'fill="{fill}" stroke="{colour}" stroke-width="1.5"><title>{esc(tip)}</title>'
            "</circle>"
        )
    key = legend(
        [
            ("#2563eb", "F1 on the new rows"),
            (_GREEN, "recorded F1"),
            (_BAND, "tolerance band"),
            (_RED, "model drift"),
            (_GREY, "not tested"),
        ]
    )
    sentence = f'<p class="muted">{esc(model_drift_summary(checks))}</p>'
    return sentence + "".join(parts) + "</svg>" + key


def drift_over_time(drifts: Sequence[DriftRecord]) -> str:
    """A feature-by-pass table of the latest data-drift checks: each cell the feature's distance,
    red when it drifted, grey when it was not tested; the first row is the batch's verdict."""
    if not drifts:
        return '<p class="empty">No data-drift check yet: one runs on every new batch.</p>'
    shown = list(drifts)[-_MAX_PASSES:]
    features = list(dict.fromkeys(name for d in shown for name in d.result.features))
    head = ["Feature", *(f"#{d.run_id}" if d.run_id is not None else "—" for d in shown)]
    verdicts = "".join(
        f'<td class="drift-pass" data-run="{esc(d.run_id)}" data-verdict="{esc(d.result.verdict)}"'
        f' style="{_CELL.get(d.result.verdict, "")}" title="{esc(d.result.note or "")}">'
        + esc(
            "not tested"
            if d.result.verdict == NOT_TESTED
            else f"{fmt(d.result.drift_share, '.0%')} drifted"
        )
        + "</td>"
        for d in shown
    )
    rows = [f"<tr><th>batch ({len(shown)} latest passes)</th>{verdicts}</tr>"]
    for name in features:
        cells = []
        for d in shown:
            info = d.result.features.get(name)
            if info is None:
                cells.append("<td>—</td>")
                continue
            verdict = info.verdict
            text = "n/t" if verdict == NOT_TESTED else fmt(info.distance, ".3f")
            tip = (
                f"{name} in pass #{d.run_id}: {info.distance_name} {fmt(info.distance)}, {verdict}"
            )
            cells.append(
                f'<td class="drift-cell num" data-feature="{esc(name)}" data-run="{esc(d.run_id)}"'
                f' data-verdict="{esc(verdict)}" data-distance="{num(info.distance)}" '
                f'style="text-align:right;{_CELL.get(verdict, "")}" title="{esc(tip)}">'
                f"{esc(text)}</td>"
            )
        rows.append(f"<tr><td>{esc(name)}</td>{''.join(cells)}</tr>")
    key = legend([("#fee2e2", "drifted"), ("#f1f5f9", "not tested (n/t)")])
    table = html_table("drift-history", head, rows, set(range(1, len(head))))
    return (
        "<p class=\"muted\">Each cell is the feature's distance from production's training data "
        "in that pass's new batch.</p>" + table + key
    )


def decision_summary(decision: Decision | None) -> str:
    """The last decision in one plain sentence, with its reason."""
    if decision is None:
        return "No decision yet: the first pass that trains a model decides."
    candidate = decision.figures.get("candidate", {}).get("f1")
    production = decision.figures.get("production", {}).get("f1")
    against = (
        f"against {fmt(production)} for production {decision.production}"
        if decision.production
        else "with no production model to compare with"
    )
    verb = "promoted" if decision.outcome == "promoted" else "kept out of production"
    return (
        f"Pass #{decision.run_id}: candidate {decision.candidate} was {verb}. It scored F1 "
        f"{fmt(candidate)} on the test data, {against}. Reason: {decision.reason}."
    )


def decision_table(decision: Decision | None) -> str:
    """The last decision's sentence and the candidate against production on the same test data."""
    sentence = f'<p id="decision-summary">{esc(decision_summary(decision))}</p>'
    if decision is None:
        return sentence
    body = []
    for role, version in (("candidate", decision.candidate), ("production", decision.production)):
        if version is None:
            continue
        values = decision.figures.get(role, {})
        body.append(
            f'<tr data-role="{role}" data-version="{esc(version)}"><td>{role}</td>'
            f"<td>{esc(version)}</td>"
            + "".join(
                f'{_NUM}<span data-metric="{name}">{fmt(values.get(name))}</span></td>'
                for name in ("f1", "precision", "recall")
            )
            + "</tr>"
        )
    head = ["Role", "Version", "F1", "Precision", "Recall"]
    return sentence + html_table("decision", head, body, {2, 3, 4})


def files_table(files: Sequence[FileRow]) -> str:
    """Input files quarantined (still waiting or since fixed) and copies of files already read."""
    if not files:
        return '<p class="empty">Every input file so far was ingested.</p>'
    rows = []
    for row in files:
        state = row.status + (" (still in the input folder)" if row.waiting else "")
        style = ' style="color:#991b1b;font-weight:600"' if row.waiting else ""
        rows.append(
            f'<tr class="input-file" data-file="{esc(row.name)}" data-status="{esc(row.status)}" '
            f'data-waiting="{"true" if row.waiting else "false"}"><td>{esc(row.name)}</td>'
            f"<td{style}>{esc(state)}</td><td>{esc(row.reason or '—')}</td>"
            f"<td>{time_tag(row.time)}</td></tr>"
        )
    return html_table("input-files", ["File", "Status", "Reason", "Time"], rows, set())


def growth_chart(batches: Sequence[BatchRow]) -> str:
    """Rows each batch added, newest last, with the dataset's running total."""
    if not batches:
        return '<p class="empty">No data yet: each ingested batch appears here.</p>'
    total, rows = 0, []
    for batch in batches:
        total += batch.rows
        attrs = {"data-batch": batch.id, "data-rows": str(batch.rows), "data-total": str(total)}
        tip = f"{batch.id}: {batch.rows:,} rows from {batch.files} file(s), {total:,} in all"
        segment = Segment(batch.rows, "#0d9488", attrs, tip)
        rows.append(Row(batch.id, [segment], f"+{batch.rows:,} → {total:,}", {}))
    shown = rows[-_MAX_BATCHES:]
    chart = bar_chart(("growth-chart", "growth-row", "growth-bar"), shown, "{:,.0f}".format)
    latest = f" (the latest {len(shown)} shown)" if len(shown) < len(rows) else ""
    return (
        f'<p class="muted">{len(batches)} batches, {total:,} rows in the dataset{latest}.</p>'
        + chart
    )
