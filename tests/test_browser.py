"""The dashboard in a real browser: Debian's Chromium driven by Playwright over real HTTP.

`make test` installs Chromium from Debian's packages; no browser is ever downloaded. The
screenshot is kept as a test artifact in test-artifacts/dashboard.png.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.test_api import make_two_pass_workspace, serving

from beryl.config import Settings
from beryl.data.dataset import Dataset
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

            # Model drift over time: one point per check, as the history recorded it, and the
            # header's indicator says the latest verdict.
            checks = history.model_drift_checks()
            dots = page.locator("#model-drift-chart circle.model-drift-point")
            assert dots.count() == len(checks) > 0
            assert [dots.nth(i).get_attribute("data-verdict") for i in range(dots.count())] == [
                c.verdict for c in checks
            ]
            badge = page.locator("#model-drift-status").inner_text()
            assert ("not tested" in badge) == (checks[-1].verdict == "not tested")
            assert badge.startswith("model drift") or badge.startswith("no model drift")
            # Data drift per feature over time, the last decision and the dataset's growth.
            drifts = history.drifts()
            assert page.locator("#drift-history td.drift-pass").count() == len(drifts)
            decision = registry.card(registry.ids()[-1])
            candidate_f1 = page.locator('#decision tr[data-role="candidate"] [data-metric="f1"]')
            assert candidate_f1.inner_text() == f"{decision.metrics['f1']:.4f}"
            assert page.locator("#decision-summary").inner_text().startswith("Pass #")
            bars = page.locator("#growth-chart rect.growth-bar")
            rows = [int(bars.nth(i).get_attribute("data-rows") or -1) for i in range(bars.count())]
            assert rows == [b.rows for b in Dataset(settings.output_folder).batches]

            # Live traffic: its card with a three-state verdict (too little traffic here).
            live = page.locator("#live-drift-status")
            assert live.count() == 1 and live.inner_text() == "live drift not tested"

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


def test_with_a_token_the_dashboard_opens_after_logging_in_and_until_logging_out(
    workspace_with_two_passes: tuple[Settings, Path],
) -> None:
    """The browser gets the login form, a wrong token says so, the right one opens the
    dashboard and the docs, a reload keeps the session (an HttpOnly cookie that does not hold
    the token), and logging out brings the form back."""
    from playwright.sync_api import sync_playwright

    token = "browser-s3cret_token"
    _, config_path = workspace_with_two_passes
    guarded = config_path.with_name("config-with-token.json")
    document = json.loads(config_path.read_text())
    document["api"] = document.get("api", {}) | {"token": token}
    guarded.write_text(json.dumps(document))
    errors: list[str] = []
    with serving(guarded) as base, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        try:
            context = browser.new_context()
            page = context.new_page()
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("requestfailed", lambda r: errors.append(f"request failed: {r.url}"))

            opened = page.goto(f"{base}/dashboard")
            assert opened is not None and opened.status == 401
            assert page.locator("form#login input#token").is_visible()
            assert page.locator("#f1-chart").count() == 0

            page.fill("#token", "a-wrong-token")
            with page.expect_navigation() as wrong:
                page.click("form#login button[type=submit]")
            assert wrong.value is not None and wrong.value.status == 401
            assert page.locator("form#login .error").inner_text() == "Wrong token: try again."
            assert context.cookies() == []

            page.fill("#token", token)
            with page.expect_navigation() as right:
                page.click("form#login button[type=submit]")
            assert right.value is not None and right.value.status == 200
            assert page.url == f"{base}/dashboard"
            assert page.locator("#f1-chart circle.f1-point").count() > 0
            assert page.locator("#drift-chart rect.drift-bar").count() > 0
            (cookie,) = context.cookies()
            assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["path"] == "/"
            assert not cookie["secure"]  # plain http (Secure is set when served over https)
            assert token not in cookie["value"]
            assert 11 * 3600 < cookie["expires"] - time.time() <= 12 * 3600
            assert page.evaluate("document.cookie") == ""  # HttpOnly: no script reads it

            again = page.reload()
            assert again is not None and again.status == 200
            assert page.locator("#f1-chart circle.f1-point").count() > 0

            docs = page.goto(f"{base}/docs")  # Swagger UI loads the document with the cookie
            assert docs is not None and docs.status == 200
            page.wait_for_selector(".swagger-ui .title:has-text('Beryl')", timeout=30_000)

            page.goto(f"{base}/logout")
            assert page.url == f"{base}/login"
            assert page.locator("form#login input#token").is_visible()
            assert context.cookies() == []
            closed = page.goto(f"{base}/dashboard")
            assert closed is not None and closed.status == 401
            assert page.locator("form#login").count() == 1
        finally:
            browser.close()
    assert errors == [], errors
