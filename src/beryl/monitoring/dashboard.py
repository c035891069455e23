"""Render the monitoring dashboard as one offline HTML page with inline SVG charts, from the
``DashboardData`` that ``beryl.monitoring.overview.dashboard_data`` gathers.

Every chart carries its numbers in ``data-*`` attributes (floats as ``repr``, "" for no number) so a
browser test can check the picture against the source; every text from the data is HTML-escaped.

    page = render_dashboard(data)            # the whole document, served at GET /dashboard
    fragment = drift_section(data.drift)     # heading, chart and table, reused by the HTML report
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from beryl.monitoring.charts import (
    AXIS,
    END,
    GRID,
    INK,
    MIDDLE,
    Row,
    Segment,
    badge,
    bar_chart,
    card,
    esc,
    fmt,
    fmt_seconds,
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
from beryl.monitoring.livecard import TITLE as LIVE_TITLE
from beryl.monitoring.livecard import live_card
from beryl.monitoring.livereport import LiveSummary
from beryl.monitoring.panels import (
    Timeline,
    decision_table,
    drift_over_time,
    files_table,
    growth_chart,
    model_drift_badge,
    model_drift_chart,
)
from beryl.monitoring.results import DriftResult
from beryl.monitoring.store import PromotionRecord, RunRecord, ScoreRecord

_MAX_RUNS, _MAX_PROMOTIONS = 15, 8
_CANDIDATE, _PRODUCTION, _PROMOTE, _ROLLBACK = "#2563eb", "#059669", "#7c3aed", "#dc2626"
_DRIFTED, _STABLE = "#dc2626", "#94a3b8"
_STEP_COLOURS = ("#2563eb", "#0d9488", "#d97706", "#7c3aed", "#db2777", "#65a30d", "#0891b2")
_LEVELS = {"ok": "green", "partial": "amber", "running": "amber", "failed": "red"}
_SHORT = {"jensen-shannon": "JS", "psi": "PSI"}
_NUM = '<td class="num">'
_CSS = """*{box-sizing:border-box}
body{margin:0;background:#f3f5f8;color:#1f2937;font:15px/1.5 system-ui,-apple-system,sans-serif}
main{max-width:1320px;margin:0 auto;padding:1.5rem}h1{font-size:1.35rem;margin:0}
.banner,.card{background:#fff;border:1px solid #e3e8ef;border-radius:12px;padding:1.1rem 1.4rem}
.warning{background:#fff7ed;border:1px solid #fdba74;border-left:5px solid #ea580c;
border-radius:8px;padding:.6rem 1rem;margin:.8rem 0 0}
.banner{display:flex;flex-wrap:wrap;gap:1rem 2.5rem;align-items:center;margin-bottom:1.25rem;
justify-content:space-between;border-left:5px solid #0f766e}.muted{color:#6b7280;margin:0 0 .6rem}
.stats{display:flex;flex-wrap:wrap;gap:.75rem 2.25rem}.stat{display:flex;flex-direction:column}
.label{font-size:.72rem;text-transform:uppercase;letter-spacing:.06em;color:#6b7280}
.value{font-size:1.35rem;font-weight:650;line-height:1.3}.stat small{color:#6b7280}
.badge{border-radius:999px;padding:.12rem .65rem;font-size:.82rem;font-weight:600}
.green{background:#dcfce7;color:#166534}.amber{background:#fef3c7;color:#92400e}
.red{background:#fee2e2;color:#991b1b}.grey{background:#e5e7eb;color:#374151}
.grid{display:grid;gap:1.25rem;grid-auto-flow:dense;
grid-template-columns:repeat(auto-fit,minmax(min(480px,100%),1fr))}.card{min-width:0}
.card.wide{grid-column:1/-1}.card h2{font-size:1.05rem;margin:0 0 .4rem}.empty{color:#6b7280}
.scroll{overflow:auto}#versions-box{max-height:34rem}time,.num,.badge{white-space:nowrap}
#promotions{list-style:none;padding:0;margin:.6rem 0 0;font-size:.87rem}
#promotions li{padding:.4rem 0;border-top:1px solid #eef1f5}#promotions small{color:#6b7280}
table{border-collapse:collapse;width:100%;font-size:.87rem;margin-top:.5rem}
th,td{padding:.38rem .6rem;border-bottom:1px solid #eef1f5;text-align:left;vertical-align:top}
th{color:#6b7280;font-weight:600;font-size:.74rem;text-transform:uppercase;letter-spacing:.04em}
.num{text-align:right;font-variant-numeric:tabular-nums}tr.current td{background:#f0fdf4}
#confusion-matrix{width:auto;margin:1rem auto}#confusion-matrix th{text-align:center}
#confusion-matrix td{width:8rem;height:4.5rem;text-align:center;font-size:1.2rem;font-weight:650;
border:3px solid #fff}#confusion-matrix :is(td,th){vertical-align:middle}
@media (max-width:600px){main{padding:.6rem}.banner,.card{padding:.8rem}}
"""


@dataclass(frozen=True)
class ProductionModel:
    """The version in production, its F1 on the test data and when it got there."""

    version: str
    f1: float | None
    since: str | None


@dataclass(frozen=True)
class VersionRow:
    """One trained version as the versions table lists it."""

    id: str
    created: str | None
    f1: float | None
    rows: int | None
    production: bool


@dataclass(frozen=True)
class ConfusionMatrix:
    """Counts by actual (rows) and predicted (columns) label, of one version on the test data."""

    matrix: list[list[int]]
    labels: list[str]
    version: str | None


@dataclass(frozen=True)
class ModelQuality:
    """How the production model decides and how well: its threshold and the choices behind it,
    and its precision, recall, Brier score and reliability on the test data."""

    version: str
    threshold: float | None
    chosen: Sequence[str]  # ``beryl.model.tuning.describe`` of its card
    metrics: dict[str, float | None]
    reliability: Sequence[dict[str, float]]
    positive: str = "1"  # the class predicted above the threshold, as the target spells it


@dataclass(frozen=True)
class DashboardData:
    """Everything the dashboard shows: the registry's versions and the history's records."""

    title: str
    generated_at: str
    production: ProductionModel | None
    versions: Sequence[VersionRow]
    scores: Sequence[ScoreRecord]
    promotions: Sequence[PromotionRecord]
    drift: DriftResult | None
    missing_percent: dict[str, float]
    runs: Sequence[RunRecord]  # newest first
    confusion_matrix: ConfusionMatrix | None
    warnings: Sequence[str] = field(default_factory=tuple)
    quality: ModelQuality | None = None
    timeline: Timeline = field(default_factory=Timeline)
    live: LiveSummary | None = None  # None: live monitoring is off, or could not be read
    live_note: str | None = None  # why there is no live summary


def _f1_scale(values: list[float]) -> tuple[float, float, float]:
    """A padded F1 axis (inside 0..1 when the values are) ending on round ticks: low, high, step."""
    least, most = min(values), max(values)
    pad = max((most - least) * 0.15, 0.02)
    low = max(0.0, least - pad) if least >= 0 else least - pad
    high = min(1.0, most + pad) if most <= 1 else most + pad
    step = nice_step(high - low, 5)
    return min(math.floor(low / step) * step, least), max(math.ceil(high / step) * step, most), step


def _move(promo: PromotionRecord) -> str:
    return (
        f"{promo.action or 'promote'} {promo.from_version or '—'} → {promo.to_version or '?'} "
        f"(F1 {fmt(promo.from_f1)} → {fmt(promo.to_f1)})"
    )


def _f1_chart(scores: Sequence[ScoreRecord], promotions: Sequence[PromotionRecord]) -> str:
    """Candidate and production F1 by pass, with promotions and rollbacks as labelled markers."""
    roles = ("candidate", "production")
    points = [s for s in scores if s.role in roles and is_number(s.f1)]
    keys: list[int | str] = [p.run_id or f"#{i}" for i, p in enumerate(points)]
    slots = {key: i for i, key in enumerate(dict.fromkeys(keys))}  # one x per pass, in order
    first_time = [str(points[keys.index(key)].time or "") for key in slots]
    count, (left, right, top, bottom) = max(len(slots), 1), (52, 628, 26, 258)
    low, high, step = _f1_scale([float(p.f1 or 0.0) for p in points] or [0.5])
    decimals = max(0, math.ceil(-math.log10(step) - 1e-9))

    def x_of(slot: int) -> float:
        return left + (slot + 0.5) * (right - left) / count

    def y_of(value: float) -> float:
        return bottom - (value - low) / (high - low) * (bottom - top)

    parts = [
        svg_open("f1-chart", 640, 300, "F1 over time"),
        f'<rect class="plot-area" x="{left}" y="{top}" width="{right - left}" '
        f'height="{bottom - top}" fill="#fafbfc"/>',
    ]
    for value in ticks(low, high, step):
        parts.append(svg_line(left, y_of(value), right, y_of(value), GRID))
        parts.append(svg_text(left - 6, y_of(value) + 4, f"{value:.{decimals}f}", END))
    every = math.ceil(count / 14)
    for key, slot in slots.items():
        label = f"#{key}" if isinstance(key, int) else str(slot + 1)
        parts.append(svg_text(x_of(slot), bottom + 17, label, MIDDLE) if slot % every == 0 else "")
    parts.append(
        svg_line(left, bottom, right, bottom, AXIS)
        + svg_line(left, top, left, bottom, AXIS)
        + svg_text((left + right) / 2, bottom + 36, "pass (run id)", MIDDLE)
    )
    for k, promo in enumerate(promotions):
        when, action = str(promo.time or ""), str(promo.action or "promote")
        slot = max([i for i, t in enumerate(first_time) if t <= when] or [0])
        colour = _ROLLBACK if action == "rollback" else _PROMOTE
        x, version = x_of(slot), str(promo.to_version or "?")
        tip = f"{when}: {_move(promo)}\n{promo.reason or ''}"
        anchor = ' text-anchor="end"' if x > right - 60 else ""
        label = f'{anchor} fill="{colour}" font-weight="600" font-size="11"'
        parts.append(
            f'<g class="promotion-marker" data-version="{esc(version)}" '
            f'data-action="{esc(action)}"><title>{esc(tip)}</title>'
            + svg_line(x, top, x, bottom, colour, ' stroke-dasharray="3 3" stroke-opacity=".6"')
            + f'<path d="M{x - 6:.1f} {top - 9} h12 l-6 9 z" fill="{colour}"/>'
            + svg_text(x + (-5 if anchor else 5), top + 13 + 13 * (k % 3), version, label)
            + "</g>"
        )
    for role, colour in zip(roles, (_CANDIDATE, _PRODUCTION), strict=True):
        mine = [(slots[key], p) for key, p in zip(keys, points, strict=True) if p.role == role]
        path = " ".join(f"{x_of(s):.1f},{y_of(float(p.f1 or 0.0)):.1f}" for s, p in mine)
        line = f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="2"/>'
        parts.append(line if len(mine) > 1 else "")
        for slot, p in mine:
            f1 = float(p.f1 or 0.0)
            tip = f"{role} {p.version}: F1 {f1:.4f} (run {p.run_id})"
            parts.append(
                f'<circle class="f1-point" data-role="{role}" data-version="{esc(p.version)}" '
                f'data-f1="{num(f1)}" cx="{x_of(slot):.2f}" cy="{y_of(f1):.2f}" r="4.5" '
                f'fill="{colour}" stroke="#fff" stroke-width="1.5"><title>{esc(tip)}</title>'
                "</circle>"
            )
    return "".join(parts) + "</svg>"


def drift_section(drift: DriftResult | None) -> str:
    """The latest data-drift result as a heading, a per-feature distance chart and a table."""
    heading = '<section class="drift-section"><h2>Latest data drift</h2>'
    if drift is None or not drift.features:
        sentence = "No drift check yet: it runs when a new batch arrives after the first model."
        return f'{heading}<p class="empty">{sentence}</p></section>'
    features, reference = drift.features, drift.reference
    tested = len(features) - len(drift.untested_features)
    counted = (
        f"Not tested: {drift.note}."
        if drift.verdict == "not tested"
        else f"{sum(f.drifted for f in features.values())} of {tested} tested features "
        f"drifted ({fmt(drift.drift_share, '.0%')})"
        + (f" ({drift.note})" if drift.note else "")
        + "."
    )
    summary = (
        f"{counted} A batch of {fmt(drift.current.rows, ',')} rows, against "
        f"{fmt(reference.rows, ',')} rows the production model "
        f"{reference.model_version or ''} was trained on."
    )
    rows, body = [], []
    for name, info in features.items():
        distance, threshold, flag = info.distance, info.threshold, info.drifted
        metric = info.distance_name
        shown = f"{fmt(distance, '.3f')} {_SHORT.get(metric, metric)}"
        shown = shown if is_number(distance) else "not tested"
        attrs = {"data-feature": name, "data-distance": num(distance)}
        attrs["data-drifted"] = "true" if flag else "false"
        tip = f"{name}: {metric} {fmt(distance)}, threshold {fmt(threshold, 'g')}"
        bar = Segment(distance, _DRIFTED if flag else _STABLE, attrs, tip)
        rows.append(Row(name, [bar], shown, {}, threshold if is_number(threshold) else None))
        verdict = (
            '<strong style="color:#b91c1c">yes</strong>'
            if flag
            else ("no" if info.tested else "not tested")
        )
        body.append(
            f"<tr><td>{esc(name)}</td><td>{esc(info.test or '—')}</td>{_NUM}"
            f"{fmt(info.statistic, '.3f')}</td>{_NUM}{fmt(info.p_value, '.2g')}"
            f"</td>{_NUM}{esc(shown)}</td>{_NUM}{fmt(threshold, 'g')}</td><td title="
            f'"{esc(info.note or "")}">{verdict}</td></tr>'
        )
    chart = bar_chart(("drift-chart", "drift-row", "drift-bar"), rows, "{:g}".format, 1100)
    key = legend([(_DRIFTED, "drifted"), (_STABLE, "not drifted"), (INK, "threshold")])
    head = ["Feature", "Test", "Statistic", "p-value", "Distance", "Threshold", "Drifted"]
    table = html_table("drift-table", head, body, {2, 3, 4, 5})
    return f'{heading}<p class="muted">{esc(summary)}</p>{chart}{key}{table}</section>'


def _versions_card(versions: Sequence[VersionRow]) -> str:
    title = "Current model and versions"
    if not versions:
        return card(title, empty="No model versions yet: the first pass trains one.")
    rows = []
    for version in reversed(versions):
        css, marker = ("current", badge("green", "production")) if version.production else ("", "")
        rows.append(
            f'<tr data-version="{esc(version.id)}" class="{css}"><td><strong>'
            f"{esc(version.id)}</strong></td><td>{time_tag(version.created)}</td>"
            f"{_NUM}{fmt(version.rows, ',')}</td>{_NUM}{fmt(version.f1)}</td>"
            f"<td>{marker}</td></tr>"
        )
    head = ["Version", "Created", "Rows", "F1", ""]
    return card(title, html_table("versions", head, rows, {2, 3}))


def _f1_card(scores: Sequence[ScoreRecord], promotions: Sequence[PromotionRecord]) -> str:
    if not any(s.role in ("candidate", "production") for s in scores) and not promotions:
        sentence = "No scores yet: candidate and production F1 appear after the first pass."
        return card("F1 over time", empty=sentence)
    key = [(_CANDIDATE, "candidate"), (_PRODUCTION, "production")]
    key += [(_PROMOTE, "promotion ▼"), (_ROLLBACK, "rollback ▼")]
    moves = "".join(
        f"<li>{time_tag(p.time)} · {esc(_move(p))}<br><small>{esc(p.reason or '')}</small></li>"
        for p in reversed(promotions[-_MAX_PROMOTIONS:])
    )
    moves = f'<ul id="promotions">{moves}</ul>' if moves else ""
    return card("F1 over time", _f1_chart(scores, promotions) + legend(key) + moves)


def _missing_card(missing: dict[str, float]) -> str:
    title = "Missing values per column"
    if not missing:
        return card(title, empty="No data yet: missing values are counted after the first ingest.")
    rows = []
    for column, percent in missing.items():
        value = float(percent) if is_number(percent) else 0.0
        colour = "#dc2626" if value >= 20 else "#d97706" if value >= 5 else "#0d9488"
        attrs = {"data-column": column, "data-percent": num(percent)}
        segment = Segment(value, colour, attrs, f"{column}: {value:.2f}% missing")
        rows.append(Row(column, [segment], f"{value:.1f}%", {"data-column": column}))
    chart = bar_chart(("missing-chart", "missing-row", "missing-bar"), rows, "{:g}%".format)
    key = legend([("#0d9488", "under 5%"), ("#d97706", "5–20%"), ("#dc2626", "20% or more")])
    if not any(r.segments[0].value for r in rows):
        key += '<p class="empty">No column has missing values.</p>'
    return card(title, chart + key)


def _runs_card(runs: Sequence[RunRecord]) -> str:
    if not runs:
        return card("Recent passes", empty="No passes yet: each appears here with its timings.")
    colours: dict[str, str] = {}
    rows, body = [], []
    for run in runs[:_MAX_RUNS]:
        segments = []
        for step in run.steps:
            name, seconds = step.name, step.duration_s
            colour = colours.setdefault(name, _STEP_COLOURS[len(colours) % len(_STEP_COLOURS)])
            attrs = {"data-step": name, "data-seconds": num(seconds)}
            tip = f"{name}: {fmt_seconds(seconds)} ({step.status or '?'})"
            segments.append(Segment(seconds, colour, attrs, tip))
        status, ident = run.status or "unknown", esc(run.id)
        label = f"#{run.id} {run.command or ''}".strip()
        note = f"{fmt_seconds(run.duration_s)} · {status}"
        rows.append(Row(label, segments, note, {"data-run": str(run.id)}))
        body.append(
            f'<tr data-run="{ident}">{_NUM}#{ident}</td><td>{esc(run.command or "—")}'
            f"</td><td>{time_tag(run.started)}</td>{_NUM}{fmt_seconds(run.duration_s)}"
            f"</td><td>{badge(_LEVELS.get(status, 'grey'), status)}</td>"
            f"<td>{esc(run.summary or '')}</td></tr>"
        )
    chart = bar_chart(("runs-chart", "run-row", "step-bar"), rows, "{:g} s".format, width=1100)
    head = ["Run", "Command", "Started", "Duration", "Status", "Summary"]
    table = html_table("runs", head, body, {0, 3})
    title = f"Recent passes (latest {len(rows)}, newest first)"
    return card(title, chart + legend((c, n) for n, c in colours.items()) + table, wide=True)


def _confusion_card(confusion: ConfusionMatrix | None) -> str:
    title = "Confusion matrix"
    if confusion is None or not confusion.matrix:
        return card(title, empty="No confusion matrix yet: it is computed when a model is scored.")
    matrix = confusion.matrix
    labels = [str(x) for x in confusion.labels]
    labels += [str(i) for i in range(len(labels), len(matrix))]
    counts = [[float(v) if is_number(v) else 0.0 for v in row] for row in matrix]
    peak, total = max([1.0, *(v for row in counts for v in row)]), sum(map(sum, counts))
    correct = sum(row[i] for i, row in enumerate(counts) if i < len(row))
    rows = []
    for i, row in enumerate(matrix):
        cells = "".join(
            f'<td data-count="{esc(count)}" title="actual {esc(labels[i])}, predicted '
            f'{esc(labels[j])}" style="background:rgba({"15,118,110" if i == j else "220,38,38"},'
            f"{0.08 + 0.8 * counts[i][j] / peak:.2f});color:"
            f'{"#fff" if counts[i][j] / peak > 0.55 else INK}">{esc(count)}</td>'
            for j, count in enumerate(row)
        )
        rows.append(f"<tr><th>actual<br>{esc(labels[i])}</th>{cells}</tr>")
    head = "".join(f"<th>predicted<br>{esc(label)}</th>" for label in labels[: len(matrix)])
    return card(
        title,
        f'<p class="muted">Model {esc(confusion.version or "—")}: rows are the actual '
        f"label, columns the predicted one; green cells are right. Accuracy "
        f"{fmt(correct / total if total else None, '.1%')} on {total:,.0f} rows.</p>"
        f'<table id="confusion-matrix"><thead><tr><th></th>{head}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table>",
    )


def _quality_card(quality: ModelQuality | None) -> str:
    title = "How the model decides"
    if quality is None:
        return card(title, empty="No scored production model yet.")
    figures = "".join(
        f'<tr><th>{esc(name)}</th>{_NUM}<span data-metric="{esc(name)}">{fmt(value)}</span>'
        "</td></tr>"
        for name, value in quality.metrics.items()
    )
    curve = "".join(
        f"<tr>{_NUM}{fmt(p['low'], '.1f')}–{fmt(p['high'], '.1f')}</td>{_NUM}{fmt(p['rows'], ',')}"
        f"</td>{_NUM}{fmt(p['predicted'], '.3f')}</td>{_NUM}{fmt(p['observed'], '.3f')}</td></tr>"
        for p in quality.reliability
    )
    chosen = "".join(f"<li>{esc(line.strip())}</li>" for line in quality.chosen)
    return card(
        title,
        f'<p class="muted">Model {esc(quality.version)} predicts class '
        f"<strong>{esc(quality.positive)}</strong> (leaves) above the "
        f'threshold <strong id="threshold">{fmt(quality.threshold, ".3f")}</strong>, chosen on '
        "the training data; the figures are on the test data.</p>"
        f'<ul id="tuning">{chosen}</ul><table id="quality">{figures}</table>'
        '<table id="reliability"><thead><tr><th>probability</th><th>rows</th><th>predicted'
        f"</th><th>observed</th></tr></thead><tbody>{curve}</tbody></table>",
    )


def _no_live(note: str | None) -> str:
    sentence = note or "Live monitoring is off (live.enabled is false in config.json)."
    return card(LIVE_TITLE, empty=sentence, wide=True)


def _banner(data: DashboardData) -> str:
    production, drift, runs = data.production, data.drift, data.runs
    verdict = ("grey", "no check yet")
    if drift is not None and drift.verdict == "not tested":
        verdict = ("grey", "drift not tested")
    elif drift is not None and drift.dataset_drift:
        verdict = ("red", f"dataset drift · {fmt(drift.drift_share, '.0%')} of features")
    elif drift is not None:
        drifted = len(drift.drifted_features)
        verdict = ("amber", f"{drifted} features drifted") if drifted else ("green", "no drift")
    status = (runs[0].status or "unknown") if runs else ""
    latest = (_LEVELS.get(status, "grey"), f"#{runs[0].id} {status}") if runs else None
    since = production.since if production is not None else None
    shown = f"<small>since {time_tag(since)}</small>" if since else ""
    version = production.version if production is not None else "none"
    stats = [
        ("Production model", f'<span class="value">{esc(version)}</span>{shown}'),
        ("F1", f'<span class="value">{fmt(production.f1 if production else None)}</span>'),
        ("Data drift", badge(*verdict, "drift-status")),
        ("Model drift", badge(*model_drift_badge(data.timeline.model_drift), "model-drift-status")),
        ("Latest pass", badge(*(latest or ("grey", "no pass yet")), "run-status")),
    ]
    cells = "".join(f'<div class="stat"><span class="label">{k}</span>{v}</div>' for k, v in stats)
    return (
        f'<header class="banner"><div><h1>{esc(data.title or "Beryl")}</h1>'
        f'<p class="muted">Generated {time_tag(data.generated_at)} (times in UTC)</p></div>'
        f'<div class="stats">{cells}</div></header>'
    )


def _warnings(warnings: Sequence[str]) -> str:
    """Problems that stay visible until they are fixed, above everything else."""
    if not warnings:
        return ""
    items = "".join(f'<p class="warning" role="alert">{esc(w)}</p>' for w in warnings)
    return f'<section id="warnings">{items}</section>'


def render_dashboard(data: DashboardData) -> str:
    """The whole monitoring page: a status banner and one card per view, working offline."""
    timeline = data.timeline
    cards = [
        card("Last decision", decision_table(timeline.decision)),
        _versions_card(data.versions),
        _f1_card(data.scores, data.promotions),
        card("Model drift over time", model_drift_chart(timeline.model_drift)),
        f'<div class="card wide">{drift_section(data.drift)}</div>',
        card("Data drift per feature over time", drift_over_time(timeline.drifts), wide=True),
        live_card(data.live) if data.live is not None else _no_live(data.live_note),
        card("Input files not ingested as they are", files_table(timeline.files)),
        card("Dataset growth per batch", growth_chart(timeline.batches)),
        _missing_card(data.missing_percent),
        _runs_card(data.runs),
        _confusion_card(data.confusion_matrix),
        _quality_card(data.quality),
    ]
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        '<link rel="icon" href="data:,">'  # no favicon request: the page needs nothing else
        f"<title>{esc(data.title or 'Beryl')}</title><style>{_CSS}</style></head>"
        f"<body><main>{_banner(data)}{_warnings(data.warnings)}"
        f'<div class="grid">{"".join(cards)}</div></main></body>'
        "</html>\n"
    )
