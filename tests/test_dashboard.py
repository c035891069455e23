"""Tests for beryl.monitoring.dashboard: chart markup against the source data, empty states,
escaping, and a well-formed offline document."""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field
from html.parser import HTMLParser
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tests.dashboard_sample import build, empty, sample

from beryl.monitoring.dashboard import drift_section, render_dashboard
from beryl.monitoring.results import DriftResult

VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "wbr"}
RED = "#dc2626"


@dataclass
class Node:
    tag: str
    attrs: dict[str, str]
    parent: Node | None
    text: list[str] = field(default_factory=list)

    def has_class(self, name: str) -> bool:
        return name in self.attrs.get("class", "").split()

    def inside(self, tag: str | None = None, cls: str | None = None, id: str | None = None) -> bool:
        node = self.parent
        while node is not None:
            if node.matches(tag, cls, id):
                return True
            node = node.parent
        return False

    def matches(self, tag: str | None, cls: str | None, id: str | None) -> bool:
        return (
            (tag is None or self.tag == tag)
            and (cls is None or self.has_class(cls))
            and (id is None or self.attrs.get("id") == id)
        )


class Page(HTMLParser):
    """Every element with its attributes and parent, the visible text, and nesting errors."""

    def __init__(self, document: str) -> None:
        super().__init__(convert_charrefs=True)
        self.nodes: list[Node] = []
        self.stack: list[Node] = []
        self.errors: list[str] = []
        self.text: list[str] = []
        self.feed(document)
        self.close()
        self.errors += [f"<{node.tag}> never closed" for node in self.stack]

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        node = Node(tag, {k: v or "" for k, v in attrs}, self.stack[-1] if self.stack else None)
        self.nodes.append(node)
        if tag not in VOID:
            self.stack.append(node)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        parent = self.stack[-1] if self.stack else None
        self.nodes.append(Node(tag, {k: v or "" for k, v in attrs}, parent))

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack[-1].tag != tag:
            open_tag = self.stack[-1].tag if self.stack else "nothing"
            self.errors.append(f"</{tag}> closes <{open_tag}>")
            return
        self.stack.pop()

    def handle_data(self, data: str) -> None:
        self.text.append(data)
        if self.stack:
            self.stack[-1].text.append(data)

    def find(
        self, tag: str | None = None, cls: str | None = None, id: str | None = None
    ) -> list[Node]:
        return [n for n in self.nodes if n.matches(tag, cls, id)]

    def one(self, tag: str | None = None, cls: str | None = None, id: str | None = None) -> Node:
        found = self.find(tag, cls, id)
        assert len(found) == 1, (tag, cls, id, len(found))
        return found[0]

    @property
    def visible(self) -> str:
        return " ".join(" ".join(self.text).split())


def render(data: dict[str, Any]) -> str:
    return render_dashboard(build(data))


CHART_IDS = (
    "f1-chart",
    "drift-chart",
    "missing-chart",
    "runs-chart",
    "confusion-matrix",
    "versions",
)


@pytest.fixture
def page() -> Page:
    return Page(render(sample()))


def test_every_view_has_its_chart_once(page: Page) -> None:
    assert [page.one(id=i).tag for i in CHART_IDS] == ["svg"] * 4 + ["table"] * 2


def test_f1_points_are_the_candidate_and_production_scores_exactly(page: Page) -> None:
    expected = [
        (s["role"], s["version"], repr(float(s["f1"])))
        for s in sample()["scores"]
        if s["role"] in ("candidate", "production")
    ]
    points = page.find("circle", cls="f1-point")
    assert all(p.inside(id="f1-chart") for p in points)
    got = [(p.attrs["data-role"], p.attrs["data-version"], p.attrs["data-f1"]) for p in points]
    assert sorted(got) == sorted(expected)
    assert "0.30000000000000004" in {p.attrs["data-f1"] for p in points}


def test_scores_of_the_same_run_share_an_x_and_higher_f1_is_drawn_higher(page: Page) -> None:
    points = page.find("circle", cls="f1-point")
    by_version = {(p.attrs["data-role"], p.attrs["data-version"]): p.attrs for p in points}
    run2 = by_version["candidate", "v0002"], by_version["production", "v0001"]
    assert run2[0]["cx"] == run2[1]["cx"]
    assert float(run2[0]["cy"]) < float(run2[1]["cy"])  # 0.8379 above 0.8253
    assert float(by_version["candidate", "v0001"]["cx"]) < float(run2[0]["cx"])


def test_promotion_markers_match_promotions(page: Page) -> None:
    markers = page.find(cls="promotion-marker")
    assert all(m.inside(id="f1-chart") for m in markers)
    assert [m.attrs["data-version"] for m in markers] == ["v0001", "v0002", "v0001"]
    assert [m.attrs["data-action"] for m in markers] == ["promote", "promote", "rollback"]
    # each marker stands on the pass it happened in: the rollback came after run 3
    candidates = [p for p in page.find(cls="f1-point") if p.attrs["data-role"] == "candidate"]
    x_of = {p.attrs["data-version"]: float(p.attrs["cx"]) for p in candidates}
    lines = [next(n for n in page.find("line") if n.parent is m) for m in markers]
    marker_x = [float(line.attrs["x1"]) for line in lines]
    assert marker_x[:2] == pytest.approx([x_of["v0001"], x_of["v0002"]], abs=0.1)
    assert marker_x[2] == pytest.approx(x_of["v0003"], abs=0.1)


def test_drift_bars_carry_distance_and_flag_and_drifted_ones_are_red(page: Page) -> None:
    features = sample()["drift"]["features"]
    bars = {b.attrs["data-feature"]: b for b in page.find("rect", cls="drift-bar")}
    assert list(bars) == list(features)
    for name, info in features.items():
        bar = bars[name]
        assert bar.inside(id="drift-chart")
        assert bar.attrs["data-drifted"] == ("true" if info["drifted"] else "false")
        expected = "" if info["distance"] is None else repr(float(info["distance"]))
        assert bar.attrs["data-distance"] == expected
        assert (bar.attrs["fill"] == RED) == info["drifted"]


def test_threshold_line_is_drawn_for_each_tested_feature_where_the_scale_puts_it(
    page: Page,
) -> None:
    lines = page.find("line", cls="drift-threshold")
    assert len(lines) == 3  # "tiny" was not tested, so has no threshold
    assert len({line.attrs["x1"] for line in lines}) == 1  # all thresholds are 0.1
    bars = {b.attrs["data-feature"]: b.attrs for b in page.find("rect", cls="drift-bar")}
    threshold_x = float(lines[0].attrs["x1"])
    for name, bar in bars.items():
        end = float(bar["x"]) + float(bar["width"])
        assert (end > threshold_x) == (name in ("lastmonth_activity", "corporation"))


def test_missing_bars_match_the_percentages_and_grow_with_them(page: Page) -> None:
    missing = sample()["missing_percent"]
    bars = page.find("rect", cls="missing-bar")
    assert all(b.inside(id="missing-chart") for b in bars)
    assert {b.attrs["data-column"]: b.attrs["data-percent"] for b in bars} == {
        k: repr(float(v)) for k, v in missing.items()
    }
    widths = [
        float(b.attrs["width"]) for b in sorted(bars, key=lambda b: float(b.attrs["data-percent"]))
    ]
    assert widths == sorted(widths) and widths[0] == 0.0 and widths[-1] > 0


def test_run_rows_hold_their_own_step_bars(page: Page) -> None:
    runs = sample()["runs"]
    rows = page.find("g", cls="run-row")
    assert [r.attrs["data-run"] for r in rows] == [str(r["id"]) for r in runs]
    for row, run in zip(rows, runs, strict=True):
        assert row.inside(id="runs-chart")
        bars = [n for n in page.find("rect", cls="step-bar") if n.parent is row]
        expected = [
            (s["name"], "" if s["duration_s"] is None else repr(float(s["duration_s"])))
            for s in run["steps"]
        ]
        assert [(b.attrs["data-step"], b.attrs["data-seconds"]) for b in bars] == expected
    same_step = {
        b.attrs["fill"]
        for b in page.find("rect", cls="step-bar")
        if b.attrs["data-step"] == "ingest"
    }
    assert len(same_step) == 1  # one colour per step name across runs


def test_runs_are_capped_at_the_fifteen_newest() -> None:
    data = sample()
    data["runs"] = [dict(data["runs"][0], id=i) for i in range(40, 20, -1)]
    rows = Page(render(data)).find("g", cls="run-row")
    assert [r.attrs["data-run"] for r in rows] == [str(i) for i in range(40, 25, -1)]


def test_run_status_and_summary_are_listed(page: Page) -> None:
    table_rows = {r.attrs["data-run"]: r for r in page.find("tr") if "data-run" in r.attrs}
    assert list(table_rows) == ["5", "4", "3"]
    badges = [n for n in page.find("span", cls="badge") if n.inside(id="runs")]
    assert [(b.text[0], b.attrs["class"]) for b in badges] == [
        ("ok", "badge green"),
        ("failed", "badge red"),
        ("partial", "badge amber"),
    ]
    assert "schema error" in page.visible


def test_confusion_matrix_cells_hold_the_counts(page: Page) -> None:
    cells = [n for n in page.find("td") if n.inside(id="confusion-matrix")]
    assert [c.attrs["data-count"] for c in cells] == ["249", "92", "57", "352"]
    assert [c.text[0] for c in cells] == ["249", "92", "57", "352"]


def test_versions_table_has_one_row_per_version_and_marks_production(page: Page) -> None:
    rows = [n for n in page.find("tr") if n.inside(id="versions") and "data-version" in n.attrs]
    assert sorted(r.attrs["data-version"] for r in rows) == ["v0001", "v0002", "v0003"]
    assert [r.attrs["data-version"] for r in rows if r.has_class("current")] == ["v0002"]


@pytest.mark.parametrize(
    ("dataset_drift", "drifted", "level"),
    [(True, ["corporation"], "red"), (False, ["corporation"], "amber"), (False, [], "green")],
)
def test_drift_badge_is_red_amber_or_green(
    dataset_drift: bool, drifted: list[str], level: str
) -> None:
    data = sample()
    data["drift"].update(dataset_drift=dataset_drift, drifted_features=drifted)
    assert Page(render(data)).one(id="drift-status").attrs["data-level"] == level


@pytest.mark.parametrize(
    ("status", "level"),
    [
        ("ok", "green"),
        ("partial", "amber"),
        ("running", "amber"),
        ("failed", "red"),
        ("odd", "grey"),
    ],
)
def test_run_badge_follows_the_latest_run(status: str, level: str) -> None:
    data = sample()
    data["runs"][0]["status"] = status
    badge = Page(render(data)).one(id="run-status")
    assert badge.attrs["data-level"] == level
    assert badge.text == [f"#5 {status}"]


def test_banner_shows_the_production_version_and_f1(page: Page) -> None:
    values = page.find("span", cls="value")
    assert all(v.inside("header") for v in values)
    assert [v.text for v in values] == [["v0002"], ["0.8379"]]


def test_empty_data_renders_every_empty_state_and_no_chart() -> None:
    document = render(empty())
    page = Page(document)
    assert page.errors == []
    for sentence in (
        "No model versions yet",
        "No scores yet",
        "No drift check yet: it runs when a new batch arrives after the first model.",
        "No data yet",
        "No passes yet",
        "No confusion matrix yet",
        "No scored production model yet",
        "No decision yet: the first pass that trains a model decides.",
        "No model-drift check yet",
        "No data-drift check yet: one runs on every new batch.",
        "Every input file so far was ingested.",
        "No data yet: each ingested batch appears here.",
        "Live monitoring is off (live.enabled is false in config.json).",
    ):
        assert sentence in page.visible
    for chart_id in CHART_IDS:
        assert page.find(id=chart_id) == []
    assert page.one(id="drift-status").attrs["data-level"] == "grey"
    assert page.one(id="run-status").attrs["data-level"] == "grey"
    assert page.one(id="model-drift-status").attrs["data-level"] == "grey"
    assert [v.text for v in page.find("span", cls="value")] == [["none"], ["—"]]
    assert len(page.find("section", cls="card")) + len(page.find("div", cls="card")) == 13


def test_missing_values_of_zero_everywhere_say_so() -> None:
    data = empty()
    data["missing_percent"] = {"a": 0.0, "b": 0}
    page = Page(render(data))
    assert len(page.find("rect", cls="missing-bar")) == 2
    assert "No column has missing values." in page.visible


def test_text_from_data_is_escaped() -> None:
    data = sample()
    data["versions"][0]["id"] = 'v"1<'
    data["drift"]["features"]['<img src=x onerror="alert(1)">'] = data["drift"]["features"]["tiny"]
    document = render(data)
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in document
    assert "<script" not in document.lower()
    assert "<img" not in document
    assert "&lt;better&gt;" in document and "/tmp/&lt;ws&gt;" in document
    page = Page(document)
    assert page.errors == []
    assert 'v"1<' in {n.attrs.get("data-version") for n in page.find("tr")}
    assert '<img src=x onerror="alert(1)">' in {
        n.attrs["data-feature"] for n in page.find("rect", cls="drift-bar")
    }
    assert "promoted: <script>alert(1)</script>" in page.visible


def test_page_needs_nothing_from_the_network() -> None:
    for document in (render(sample()), render(empty())):
        assert "http://" not in document and "https://" not in document
        assert "<script" not in document and "@import" not in document
        links = re.findall(r"<link[^>]*>", document)
        assert links == ['<link rel="icon" href="data:,">']  # an inline, empty favicon


@pytest.mark.parametrize("data", [sample(), empty()], ids=["sample", "empty"])
def test_document_parses_and_every_tag_is_closed(data: dict[str, Any]) -> None:
    document = render(data)
    assert document.startswith("<!DOCTYPE html>")
    page = Page(document)
    assert page.errors == []
    assert page.nodes[0].tag == "html" and page.one("main").inside("body")
    assert page.find("title")[0].inside("head")


def test_unbalanced_markup_is_caught_by_the_checker() -> None:
    assert Page("<svg><g></svg>").errors == [
        "</svg> closes <g>",
        "<svg> never closed",
        "<g> never closed",
    ]
    assert Page("<table><tr><td>1</td></tr></table>").errors == []


def test_drift_section_alone_is_a_fragment_with_the_chart() -> None:
    fragment = drift_section(DriftResult.from_dict(sample()["drift"]))
    page = Page(fragment)
    assert page.errors == [] and "<html" not in fragment and "<style" not in fragment
    assert page.one("h2").text == ["Latest data drift"]
    page.one("svg", id="drift-chart")
    assert len(page.find("rect", cls="drift-bar")) == 4
    assert len([n for n in page.find("tr") if n.inside(id="drift-table")]) == 5  # head + 4
    assert "9.2e-19" in page.visible


def test_drift_section_without_a_check_explains_why() -> None:
    for drift in (None, dict(copy.deepcopy(sample()["drift"]), features={})):
        page = Page(drift_section(None if drift is None else DriftResult.from_dict(drift)))
        assert page.find(id="drift-chart") == []
        assert "No drift check yet" in page.visible


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(["candidate", "production", "drift-check"]), st.floats(0, 1)),
        max_size=40,
    ),
    st.booleans(),
)
def test_every_f1_point_lies_inside_the_plot_area(
    scores: list[tuple[str, float]], runs: bool
) -> None:
    data = empty()
    data["scores"] = [
        {
            "time": f"t{i:03d}",
            "version": f"v{i}",
            "role": role,
            "f1": f1,
            "run_id": i // 2 if runs else None,
        }
        for i, (role, f1) in enumerate(scores)
    ]
    page = Page(render(data))
    assert page.errors == []
    plotted = [f1 for role, f1 in scores if role != "drift-check"]
    points = page.find("circle", cls="f1-point")
    assert len(points) == len(plotted)
    if not plotted:
        assert page.find(id="f1-chart") == []
        return
    area = page.one("rect", cls="plot-area").attrs
    left, top = float(area["x"]), float(area["y"])
    right, bottom = left + float(area["width"]), top + float(area["height"])
    assert sorted(p.attrs["data-f1"] for p in points) == sorted(map(repr, plotted))
    for point in points:
        assert left <= float(point.attrs["cx"]) <= right
        assert top <= float(point.attrs["cy"]) <= bottom
    heights = sorted((float(p.attrs["data-f1"]), -float(p.attrs["cy"])) for p in points)
    assert [h for _, h in heights] == sorted(h for _, h in heights)
