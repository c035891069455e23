"""Render the monitoring dashboard as one offline HTML page with inline SVG charts, from plain data.

Every chart carries its numbers in ``data-*`` attributes (floats as ``repr``, "" for no number) so a
browser test can check the picture against the source; every text from the data is HTML-escaped.

    page = render_dashboard(data)            # the whole document, served at GET /dashboard
    fragment = drift_section(data["drift"])  # heading, chart and table, reused by the HTML report
"""

from __future__ import annotations

import html
import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any, NamedTuple, TypeGuard

_MAX_RUNS, _MAX_PROMOTIONS = 15, 8
_FONT = 'font-family="system-ui,-apple-system,Segoe UI,sans-serif" font-size="13"'
_GRID, _AXIS, _INK, _MUTED = "#e5e7eb", "#9ca3af", "#1f2937", "#6b7280"
_MIDDLE, _END = f' text-anchor="middle" fill="{_MUTED}"', f' text-anchor="end" fill="{_MUTED}"'
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


class _Segment(NamedTuple):
    """One coloured piece of a horizontal bar, with its machine-readable attributes."""

    value: object
    colour: str
    attrs: dict[str, str]
    tooltip: str


class _Row(NamedTuple):
    """One labelled bar: its segments, the text after it and an optional threshold tick."""

    label: str
    segments: list[_Segment]
    note: str
    attrs: dict[str, str]
    marker: float | None = None


def _esc(value: object) -> str:
    return html.escape(str(value))


def _is_number(value: object) -> TypeGuard[float]:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _num(value: object) -> str:
    return repr(float(value)) if _is_number(value) else ""


def _fmt(value: object, spec: str = ".4f") -> str:
    return format(value, spec) if _is_number(value) else "—"


def _attrs(attrs: Mapping[str, str]) -> str:
    return "".join(f' {key}="{_esc(value)}"' for key, value in attrs.items())


def _line(x1: float, y1: float, x2: float, y2: float, colour: str, extra: str = "") -> str:
    return (
        f'<line x1="{x1:.1f}" y1="{y1:.1f}" x2="{x2:.1f}" y2="{y2:.1f}" stroke="{colour}"{extra}/>'
    )


def _text(x: float, y: float, body: str, extra: str = "") -> str:
    return f'<text x="{x:.1f}" y="{y:.1f}"{extra}>{_esc(body)}</text>'


def _svg(svg_id: str, width: int, height: int, label: str) -> str:
    style = f"display:block;width:100%;max-width:{width * 1.2:.0f}px;height:auto"
    return (
        f'<svg id="{svg_id}" viewBox="0 0 {width} {height}" style="{style}" role="img" '
        f'aria-label="{_esc(label)}" {_FONT} fill="{_INK}">'
    )


def _when(value: object) -> str:
    """A timestamp shortened to the minute, the full value kept as a tooltip."""
    if not value:
        return "—"
    text = str(value)
    short = f"{text[:10]} {text[11:16]}" if len(text) >= 16 and text[10] == "T" else text
    return f'<time datetime="{_esc(text)}" title="{_esc(text)}">{_esc(short)}</time>'


def _seconds(value: object) -> str:
    return f"{value:.2f} s" if _is_number(value) else "—"


def _card(title: str, body: str = "", *, empty: str = "", wide: bool = False) -> str:
    """A titled card; ``empty`` is the sentence shown instead of a body when there is no data."""
    body = body or f'<p class="empty">{_esc(empty)}</p>'
    return f'<section class="card{" wide" if wide else ""}"><h2>{_esc(title)}</h2>{body}</section>'


def _badge(level: str, text: str, badge_id: str = "") -> str:
    ident = f' id="{badge_id}" data-level="{level}"' if badge_id else ""
    return f'<span class="badge {level}"{ident}>{_esc(text)}</span>'


def _table(table_id: str, head: list[str], rows: Iterable[str], numeric: set[int]) -> str:
    """A scrolling table whose ``numeric`` columns (by index) are right-aligned."""
    cells = "".join(
        f"<th{' class=num' if i in numeric else ''}>{_esc(h)}</th>" for i, h in enumerate(head)
    )
    return (
        f'<div class="scroll" id="{table_id}-box"><table id="{table_id}"><thead><tr>{cells}'
        f"</tr></thead><tbody>{''.join(rows)}</tbody></table></div>"
    )


def _legend(items: Iterable[tuple[str, str]]) -> str:
    """A colour key with inline styles, so it also reads outside the dashboard's stylesheet."""
    swatch = "display:inline-block;width:.8em;height:.8em;border-radius:2px;margin-right:.35em"
    spans = "".join(
        f'<span style="margin-right:1.1em;white-space:nowrap">'
        f'<span style="{swatch};background:{colour}"></span>{_esc(label)}</span>'
        for colour, label in items
    )
    return f'<div style="font-size:.82rem;color:{_MUTED};margin:.3rem 0">{spans}</div>'


def _value(segment: _Segment) -> float:
    return max(float(segment.value), 0.0) if _is_number(segment.value) else 0.0


def _nice_step(span: float, target: int) -> float:
    raw = max(span, 1e-12) / target
    magnitude = 10 ** math.floor(math.log10(raw))
    return float(next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw))


def _ticks(low: float, high: float, step: float) -> list[float]:
    first, last = math.ceil(low / step - 1e-9), math.floor(high / step + 1e-9)
    return [k * step for k in range(first, last + 1)]


def _bar_chart(
    ids: tuple[str, str, str], rows: list[_Row], tick: Callable[[float], str], width: int = 640
) -> str:
    """Horizontal (stacked) bars from zero on one axis, with gridlines, tooltips, a note after each
    bar and an optional per-row tick. ``ids`` names the chart, the row groups and the bars."""
    svg_id, row_class, bar_class = ids
    left = 24 + 7 * min(24, max(len(r.label) for r in rows))
    right = 24 + 7 * min(20, max(len(r.note) for r in rows))
    top, height, plot = 6, 28, width - left - right
    peak = max([sum(map(_value, r.segments)) for r in rows] + [r.marker or 0.0 for r in rows])
    step = _nice_step(peak if peak > 0 else 1.0, 6)
    high = step * max(1, math.ceil(peak / step - 1e-9))
    bottom = top + height * len(rows)
    parts = [_svg(svg_id, width, bottom + 22, svg_id.replace("-", " "))]
    for value in _ticks(0.0, high, step):
        x = left + plot * value / high
        parts.append(_line(x, top, x, bottom, _GRID) + _text(x, bottom + 17, tick(value), _MIDDLE))
    for i, row in enumerate(rows):
        y, name = top + i * height, row.label if len(row.label) <= 24 else row.label[:23] + "…"
        parts.append(
            f'<g class="{row_class}"{_attrs(row.attrs)}>'
            f'<text x="{left - 8}" y="{y + 18}" text-anchor="end"><title>{_esc(row.label)}</title>'
            f"{_esc(name)}</text>"
        )
        x = float(left)
        for seg in row.segments:
            size = plot * _value(seg) / high
            parts.append(
                f'<rect class="{bar_class}"{_attrs(seg.attrs)} x="{x:.2f}" y="{y + 5}" '
                f'width="{size:.2f}" height="{height - 10}" fill="{seg.colour}">'
                f"<title>{_esc(seg.tooltip)}</title></rect>"
            )
            x += size
        if row.marker is not None:
            mark = left + plot * row.marker / high
            extra = f' stroke-width="2.5" class="{row_class.removesuffix("-row")}-threshold"'
            parts.append(_line(mark, y + 1, mark, y + height - 1, _INK, extra))
            x = max(x, mark)
        parts.append(_text(x + 6, y + 18, row.note) + "</g>")
    return "".join(parts) + _line(left, top, left, bottom, _AXIS) + "</svg>"


def _f1_scale(values: list[float]) -> tuple[float, float, float]:
    """A padded F1 axis (inside 0..1 when the values are) ending on round ticks: low, high, step."""
    least, most = min(values), max(values)
    pad = max((most - least) * 0.15, 0.02)
    low = max(0.0, least - pad) if least >= 0 else least - pad
    high = min(1.0, most + pad) if most <= 1 else most + pad
    step = _nice_step(high - low, 5)
    return min(math.floor(low / step) * step, least), max(math.ceil(high / step) * step, most), step


def _move(promo: Mapping[str, Any]) -> str:
    return (
        f"{promo.get('action') or 'promote'} {promo.get('from_version') or '—'} → "
        f"{promo.get('to_version') or '?'} (F1 {_fmt(promo.get('from_f1'))} → "
        f"{_fmt(promo.get('to_f1'))})"
    )


def _f1_chart(scores: list[dict[str, Any]], promotions: list[dict[str, Any]]) -> str:
    """Candidate and production F1 by pass, with promotions and rollbacks as labelled markers."""
    roles = ("candidate", "production")
    points = [s for s in scores if s.get("role") in roles and _is_number(s.get("f1"))]
    keys = [p.get("run_id") or f"#{i}" for i, p in enumerate(points)]
    slots = {key: i for i, key in enumerate(dict.fromkeys(keys))}  # one x per pass, in order
    first_time = [str(points[keys.index(key)].get("time") or "") for key in slots]
    count, (left, right, top, bottom) = max(len(slots), 1), (52, 628, 26, 258)
    low, high, step = _f1_scale([float(p["f1"]) for p in points] or [0.5])
    decimals = max(0, math.ceil(-math.log10(step) - 1e-9))

    def x_of(slot: int) -> float:
        return left + (slot + 0.5) * (right - left) / count

    def y_of(value: float) -> float:
        return bottom - (value - low) / (high - low) * (bottom - top)

    parts = [
        _svg("f1-chart", 640, 300, "F1 over time"),
        f'<rect class="plot-area" x="{left}" y="{top}" width="{right - left}" '
        f'height="{bottom - top}" fill="#fafbfc"/>',
    ]
    for value in _ticks(low, high, step):
        parts.append(_line(left, y_of(value), right, y_of(value), _GRID))
        parts.append(_text(left - 6, y_of(value) + 4, f"{value:.{decimals}f}", _END))
    every = math.ceil(count / 14)
    for key, slot in slots.items():
        label = f"#{key}" if isinstance(key, int) else str(slot + 1)
        parts.append(_text(x_of(slot), bottom + 17, label, _MIDDLE) if slot % every == 0 else "")
    parts.append(
        _line(left, bottom, right, bottom, _AXIS)
        + _line(left, top, left, bottom, _AXIS)
        + _text((left + right) / 2, bottom + 36, "pass (run id)", _MIDDLE)
    )
    for k, promo in enumerate(promotions):
        when, action = str(promo.get("time") or ""), str(promo.get("action") or "promote")
        slot = max([i for i, t in enumerate(first_time) if t <= when] or [0])
        colour = _ROLLBACK if action == "rollback" else _PROMOTE
        x, version = x_of(slot), str(promo.get("to_version") or "?")
        tip = f"{when}: {_move(promo)}\n{promo.get('reason') or ''}"
        anchor = ' text-anchor="end"' if x > right - 60 else ""
        label = f'{anchor} fill="{colour}" font-weight="600" font-size="11"'
        parts.append(
            f'<g class="promotion-marker" data-version="{_esc(version)}" '
            f'data-action="{_esc(action)}"><title>{_esc(tip)}</title>'
            + _line(x, top, x, bottom, colour, ' stroke-dasharray="3 3" stroke-opacity=".6"')
            + f'<path d="M{x - 6:.1f} {top - 9} h12 l-6 9 z" fill="{colour}"/>'
            + _text(x + (-5 if anchor else 5), top + 13 + 13 * (k % 3), version, label)
            + "</g>"
        )
    for role, colour in zip(roles, (_CANDIDATE, _PRODUCTION), strict=True):
        mine = [(slots[key], p) for key, p in zip(keys, points, strict=True) if p["role"] == role]
        path = " ".join(f"{x_of(s):.1f},{y_of(float(p['f1'])):.1f}" for s, p in mine)
        line = f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="2"/>'
        parts.append(line if len(mine) > 1 else "")
        for slot, p in mine:
            f1, version = float(p["f1"]), _esc(p.get("version"))
            tip = f"{role} {p.get('version')}: F1 {f1:.4f} (run {p.get('run_id')})"
            parts.append(
                f'<circle class="f1-point" data-role="{role}" data-version="{version}" '
                f'data-f1="{_num(f1)}" cx="{x_of(slot):.2f}" cy="{y_of(f1):.2f}" r="4.5" '
                f'fill="{colour}" stroke="#fff" stroke-width="1.5"><title>{_esc(tip)}</title>'
                "</circle>"
            )
    return "".join(parts) + "</svg>"


def drift_section(drift: dict[str, Any] | None) -> str:
    """The latest data-drift result as a heading, a per-feature distance chart and a table."""
    heading = '<section class="drift-section"><h2>Latest data drift</h2>'
    features: dict[str, dict[str, Any]] = (drift or {}).get("features") or {}
    if not drift or not features:
        sentence = "No drift check yet: it runs when a new batch arrives after the first model."
        return f'{heading}<p class="empty">{sentence}</p></section>'
    reference, current = drift.get("reference") or {}, drift.get("current") or {}
    summary = (
        f"{sum(bool(f.get('drifted')) for f in features.values())} of {len(features)} features "
        f"drifted ({_fmt(drift.get('drift_share'), '.0%')}) in a batch of "
        f"{_fmt(current.get('rows'), ',')} rows, against {_fmt(reference.get('rows'), ',')} "
        f"rows the production model {reference.get('model_version') or ''} was trained on."
    )
    rows, body = [], []
    for name, info in features.items():
        distance, threshold, flag = info.get("distance"), info.get("threshold"), info.get("drifted")
        metric = str(info.get("distance_name") or "distance")
        shown = f"{_fmt(distance, '.3f')} {_SHORT.get(metric, metric)}"
        shown = shown if _is_number(distance) else "not tested"
        attrs = {"data-feature": name, "data-distance": _num(distance)}
        attrs["data-drifted"] = "true" if flag else "false"
        tip = f"{name}: {metric} {_fmt(distance)}, threshold {_fmt(threshold, 'g')}"
        bar = _Segment(distance, _DRIFTED if flag else _STABLE, attrs, tip)
        rows.append(_Row(name, [bar], shown, {}, threshold if _is_number(threshold) else None))
        verdict = '<strong style="color:#b91c1c">yes</strong>' if flag else "no"
        body.append(
            f"<tr><td>{_esc(name)}</td><td>{_esc(info.get('test') or '—')}</td>{_NUM}"
            f"{_fmt(info.get('statistic'), '.3f')}</td>{_NUM}{_fmt(info.get('p_value'), '.2g')}"
            f"</td>{_NUM}{_esc(shown)}</td>{_NUM}{_fmt(threshold, 'g')}</td><td title="
            f'"{_esc(info.get("note") or "")}">{verdict}</td></tr>'
        )
    chart = _bar_chart(("drift-chart", "drift-row", "drift-bar"), rows, "{:g}".format, 1100)
    key = _legend([(_DRIFTED, "drifted"), (_STABLE, "not drifted"), (_INK, "threshold")])
    head = ["Feature", "Test", "Statistic", "p-value", "Distance", "Threshold", "Drifted"]
    table = _table("drift-table", head, body, {2, 3, 4, 5})
    return f'{heading}<p class="muted">{_esc(summary)}</p>{chart}{key}{table}</section>'


def _versions_card(versions: list[dict[str, Any]]) -> str:
    title = "Current model and versions"
    if not versions:
        return _card(title, empty="No model versions yet: the first pass trains one.")
    rows = []
    for version in reversed(versions):
        f1, current = version.get("f1"), bool(version.get("production"))
        css, marker = ("current", _badge("green", "production")) if current else ("", "")
        rows.append(
            f'<tr data-version="{_esc(version.get("id"))}" class="{css}"><td><strong>'
            f"{_esc(version.get('id'))}</strong></td><td>{_when(version.get('created'))}</td>"
            f"{_NUM}{_fmt(version.get('rows'), ',')}</td>{_NUM}{_fmt(f1)}</td>"
            f"<td>{marker}</td></tr>"
        )
    head = ["Version", "Created", "Rows", "F1", ""]
    return _card(title, _table("versions", head, rows, {2, 3}))


def _f1_card(scores: list[dict[str, Any]], promotions: list[dict[str, Any]]) -> str:
    if not any(s.get("role") in ("candidate", "production") for s in scores) and not promotions:
        sentence = "No scores yet: candidate and production F1 appear after the first pass."
        return _card("F1 over time", empty=sentence)
    key = [(_CANDIDATE, "candidate"), (_PRODUCTION, "production")]
    key += [(_PROMOTE, "promotion ▼"), (_ROLLBACK, "rollback ▼")]
    moves = "".join(
        f"<li>{_when(p.get('time'))} · {_esc(_move(p))}<br><small>{_esc(p.get('reason') or '')}"
        "</small></li>"
        for p in reversed(promotions[-_MAX_PROMOTIONS:])
    )
    moves = f'<ul id="promotions">{moves}</ul>' if moves else ""
    return _card("F1 over time", _f1_chart(scores, promotions) + _legend(key) + moves)


def _missing_card(missing: dict[str, Any]) -> str:
    title = "Missing values per column"
    if not missing:
        return _card(title, empty="No data yet: missing values are counted after the first ingest.")
    rows = []
    for column, percent in missing.items():
        value = float(percent) if _is_number(percent) else 0.0
        colour = "#dc2626" if value >= 20 else "#d97706" if value >= 5 else "#0d9488"
        attrs = {"data-column": column, "data-percent": _num(percent)}
        segment = _Segment(value, colour, attrs, f"{column}: {value:.2f}% missing")
        rows.append(_Row(column, [segment], f"{value:.1f}%", {"data-column": column}))
    chart = _bar_chart(("missing-chart", "missing-row", "missing-bar"), rows, "{:g}%".format)
    key = _legend([("#0d9488", "under 5%"), ("#d97706", "5–20%"), ("#dc2626", "20% or more")])
    if not any(r.segments[0].value for r in rows):
        key += '<p class="empty">No column has missing values.</p>'
    return _card(title, chart + key)


def _runs_card(runs: list[dict[str, Any]]) -> str:
    if not runs:
        return _card("Recent passes", empty="No passes yet: each appears here with its timings.")
    colours: dict[str, str] = {}
    rows, body = [], []
    for run in runs[:_MAX_RUNS]:
        segments = []
        for step in run.get("steps") or []:
            name, seconds = str(step.get("name")), step.get("duration_s")
            colour = colours.setdefault(name, _STEP_COLOURS[len(colours) % len(_STEP_COLOURS)])
            attrs = {"data-step": name, "data-seconds": _num(seconds)}
            tip = f"{name}: {_seconds(seconds)} ({step.get('status') or '?'})"
            segments.append(_Segment(seconds, colour, attrs, tip))
        status, ident = str(run.get("status") or "unknown"), _esc(run.get("id"))
        label = f"#{run.get('id')} {run.get('command') or ''}".strip()
        note = f"{_seconds(run.get('duration_s'))} · {status}"
        rows.append(_Row(label, segments, note, {"data-run": str(run.get("id"))}))
        body.append(
            f'<tr data-run="{ident}">{_NUM}#{ident}</td><td>{_esc(run.get("command") or "—")}'
            f"</td><td>{_when(run.get('started'))}</td>{_NUM}{_seconds(run.get('duration_s'))}"
            f"</td><td>{_badge(_LEVELS.get(status, 'grey'), status)}</td>"
            f"<td>{_esc(run.get('summary') or '')}</td></tr>"
        )
    chart = _bar_chart(("runs-chart", "run-row", "step-bar"), rows, "{:g} s".format, width=1100)
    head = ["Run", "Command", "Started", "Duration", "Status", "Summary"]
    table = _table("runs", head, body, {0, 3})
    title = f"Recent passes (latest {len(rows)}, newest first)"
    return _card(title, chart + _legend((c, n) for n, c in colours.items()) + table, wide=True)


def _confusion_card(confusion: dict[str, Any] | None) -> str:
    title, matrix = "Confusion matrix", (confusion or {}).get("matrix") or []
    if not confusion or not matrix:
        return _card(title, empty="No confusion matrix yet: it is computed when a model is scored.")
    labels = [str(x) for x in confusion.get("labels") or []]
    labels += [str(i) for i in range(len(labels), len(matrix))]
    counts = [[float(v) if _is_number(v) else 0.0 for v in row] for row in matrix]
    peak, total = max([1.0, *(v for row in counts for v in row)]), sum(map(sum, counts))
    correct = sum(row[i] for i, row in enumerate(counts) if i < len(row))
    rows = []
    for i, row in enumerate(matrix):
        cells = "".join(
            f'<td data-count="{_esc(count)}" title="actual {_esc(labels[i])}, predicted '
            f'{_esc(labels[j])}" style="background:rgba({"15,118,110" if i == j else "220,38,38"},'
            f"{0.08 + 0.8 * counts[i][j] / peak:.2f});color:"
            f'{"#fff" if counts[i][j] / peak > 0.55 else _INK}">{_esc(count)}</td>'
            for j, count in enumerate(row)
        )
        rows.append(f"<tr><th>actual<br>{_esc(labels[i])}</th>{cells}</tr>")
    head = "".join(f"<th>predicted<br>{_esc(label)}</th>" for label in labels[: len(matrix)])
    return _card(
        title,
        f'<p class="muted">Model {_esc(confusion.get("version") or "—")}: rows are the actual '
        f"label, columns the predicted one; green cells are right. Accuracy "
        f"{_fmt(correct / total if total else None, '.1%')} on {total:,.0f} rows.</p>"
        f'<table id="confusion-matrix"><thead><tr><th></th>{head}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table>",
    )


def _banner(data: Mapping[str, Any]) -> str:
    production, drift, runs = data.get("production") or {}, data.get("drift"), data.get("runs")
    verdict = ("grey", "no check yet")
    if drift and drift.get("dataset_drift"):
        verdict = ("red", f"dataset drift · {_fmt(drift.get('drift_share'), '.0%')} of features")
    elif drift:
        drifted = len(drift.get("drifted_features") or [])
        verdict = ("amber", f"{drifted} features drifted") if drifted else ("green", "no drift")
    status = str(runs[0].get("status") or "unknown") if runs else ""
    latest = (_LEVELS.get(status, "grey"), f"#{runs[0].get('id')} {status}") if runs else None
    since = f"<small>since {_when(production['since'])}</small>" if production.get("since") else ""
    version = f'<span class="value">{_esc(production.get("version") or "none")}</span>'
    stats = [
        ("Production model", version + since),
        ("F1", f'<span class="value">{_fmt(production.get("f1"))}</span>'),
        ("Data drift", _badge(*verdict, "drift-status")),
        ("Latest pass", _badge(*(latest or ("grey", "no pass yet")), "run-status")),
    ]
    cells = "".join(f'<div class="stat"><span class="label">{k}</span>{v}</div>' for k, v in stats)
    return (
        f'<header class="banner"><div><h1>{_esc(data.get("title") or "Beryl")}</h1>'
        f'<p class="muted">Generated {_when(data.get("generated_at"))} (times in UTC)</p></div>'
        f'<div class="stats">{cells}</div></header>'
    )


def _warnings(warnings: list[str]) -> str:
    """Problems that stay visible until they are fixed, above everything else."""
    if not warnings:
        return ""
    items = "".join(f'<p class="warning" role="alert">{_esc(w)}</p>' for w in warnings)
    return f'<section id="warnings">{items}</section>'


def render_dashboard(data: dict[str, Any]) -> str:
    """The whole monitoring page: a status banner and one card per view, working offline."""
    cards = [
        _versions_card(data.get("versions") or []),
        _f1_card(data.get("scores") or [], data.get("promotions") or []),
        f'<div class="card wide">{drift_section(data.get("drift"))}</div>',
        _missing_card(data.get("missing_percent") or {}),
        _runs_card(data.get("runs") or []),
        _confusion_card(data.get("confusion_matrix")),
    ]
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        '<link rel="icon" href="data:,">'  # no favicon request: the page needs nothing else
        f"<title>{_esc(data.get('title') or 'Beryl')}</title><style>{_CSS}</style></head>"
        f"<body><main>{_banner(data)}{_warnings(data.get('warnings') or [])}"
        f'<div class="grid">{"".join(cards)}</div></main></body>'
        "</html>\n"
    )
