"""Monitoring endpoints over real HTTP: /drift, /history, /metrics (several workers), /dashboard."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from tests.test_api import make_two_pass_workspace, make_workspace, serving

from beryl.api.metrics import FLUSH_S
from beryl.config import Settings
from beryl.model.registry import Registry
from beryl.monitoring.history import History


@pytest.fixture(scope="module")
def two_passes(tmp_path_factory: pytest.TempPathFactory) -> tuple[Settings, Path]:
    """A workspace after two passes: the second ingested a shifted batch."""
    return make_two_pass_workspace(tmp_path_factory.mktemp("obs") / "ws", seed=21)


@pytest.fixture(scope="module")
def url(two_passes: tuple[Settings, Path]) -> Iterator[str]:
    with serving(two_passes[1], "--workers", "2") as base:
        yield base


def metric(text: str, name: str, **labels: str) -> float | None:
    """The value of one sample in Prometheus text format (labels in any order)."""
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', line.split(" ")[0]))
        if found == labels:
            return float(line.rsplit(" ", 1)[1])
    return None


def test_drift_endpoint_reports_the_latest_batch(
    url: str, two_passes: tuple[Settings, Path]
) -> None:
    settings, _ = two_passes
    answer = httpx.get(f"{url}/drift").json()
    latest = History(settings.history_db).latest_drift()
    assert latest is not None
    assert answer == latest.to_dict() | {"features": answer["features"], "live": answer["live"]}
    for name, feature in answer["features"].items():  # each feature's fields, as recorded
        assert feature == {k: latest.features[name].to_dict().get(k) for k in feature}
    assert answer["dataset_drift"] is True
    assert answer["reference"]["model_version"] == "v0001"
    assert answer["current"]["rows"] == 1_500
    assert set(answer["features"]) == {
        "lastmonth_activity",
        "lastyear_activity",
        "number_of_employees",
    }
    for feature in answer["features"].values():
        assert {"drifted", "test", "statistic", "p_value", "distance"} <= set(feature)


def test_diagnostics_carries_the_drift_verdict(url: str, two_passes: tuple[Settings, Path]) -> None:
    settings, _ = two_passes
    latest = History(settings.history_db).latest_drift()
    assert latest is not None
    summary = httpx.get(f"{url}/diagnostics").json()["data_drift"]
    assert summary["dataset_drift"] is latest.dataset_drift is True
    assert summary["drifted_features"] == list(latest.drifted_features)
    assert summary["checked_batches"] == list(latest.current.batches)


def test_history_endpoint_returns_runs_scores_and_promotions(url: str) -> None:
    answer = httpx.get(f"{url}/history", params={"limit": 10}).json()
    passes = [r for r in answer["runs"] if r["command"] == "run"]
    assert len(passes) == 2
    assert {s["name"] for s in passes[0]["steps"]} >= {"ingest", "data_drift", "train", "score"}
    roles = {s["role"] for s in answer["scores"]}
    assert {"candidate", "production", "drift-check"} <= roles
    assert answer["promotions"][0]["to_version"] == "v0001"
    assert httpx.get(f"{url}/history", params={"limit": 0}).status_code == 422
    assert httpx.get(f"{url}/history", params={"limit": 10_000}).status_code == 422


def test_metrics_add_up_over_two_workers(url: str, two_passes: tuple[Settings, Path]) -> None:
    settings, _ = two_passes
    before = httpx.get(f"{url}/metrics").text
    start = (
        metric(
            before, "beryl_http_requests_total", method="POST", route="/prediction", status="200"
        )
        or 0.0
    )
    record = {"lastmonth_activity": 1, "lastyear_activity": 10, "number_of_employees": 3}
    with httpx.Client(base_url=url) as client:  # new connections: both workers get some
        for _ in range(40):
            assert client.post("/prediction", json={"records": [record, record]}).status_code == 200
            client.headers["Connection"] = "close"
    time.sleep(2 * FLUSH_S)  # each worker moves its counts to the shared folder within FLUSH_S
    text = httpx.get(f"{url}/metrics").text
    count = metric(
        text, "beryl_http_requests_total", method="POST", route="/prediction", status="200"
    )
    assert count == start + 40
    predicted = sum(
        metric(text, "beryl_predictions_total", label=label) or 0.0 for label in ("0", "1")
    )
    assert predicted >= 80
    buckets = metric(
        text,
        "beryl_http_request_duration_seconds_count",
        method="POST",
        route="/prediction",
        status="200",
    )
    assert buckets == count
    production = Registry(settings.model_folder).require_production()
    assert metric(text, "beryl_production_model_info", version=production) == 1.0
    f1 = metric(text, "beryl_production_f1")
    assert f1 == pytest.approx(Registry(settings.model_folder).card(production).f1)
    latest = History(settings.history_db).latest_drift()
    assert latest is not None
    assert metric(text, "beryl_data_drift_share") == pytest.approx(latest.drift_share)
    assert (metric(text, "beryl_last_pass_timestamp_seconds") or 0) > 1.7e9
    httpx.get(f"{url}/no-such-route")
    time.sleep(2 * FLUSH_S)  # answered by either worker
    text = httpx.get(f"{url}/metrics").text
    assert metric(text, "beryl_http_requests_total", method="GET", route="unmatched", status="404")
    assert "/no-such-route" not in text  # raw paths never become labels


def test_dashboard_is_served_with_the_workspace_data(
    url: str, two_passes: tuple[Settings, Path]
) -> None:
    settings, _ = two_passes
    answer = httpx.get(f"{url}/dashboard")
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/html")
    page = answer.text
    for card in Registry(settings.model_folder).cards():
        assert f'data-version="{card.id}"' in page
    assert 'id="drift-chart"' in page and 'id="f1-chart"' in page
    assert "http://" not in page and "https://" not in page


def test_drift_is_404_before_any_check(tmp_path: Path) -> None:
    _, config_path = make_workspace(tmp_path / "ws")
    with serving(config_path) as base:
        answer = httpx.get(f"{base}/drift")
    assert answer.status_code == 404
    assert "no data-drift check yet" in answer.json()["error"]
