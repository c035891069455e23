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
from beryl.model.registry import Registry
from beryl.monitoring.history import History

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
            scores = [s for s in history.scores() if s.role in ("candidate", "production")]
            points = page.locator("#f1-chart circle.f1-point")
            assert points.count() == len(scores)
            shown = sorted(
                float(points.nth(i).get_attribute("data-f1") or "nan")
                for i in range(points.count())
            )
            assert shown == pytest.approx(sorted(s.f1 for s in scores))
            markers = page.locator("#f1-chart .promotion-marker")
            assert markers.count() == len(history.promotions())

            # Drift: one bar per feature, flagged as the history recorded it.
            drift = history.latest_drift()
            assert drift is not None
            for name, feature in drift.features.items():
                bar = page.locator(f'#drift-chart rect.drift-bar[data-feature="{name}"]')
                assert bar.count() == 1
                assert bar.get_attribute("data-drifted") == str(feature.drifted).lower()

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


ATTACK_PAGE = """<!doctype html><title>another site</title><script>
window.results = (async () => {
  const api = new URL(location.href).searchParams.get("api");
  const out = {};
  try {
    const r = await fetch(api + "/summarystats");
    out.read = "read: " + (await r.text()).slice(0, 80);
  } catch (e) { out.read = "blocked"; }
  const body = JSON.stringify({file_location: "testdata/testdata.csv"});
  await fetch(api + "/prediction", {method: "POST", mode: "no-cors", body: new Blob([body])});
  await fetch(api + "/prediction", {method: "POST", mode: "no-cors",
                                    headers: {"Content-Type": "text/plain"}, body});
  try {
    await fetch(api + "/prediction", {method: "POST", headers: {"Content-Type": "text/csv"},
                                      body: "a,b\\n1,2\\n"});
    out.csv = "sent";
  } catch (e) { out.csv = "blocked"; }
  return out;
})();
</script>"""


def _count(metrics: str, status: str) -> float:
    wanted = f'route="/prediction",status="{status}"'
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith("beryl_http_requests_total{")
        and wanted in line.replace('method="POST",', "")
    )


def test_a_page_on_another_origin_reads_nothing_and_reaches_no_file(page_url: str) -> None:
    """Beryl sends no CORS headers and reads JSON only when it says so: a page the user visits
    cannot read answers, and its simple cross-site POSTs never reach a workspace file."""
    import http.server
    import threading

    import httpx
    from playwright.sync_api import sync_playwright

    api = page_url.removesuffix("/dashboard")

    class Attacker(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = ATTACK_PAGE.encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    site = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Attacker)
    threading.Thread(target=site.serve_forever, daemon=True).start()
    before = httpx.get(f"{api}/metrics").text
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
            try:
                page = browser.new_page()
                page.goto(f"http://127.0.0.1:{site.server_port}/?api={api}")
                results = page.evaluate("window.results")
            finally:
                browser.close()
    finally:
        site.shutdown()
        site.server_close()
    after = httpx.get(f"{api}/metrics").text
    assert results == {"read": "blocked", "csv": "blocked"}  # text/csv needs a preflight: 405
    assert _count(after, "415") - _count(before, "415") == 2
    assert _count(after, "200") == _count(before, "200")


def test_dns_rebinding_reaches_nothing(page_url: str) -> None:
    """A page whose name is made to resolve to 127.0.0.1 is same-origin with the API by name,
    so the Host check is what keeps it out."""
    from playwright.sync_api import sync_playwright

    port = page_url.removesuffix("/dashboard").rsplit(":", 1)[1]
    rebound = f"http://rebind.test:{port}"
    flags = [*CHROMIUM_FLAGS, "--host-resolver-rules=MAP rebind.test 127.0.0.1"]
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=flags)
        try:
            page = browser.new_page()
            response = page.goto(f"{rebound}/dashboard")
            assert response is not None and response.status == 400
            answers = page.evaluate(
                """async () => Promise.all(["/summarystats", "/diagnostics", "/history"].map(
                    async (p) => {
                        const r = await fetch(p);
                        return [r.status, await r.text()];
                    }))"""
            )
            again = page.goto(f"http://localhost:{port}/health")  # the real name still works
            assert again is not None and again.status == 200
        finally:
            browser.close()
    for status, text in answers:
        assert status == 400 and "is not served here" in text
        assert "mean" not in text and "missing_percent" not in text
