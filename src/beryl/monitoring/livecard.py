"""The dashboard card of live monitoring, drawn from a ``LiveSummary`` with the chart pieces.

    html = live_card(live_summary(workspace))

Records by hour (each bar carries its hour, records, mean predicted risk and estimated F1 in
``data-*`` attributes), the histogram of predicted probabilities, the live drift verdict as a
badge (``id="live-drift-status"``, "not tested" with its reason) and the features it tested.
"""

from __future__ import annotations

from beryl.monitoring.charts import (
    Row,
    Segment,
    badge,
    bar_chart,
    card,
    esc,
    fmt,
    html_table,
    is_number,
    legend,
    num,
)
from beryl.monitoring.livereport import LiveHour, LiveSummary
from beryl.monitoring.results import DRIFTED, NOT_TESTED

TITLE = "Live traffic"
_RECORDS, _HIGH_RISK, _LOW_RISK = "#0d9488", "#dc2626", "#2563eb"
_NUM = '<td class="num">'


def live_card(summary: LiveSummary | None) -> str:
    """The card: figures of the window, records and risk by hour, the probability histogram
    and live drift; ``None`` (live monitoring unreadable) says so."""
    if summary is None:
        return card(TITLE, empty="Live monitoring could not be read.", wide=True)
    if summary.records == 0:
        sentence = (
            f"No prediction in the last {summary.window_hours} h: answers of POST /prediction "
            "and of beryl predict appear here."
        )
        body = f'{_status(summary)}<p class="empty">{esc(sentence)}</p>'
        return card(TITLE, body, wide=True)
    parts = [
        _status(summary),
        _figures(summary),
        _hours_chart(summary.hours),
        legend([(_RECORDS, "records per hour (after each bar: mean risk · estimated F1)")]),
        _histogram(summary),
        _drift_table(summary),
    ]
    return card(TITLE, "".join(parts), wide=True)


def _status(summary: LiveSummary) -> str:
    drift = summary.drift
    if summary.drift_verdict == NOT_TESTED or drift is None:
        level, text = "grey", "live drift not tested"
    elif summary.drift_verdict == DRIFTED:
        level, text = "red", f"live drift · {fmt(drift.drift_share, '.0%')} of features"
    else:
        drifted = len(drift.drifted_features)
        level, text = ("amber", f"{drifted} features drifted") if drifted else ("green", "no drift")
    version = summary.production_version
    against = f"inputs against {version}'s training data" if version else "no production model"
    why = f'<p class="muted" id="live-drift-note">{esc(summary.drift_note)}</p>'
    return (
        f"<p>{badge(level, text, 'live-drift-status')} "
        f'<span data-verdict="{esc(summary.drift_verdict)}">{esc(against)}</span></p>'
        + (why if summary.drift_note else "")
    )


def _figures(summary: LiveSummary) -> str:
    drift = summary.drift
    attrs = {
        "data-records": str(summary.records),
        "data-predicted-positive": str(summary.predicted_positive),
        "data-mean-risk": num(summary.mean_risk),
        "data-estimated-f1": num(summary.estimated_f1),
        "data-drift-share": num(None if drift is None else drift.drift_share),
        "data-sampled": str(summary.sampled),
    }
    versions = ", ".join(f"{v}: {fmt(n, ',')}" for v, n in summary.versions.items())
    risk = fmt(summary.mean_risk, ".3f") if summary.mean_risk is not None else "not tested"
    f1 = fmt(summary.estimated_f1, ".3f") if summary.estimated_f1 is not None else "not tested"
    rows = [
        ("Records", f"{fmt(summary.records, ',')} ({esc(versions)})"),
        ("Predicted positive", fmt(summary.predicted_positive, ",")),
        ("Mean predicted risk", esc(risk) + _why(summary.risk_note)),
        ("Estimated F1", esc(f1) + _why(summary.f1_note)),
        ("Sampled inputs compared", fmt(summary.sampled, ",")),
    ]
    cells = "".join(f"<tr><th>{esc(k)}</th>{_NUM}{v}</td></tr>" for k, v in rows)
    label = f"Last {summary.window_hours} h, {summary.first_hour} to {summary.last_hour} UTC"
    attributes = "".join(f' {k}="{esc(v)}"' for k, v in attrs.items())
    return (
        f'<p class="muted">{esc(label)}, every worker and beryl predict.</p>'
        f'<table id="live-figures"{attributes}>{cells}</table>'
    )


def _why(note: str | None) -> str:
    return f"<br><small>{esc(note)}</small>" if note else ""


def _hours_chart(hours: tuple[LiveHour, ...]) -> str:
    """Records by hour, from the first hour with records to the current one."""
    first = next((i for i, h in enumerate(hours) if h.records), len(hours) - 1)
    rows = []
    for hour in hours[first:]:
        attrs = {
            "data-hour": hour.hour,
            "data-records": str(hour.records),
            "data-mean-risk": num(hour.mean_risk),
            "data-estimated-f1": num(hour.estimated_f1),
        }
        tip = (
            f"{hour.hour}:00 UTC: {hour.records:,} records, mean risk "
            f"{fmt(hour.mean_risk, '.3f')}, estimated F1 {fmt(hour.estimated_f1, '.3f')}"
        )
        note = f"{fmt(hour.mean_risk, '.2f')} · {fmt(hour.estimated_f1, '.2f')}"
        label = f"{hour.hour[5:10]} {hour.hour[11:13]}:00"
        segment = Segment(hour.records, _RECORDS, attrs, tip)
        rows.append(Row(label, [segment], note, {"data-hour": hour.hour}))
    return bar_chart(("live-chart", "live-row", "live-bar"), rows, "{:g}".format)


def _histogram(summary: LiveSummary) -> str:
    """Records by predicted probability of the positive label, in bins of 0.1."""
    bins = len(summary.histogram)
    total = sum(summary.histogram) or 1
    rows = []
    for i, count in enumerate(summary.histogram):
        low, high = i / bins, (i + 1) / bins
        colour = _HIGH_RISK if low >= 0.5 else _LOW_RISK
        attrs = {"data-bin": str(i), "data-low": num(low), "data-count": str(count)}
        tip = f"p in [{low:.1f}, {high:.1f}): {count:,} records"
        segment = Segment(count, colour, attrs, tip)
        rows.append(Row(f"{low:.1f}–{high:.1f}", [segment], f"{count / total:.0%}", {}))
    chart = bar_chart(("live-risk-chart", "live-risk-row", "live-risk-bar"), rows, "{:g}".format)
    key = legend([(_LOW_RISK, "p below 0.5"), (_HIGH_RISK, "p 0.5 or more")])
    return f"<h3>Predicted probabilities</h3>{chart}{key}"


def _drift_table(summary: LiveSummary) -> str:
    drift = summary.drift
    if drift is None or not drift.features:
        return ""
    body = []
    for name, info in drift.features.items():
        verdict = (
            '<strong style="color:#b91c1c">yes</strong>'
            if info.drifted
            else ("no" if info.tested else "not tested")
        )
        distance = info.distance
        shown = f"{fmt(distance, '.3f')} {info.distance_name}" if is_number(distance) else "—"
        body.append(
            f'<tr data-feature="{esc(name)}" data-distance="{num(distance)}" '
            f'data-drifted="{"true" if info.drifted else "false"}"><td>{esc(name)}</td>'
            f"<td>{esc(info.test)}</td>{_NUM}{fmt(info.p_value, '.2g')}</td>{_NUM}"
            f"{esc(shown)}</td>{_NUM}{fmt(info.threshold, 'g')}</td>"
            f'<td title="{esc(info.note or "")}">{verdict}</td></tr>'
        )
    head = ["Feature", "Test", "p-value", "Distance", "Threshold", "Drifted"]
    return "<h3>Live drift by feature</h3>" + html_table("live-drift-table", head, body, {2, 3, 4})
