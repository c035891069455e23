"""What ships for running Beryl beside the tools people already run (``deploy/``): the Prometheus
alert rules (unit-tested with Debian's ``promtool``), the Grafana dashboard (every expression
names a metric a real ``beryl serve`` exports), the container image's Dockerfile (linted with
hadolint) and compose file, and a wheel that installs and reports its version."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import httpx
import pytest
import yaml
from tests.test_api import make_workspace, serving

from beryl.data.demo import init_workspace

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
RULES = DEPLOY / "prometheus" / "beryl-rules.yml"
DASHBOARD = DEPLOY / "grafana" / "beryl-dashboard.json"
METRIC = re.compile(r"\bberyl_[a-z0-9_]+")
# The conditions the rules must cover, by alert name.
ALERTS = {
    "BerylNoRecentPass",
    "BerylNoPassRecorded",
    "BerylDatasetDrift",
    "BerylModelDrift",
    "BerylF1BelowFloor",
    "BerylServerErrors",
    "BerylNotReady",
}


def _tool(name: str) -> str:
    found = shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))
    if found is None:
        if os.environ.get("CI"):
            pytest.fail(f"{name} is missing (make test installs it)")
        pytest.skip(f"{name} is not installed")
    return found


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> set[str]:
    """The series names a real ``beryl serve`` exports after a pass, from its ``/metrics``:
    each family's name, with ``_total`` for counters and ``_bucket``/``_count``/``_sum`` for
    histograms."""
    _, config_path = make_workspace(tmp_path_factory.mktemp("metrics") / "ws")
    with serving(config_path) as base:
        httpx.post(f"{base}/prediction", json={"records": [{"lastmonth_activity": 1}]}, timeout=30)
        text = httpx.get(f"{base}/metrics", timeout=30).text
    names = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split()
            if kind == "counter":  # the text format names a counter by its samples' name
                names.add(name if name.endswith("_total") else f"{name}_total")
            elif kind == "histogram":
                names |= {f"{name}{suffix}" for suffix in ("_bucket", "_count", "_sum")}
            else:
                names.add(name)
    return names


def test_the_alert_rules_pass_promtool_check_and_their_unit_tests() -> None:
    promtool = _tool("promtool")
    checked = subprocess.run(
        [promtool, "check", "rules", str(RULES)], capture_output=True, text=True
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tested = subprocess.run(
        [promtool, "test", "rules", "beryl-rules.test.yml"],
        capture_output=True,
        text=True,
        cwd=RULES.parent,
    )
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "SUCCESS" in tested.stdout + tested.stderr


def test_the_rules_cover_every_condition_and_each_has_a_unit_test() -> None:
    rules = yaml.safe_load(RULES.read_text())["groups"][0]["rules"]
    assert {r["alert"] for r in rules} == ALERTS
    tests = yaml.safe_load((RULES.parent / "beryl-rules.test.yml").read_text())["tests"]
    fired = {
        case["alertname"]
        for test in tests
        for case in test["alert_rule_test"]
        if case["exp_alerts"]
    }
    quiet = {
        case["alertname"]
        for test in tests
        for case in test["alert_rule_test"]
        if not case["exp_alerts"]
    }
    assert fired == ALERTS and quiet == ALERTS  # each seen firing, and each seen quiet


def test_every_metric_the_rules_and_the_dashboard_use_is_one_beryl_exports(
    exported: set[str],
) -> None:
    assert {"beryl_ready", "beryl_http_requests_total", "beryl_production_f1"} <= exported
    used_by_rules = set(METRIC.findall(RULES.read_text()))
    dashboard = json.loads(DASHBOARD.read_text())
    expressions = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    expressions += [v["definition"] for v in dashboard["templating"]["list"] if "definition" in v]
    used_by_dashboard = {m for e in expressions for m in METRIC.findall(e)}
    assert used_by_rules - exported == set()
    assert used_by_dashboard - exported == set()
    assert len(used_by_dashboard) >= 15  # the dashboard shows the model, drift, loop and API


def test_the_dashboard_takes_its_data_source_from_a_template_variable() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for panel in dashboard["panels"]:
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}"
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    assert "${DS_" not in DASHBOARD.read_text()  # no data source name baked in at export


def test_the_dockerfile_passes_hadolint_and_runs_as_a_user_with_a_health_check() -> None:
    hadolint = _tool("hadolint")
    dockerfile = DEPLOY / "Dockerfile"
    linted = subprocess.run(
        [hadolint, "--no-color", "--failure-threshold", "info", str(dockerfile)],
        capture_output=True,
        text=True,
    )
    assert linted.returncode == 0, linted.stdout + linted.stderr
    text = dockerfile.read_text()
    final = text[text.rindex("\nFROM ") :]
    assert re.search(r"^USER 10001:10001$", final, re.M)  # numeric: resolvable anywhere
    assert "useradd --create-home --uid 10001" in final
    assert "HEALTHCHECK" in final and "/health" in final
    assert re.search(r'^ENTRYPOINT \["beryl"\]$', final, re.M)


def test_the_image_health_check_command_checks_a_real_server(tmp_path: Path) -> None:
    """The Dockerfile's HEALTHCHECK command, run as written against ``beryl serve``: 0 while it
    answers ``/health``, 1 once it is gone."""
    text = (DEPLOY / "Dockerfile").read_text()
    command = json.loads(re.search(r"CMD (\[.*\])\n", text[text.index("HEALTHCHECK") :]).group(1))
    assert command[:2] == ["python", "-c"]
    ws = init_workspace(tmp_path / "ws", rows=100, files=1, seed=1)
    with serving(ws.config) as base:
        port = base.rsplit(":", 1)[1]
        code = command[2].replace("8000", port)
        assert subprocess.run([sys.executable, "-c", code], timeout=30).returncode == 0
    assert (
        subprocess.run([sys.executable, "-c", code], timeout=30, capture_output=True).returncode
        != 0
    )


def test_the_compose_file_runs_the_loop_and_the_api_from_one_image_on_one_volume() -> None:
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    services = compose["services"]
    scheduler, api, init = services["scheduler"], services["api"], services["init"]
    assert scheduler["image"] == api["image"] == init["image"]
    assert scheduler["command"] == ["schedule"]
    assert api["command"][0] == "serve"
    for service in (scheduler, api, init):
        assert "workspace:/workspace" in service["volumes"]
        assert service["build"]["dockerfile"] == "deploy/Dockerfile"
    assert "workspace" in compose["volumes"]
    assert api["ports"] == ["127.0.0.1:8000:8000"]  # published on the host's loopback only
    assert "?" in api["environment"]["BERYL_API_TOKEN"]  # compose refuses to start without one
    assert scheduler["healthcheck"] == {"disable": True}
    checked = subprocess.run(
        [sys.executable, "-m", "beryl", "config", "check", "--config", str(DEPLOY / "config.json")],
        capture_output=True,
        text=True,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_a_built_wheel_installs_and_reports_its_version(tmp_path: Path) -> None:
    built = subprocess.run(
        [
            *(sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps"),
            *("--wheel-dir", str(tmp_path / "wheels"), str(ROOT)),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert built.returncode == 0, built.stderr
    (wheel,) = (tmp_path / "wheels").glob("beryl-*.whl")
    version = wheel.name.split("-")[1]
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
    assert "beryl/py.typed" in names and not any(n.startswith("tests/") for n in names)
    target = tmp_path / "site"
    installed = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--target",
            str(target),
            str(wheel),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert installed.returncode == 0, installed.stderr
    env = {**os.environ, "PYTHONPATH": str(target)}
    script = target / "bin" / "beryl"
    shown = subprocess.run(
        [sys.executable, str(script), "--version"], capture_output=True, text=True, env=env
    )
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.strip() == f"beryl, version {version}"
    where = subprocess.run(
        [sys.executable, "-c", "import beryl; print(beryl.__file__)"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    assert where.stdout.strip().startswith(str(target))
