"""The dashboard in a real browser: Debian's Chromium driven by Playwright over real HTTP.

`make test` installs Chromium from Debian's packages; no browser is ever downloaded. The
screenshot is kept as a test artifact in test-artifacts/dashboard.png.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.test_api import make_two_pass_workspace, serving

from beryl.config import Settings
from beryl.history import History
from beryl.registry import Registry

ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

if CHROMIUM is None:
    if os.environ.get("CI"):
        pytest.fail("Chromium is missing in CI: `make test` installs Debian's chromium")
    pytest.skip("Chromium is not installed (make test installs it)", allow_module_level=True)


@pytest.fixture(scope="module")
def workspace_with_two_passes(tmp_path_factory: pytest.TempPathFactory) -> tuple[Settings, Path]:
    return make_two_pass_workspace(tmp_path_factory.mktemp("browser") / "ws", seed=31)


@pytest.fixture(scope="module")
def page_url(workspace_with_two_passes: tuple[Settings, Path]) -> Iterator[str]:
    with serving(workspace_with_two_passes[1]) as base:
        yield f"{base}/dashboard"


def test_dashboard_loads_cleanly_and_charts_hold_the_workspace_data(
    page_url: str, workspace_with_two_passes: tuple[Settings, Path]
) -> None:
    from playwright.sync_api import sync_playwright

    settings, _ = workspace_with_two_passes
    history = History(settings.history_db)
    registry = Registry(settings.model_folder)
    problems: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: problems.append(str(e)))
            page.on("requestfailed", lambda r: problems.append(f"request failed: {r.url}"))
            response = page.goto(page_url, wait_until="load")
            assert response is not None and response.status == 200

            # F1 over time: one point per candidate/production score, with its exact value.
            scores = [s for s in history.scores() if s["role"] in ("candidate", "production")]
            points = page.locator("#f1-chart circle.f1-point")
            assert points.count() == len(scores)
            shown = sorted(
                float(points.nth(i).get_attribute("data-f1") or "nan")
                for i in range(points.count())
            )
            assert shown == pytest.approx(sorted(s["f1"] for s in scores))
            markers = page.locator("#f1-chart .promotion-marker")
            assert markers.count() == len(history.promotions())

            # Drift: one bar per feature, flagged as the history recorded it.
            drift = history.latest_drift()
            assert drift is not None
            for name, feature in drift["features"].items():
                bar = page.locator(f'#drift-chart rect.drift-bar[data-feature="{name}"]')
                assert bar.count() == 1
                assert bar.get_attribute("data-drifted") == str(feature["drifted"]).lower()

            # Versions table and the production banner.
            for card in registry.cards():
                assert page.locator(f'#versions tr[data-version="{card.id}"]').count() == 1
            production = registry.require_production()
            assert production in page.locator("body").inner_text()

            # Passes and the confusion matrix.
            passes = [r for r in history.runs(15) if r.command == "run"]
            assert page.locator("#runs-chart g.run-row").count() == len(passes)
            matrix = registry.card(production).metrics["confusion_matrix"]
            cells = page.locator("#confusion-matrix [data-count]")
            counts = [
                int(cells.nth(i).get_attribute("data-count") or -1) for i in range(cells.count())
            ]
            assert counts == [value for row in matrix for value in row]

            # It renders visibly: the charts have real size on screen.
            box = page.locator("#f1-chart").bounding_box()
            assert box is not None and box["width"] > 200 and box["height"] > 100
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)
        finally:
            browser.close()
    assert problems == [], problems
    assert (ARTIFACTS / "dashboard.png").stat().st_size > 20_000
