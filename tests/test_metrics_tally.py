"""Request and prediction counts: gathered as plain integers, moved into the Prometheus series by
the event loop within ``FLUSH_S``, before a scrape of the same process and at shutdown. The
series must hold exactly what one ``observe``/``inc`` per request would have written, alone and
summed over worker processes' files."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, Histogram, generate_latest, values
from prometheus_client.multiprocess import MultiProcessCollector
from tests.test_api import make_workspace
from tests.test_observability import metric

from beryl.api.metrics import _BUCKETS, FLUSH_S, MULTIPROC_ENV, ApiMetrics
from beryl.config import Settings


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return make_workspace(tmp_path_factory.mktemp("tally") / "ws", run=False)[0]


def _histogram_text(durations: list[float]) -> str:
    """The exposition of the latency histogram after one ``observe`` per duration."""
    registry = CollectorRegistry()
    reference = Histogram(
        "beryl_http_request_duration_seconds",
        "Time to answer an HTTP request, by route and status",
        ["route", "method", "status"],
        buckets=_BUCKETS,
        registry=registry,
    )
    child = reference.labels(route="/prediction", method="POST", status="200")
    for seconds in durations:
        child.observe(seconds)
    return generate_latest(registry).decode()


def _histogram_lines(text: str) -> list[str]:
    return sorted(
        line for line in text.splitlines() if line.startswith("beryl_http_request_duration")
    )


def test_batched_counts_equal_one_write_per_request(settings: Settings) -> None:
    """Durations on every bucket bound, between them, past the last one: the same buckets, count
    and sum as a histogram observing each one."""
    metrics = ApiMetrics(settings)
    rng = random.Random(7)
    durations = [*_BUCKETS, *(b * 0.999 for b in _BUCKETS), *(b * 1.001 for b in _BUCKETS), 60.0]
    durations += [rng.uniform(0.0, 6.0) for _ in range(500)]
    for seconds in durations:
        metrics.observe_request("/prediction", "POST", 200, seconds)
    metrics.count_predictions([0, 1, 1, "1"])
    metrics.flush()
    text = metrics.render().decode()
    ours = [line for line in _histogram_lines(text) if "_created" not in line]
    theirs = _histogram_lines(_histogram_text(durations))
    assert [line.rsplit(" ", 1)[0] for line in ours] == [line.rsplit(" ", 1)[0] for line in theirs]
    for mine, reference in zip(ours, theirs, strict=True):
        assert float(mine.rsplit(" ", 1)[1]) == pytest.approx(float(reference.rsplit(" ", 1)[1]))
    labels = {"route": "/prediction", "method": "POST", "status": "200"}
    assert metric(text, "beryl_http_requests_total", **labels) == len(durations)
    assert metric(text, "beryl_predictions_total", label="1") == 3
    assert metric(text, "beryl_predictions_total", label="0") == 1


def test_counts_reach_the_shared_folder_within_the_flush_interval_without_a_scrape(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another worker's scrape reads the folder: the counts get there with no scrape here."""
    folder = tmp_path / "multiproc"
    folder.mkdir()
    monkeypatch.setenv(MULTIPROC_ENV, str(folder))
    # A worker reads the variable when it first imports prometheus_client; this process did so
    # before: its series get their values in shared memory as a worker's do.
    monkeypatch.setattr(values, "ValueClass", values.MultiProcessValue())
    metrics = ApiMetrics(settings)

    def scraped() -> str:  # what any worker's scrape adds up from the folder
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=str(folder))  # type: ignore[no-untyped-call]
        return generate_latest(registry).decode()

    labels = {"route": "/prediction", "method": "POST", "status": "200"}

    async def requests() -> tuple[float | None, float | None]:
        for _ in range(25):
            metrics.observe_request("/prediction", "POST", 200, 0.002)
            metrics.count_predictions([1])
        early = metric(scraped(), "beryl_http_requests_total", **labels)
        await asyncio.sleep(3 * FLUSH_S)
        return early, metric(scraped(), "beryl_http_requests_total", **labels)

    early, later = asyncio.run(requests())
    assert early is None  # still in this process
    assert later == 25
    text = scraped()
    assert metric(text, "beryl_http_request_duration_seconds_count", **labels) == 25
    assert metric(text, "beryl_predictions_total", label="1") == 25


def test_a_stopping_server_writes_what_it_counted(settings: Settings) -> None:
    """The lifespan's shutdown flushes: nothing counted is lost when a worker exits."""
    from beryl.api.app import create_app

    app = create_app(settings)
    metrics: ApiMetrics = app.state.metrics

    async def lifespan() -> None:
        messages = iter([{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}])
        sent: list[str] = []

        async def receive() -> dict[str, str]:
            if sent and sent[-1] == "lifespan.startup.complete":
                metrics.observe_request("/health", "GET", 200, 0.001)  # a request in between
            return next(messages)

        async def send(message: dict[str, str]) -> None:
            sent.append(message["type"])

        await app({"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}, receive, send)
        assert sent == ["lifespan.startup.complete", "lifespan.shutdown.complete"]

    asyncio.run(lifespan())
    assert metrics._requests == {}  # nothing left behind in the process
    text = metrics.render().decode()
    assert metric(text, "beryl_http_requests_total", route="/health", method="GET", status="200")
