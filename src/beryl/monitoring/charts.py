"""The drawing pieces of the dashboard and the report: inline SVG bar charts with their axes,
and the HTML cards, badges, tables and legends around them, from plain numbers and text.

Every number a chart draws is kept in a ``data-*`` attribute (``num``: floats as ``repr``, ""
for no number); every text is HTML-escaped (``esc``).
"""

from __future__ import annotations

import html
import math
from collections.abc import Callable, Iterable, Mapping
from typing import NamedTuple, TypeGuard

FONT = 'font-family="system-ui,-apple-system,Segoe UI,sans-serif" font-size="13"'
GRID, AXIS, INK, MUTED = "#e5e7eb", "#9ca3af", "#1f2937", "#6b7280"
MIDDLE, END = f' text-anchor="middle" fill="{MUTED}"', f' text-anchor="end" fill="{MUTED}"'


class Segment(NamedTuple):
    """One coloured piece of a horizontal bar, with its machine-readable attributes."""

    value: object
    colour: str
    attrs: dict[str, str]
    tooltip: str


class Row(NamedTuple):
    """One labelled bar: its segments, the text after it and an optional threshold tick."""

    label: str
    segments: list[Segment]
    note: str
    attrs: dict[str, str]
    marker: float | None = None


def esc(value: object) -> str:
    return html.escape(str(value))


def is_number(value: object) -> TypeGuard[float]:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def num(value: object) -> str:
    return repr(float(value)) if is_number(value) else ""


def fmt(value: object, spec: str = ".4f") -> str:
    return format(value, spec) if is_number(value) else "—"


def attributes(attrs: Mapping[str, str]) -> str:
    return "".join(f' {key}="{esc(value)}"' for key, value in attrs.items())


def svg_line(x1: float, y1: float, x2: float, y2: float, colour: str, extra: str = "") -> str:
    return (
        f'<line x1="{x1:.1f}" y1="{y1:.1f}" x2="{x2:.1f}" y2="{y2:.1f}" stroke="{colour}"{extra}/>'
    )


def svg_text(x: float, y: float, body: str, extra: str = "") -> str:
    return f'<text x="{x:.1f}" y="{y:.1f}"{extra}>{esc(body)}</text>'


def svg_open(svg_id: str, width: int, height: int, label: str) -> str:
    style = f"display:block;width:100%;max-width:{width * 1.2:.0f}px;height:auto"
    return (
        f'<svg id="{svg_id}" viewBox="0 0 {width} {height}" style="{style}" role="img" '
        f'aria-label="{esc(label)}" {FONT} fill="{INK}">'
    )


def time_tag(value: object) -> str:
    """A timestamp shortened to the minute, the full value kept as a tooltip."""
    if not value:
        return "—"
    text = str(value)
    short = f"{text[:10]} {text[11:16]}" if len(text) >= 16 and text[10] == "T" else text
    return f'<time datetime="{esc(text)}" title="{esc(text)}">{esc(short)}</time>'


def fmt_seconds(value: object) -> str:
    return f"{value:.2f} s" if is_number(value) else "—"


def card(title: str, body: str = "", *, empty: str = "", wide: bool = False) -> str:
    """A titled card; ``empty`` is the sentence shown instead of a body when there is no data."""
    body = body or f'<p class="empty">{esc(empty)}</p>'
    return f'<section class="card{" wide" if wide else ""}"><h2>{esc(title)}</h2>{body}</section>'


def badge(level: str, text: str, badge_id: str = "") -> str:
    ident = f' id="{badge_id}" data-level="{level}"' if badge_id else ""
    return f'<span class="badge {level}"{ident}>{esc(text)}</span>'


def html_table(table_id: str, head: list[str], rows: Iterable[str], numeric: set[int]) -> str:
    """A scrolling table whose ``numeric`` columns (by index) are right-aligned."""
    cells = "".join(
        f"<th{' class=num' if i in numeric else ''}>{esc(h)}</th>" for i, h in enumerate(head)
    )
    return (
        f'<div class="scroll" id="{table_id}-box"><table id="{table_id}"><thead><tr>{cells}'
        f"</tr></thead><tbody>{''.join(rows)}</tbody></table></div>"
    )


def legend(items: Iterable[tuple[str, str]]) -> str:
    """A colour key with inline styles, so it also reads outside the dashboard's stylesheet."""
    swatch = "display:inline-block;width:.8em;height:.8em;border-radius:2px;margin-right:.35em"
    spans = "".join(
        f'<span style="margin-right:1.1em;white-space:nowrap">'
        f'<span style="{swatch};background:{colour}"></span>{esc(label)}</span>'
        for colour, label in items
    )
    return f'<div style="font-size:.82rem;color:{MUTED};margin:.3rem 0">{spans}</div>'


def _value(segment: Segment) -> float:
    return max(float(segment.value), 0.0) if is_number(segment.value) else 0.0


def nice_step(span: float, target: int) -> float:
    raw = max(span, 1e-12) / target
    magnitude = 10 ** math.floor(math.log10(raw))
    return float(next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw))


def ticks(low: float, high: float, step: float) -> list[float]:
    first, last = math.ceil(low / step - 1e-9), math.floor(high / step + 1e-9)
    return [k * step for k in range(first, last + 1)]


def bar_chart(
    ids: tuple[str, str, str], rows: list[Row], tick: Callable[[float], str], width: int = 640
) -> str:
    """Horizontal (stacked) bars from zero on one axis, with gridlines, tooltips, a note after each
    bar and an optional per-row tick. ``ids`` names the chart, the row groups and the bars."""
    svg_id, row_class, bar_class = ids
    left = 24 + 7 * min(24, max(len(r.label) for r in rows))
    right = 24 + 7 * min(20, max(len(r.note) for r in rows))
    top, height, plot = 6, 28, width - left - right
    peak = max([sum(map(_value, r.segments)) for r in rows] + [r.marker or 0.0 for r in rows])
    step = nice_step(peak if peak > 0 else 1.0, 6)
    high = step * max(1, math.ceil(peak / step - 1e-9))
    bottom = top + height * len(rows)
    parts = [svg_open(svg_id, width, bottom + 22, svg_id.replace("-", " "))]
    for value in ticks(0.0, high, step):
        x = left + plot * value / high
        parts.append(
            svg_line(x, top, x, bottom, GRID) + svg_text(x, bottom + 17, tick(value), MIDDLE)
        )
    for i, row in enumerate(rows):
        y, name = top + i * height, row.label if len(row.label) <= 24 else row.label[:23] + "…"
        parts.append(
            f'<g class="{row_class}"{attributes(row.attrs)}>'
            f'<text x="{left - 8}" y="{y + 18}" text-anchor="end"><title>{esc(row.label)}</title>'
            f"{esc(name)}</text>"
        )
        x = float(left)
        for seg in row.segments:
            size = plot * _value(seg) / high
            parts.append(
                f'<rect class="{bar_class}"{attributes(seg.attrs)} x="{x:.2f}" y="{y + 5}" '
                f'width="{size:.2f}" height="{height - 10}" fill="{seg.colour}">'
                f"<title>{esc(seg.tooltip)}</title></rect>"
            )
            x += size
        if row.marker is not None:
            mark = left + plot * row.marker / high
            extra = f' stroke-width="2.5" class="{row_class.removesuffix("-row")}-threshold"'
            parts.append(svg_line(mark, y + 1, mark, y + height - 1, INK, extra))
            x = max(x, mark)
        parts.append(svg_text(x + 6, y + 18, row.note) + "</g>")
    return "".join(parts) + svg_line(left, top, left, bottom, AXIS) + "</svg>"
