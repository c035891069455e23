"""Prometheus metrics: request counts and latencies, predictions by class, and workspace state.

Request and prediction counters live in each server process; with several workers
(``PROMETHEUS_MULTIPROC_DIR`` set by ``beryl serve``) every worker writes them to that folder and
a scrape adds them up. A request adds to plain integers; the event loop moves them into the
Prometheus series (shared memory: a lock and a process check per write) at most ``FLUSH_S``
later, before any scrape the same process answers, and when the server stops. A scrape thus sees
another worker's requests of the last ``FLUSH_S`` at the next scrape.

Workspace state (production model, F1, last pass, drift) is read from the registry and the
history at scrape time, and live monitoring from every process's files
(``beryl.api.livemetrics``), so every worker answers the same.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import os
import time
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from beryl.api.livemetrics import live_metrics
from beryl.config import Settings
from beryl.errors import BerylError
from beryl.monitoring.live import LiveRecorder
from beryl.monitoring.livereport import LiveReports
from beryl.monitoring.store import HistoryStore
from beryl.workspace import Workspace

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
# Scope key: ``time.perf_counter()`` when a layer in front of the app took the request (the
# prediction fast path); a request it hands on is timed from there, not from when the app got it.
STARTED = "beryl.started"
_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
FLUSH_S = 0.1  # the longest a request's counts wait in its process before reaching the series


class WorkspaceCollector(Collector):
    """Gauges read from the workspace's registry and history when Prometheus scrapes."""

    def __init__(self, workspace: Workspace) -> None:
        self.workspace = workspace
        self.live_reports = LiveReports(workspace)  # cached while no live file changes
        # Whether the app would answer /ready with 200 (set by the app; None: not exported).
        self.ready: Callable[[], bool] | None = None

    def collect(self) -> Iterator[Metric]:
        registry, history = self.workspace.registry, self.workspace.history
        if self.ready is not None:
            ready = GaugeMetricFamily(
                "beryl_ready", "1 when a verified production model is loaded (/ready answers 200)"
            )
            ready.add_metric([], 1.0 if self.ready() else 0.0)
            yield ready
        info = GaugeMetricFamily(
            "beryl_production_model_info",
            "The production model version (value 1)",
            labels=["version"],
        )
        f1 = GaugeMetricFamily("beryl_production_f1", "F1 of the production model on the test data")
        try:
            version = registry.production()
            if version is not None:
                info.add_metric([version], 1.0)
                score = registry.card(version).f1
                if score is not None:
                    f1.add_metric([], score)
        except BerylError:
            pass
        yield info
        yield f1
        last = GaugeMetricFamily(
            "beryl_last_pass_timestamp_seconds", "When the last pass of the loop ended"
        )
        outcome = GaugeMetricFamily(
            "beryl_last_pass_info",
            "Outcome of the last pass (value 1)",
            labels=["status", "outcome"],
        )
        duration = GaugeMetricFamily(
            "beryl_last_pass_duration_seconds", "Duration of the last pass"
        )
        passes = [r for r in history.runs(50) if r.command == "run" and r.ended]
        if passes:
            run = passes[0]
            last.add_metric([], _epoch(run.ended))
            outcome.add_metric([run.status, str(run.detail.get("outcome", ""))], 1.0)
            if run.duration_s is not None:
                duration.add_metric([], run.duration_s)
        yield last
        yield outcome
        yield duration
        share = GaugeMetricFamily(
            "beryl_data_drift_share", "Share of features drifted in the latest batch"
        )
        dataset = GaugeMetricFamily(
            "beryl_dataset_drift", "1 when the latest batch drifted as a whole"
        )
        tested = GaugeMetricFamily(
            "beryl_data_drift_tested",
            "1 when the latest batch could be tested for drift, 0 when it had too few rows",
        )
        drift = history.latest_drift()
        if drift is not None:
            tested.add_metric([], 0.0 if drift.verdict == "not tested" else 1.0)
            if drift.verdict != "not tested":  # no figure rather than a false "no drift"
                share.add_metric([], drift.drift_share)
                dataset.add_metric([], 1.0 if drift.dataset_drift else 0.0)
        yield share
        yield dataset
        yield tested
        waiting = GaugeMetricFamily(
            "beryl_quarantined_files",
            "Input files quarantined and still in the input folder (fix or remove them)",
        )
        from beryl.data.scan import outstanding_quarantine

        with contextlib.suppress(BerylError, OSError):
            waiting.add_metric([], float(len(outstanding_quarantine(self.workspace))))
        yield waiting
        yield from _model_drift(history)
        yield from live_metrics(self.live_reports)


def _model_drift(history: HistoryStore) -> Iterator[Metric]:
    """The latest model-drift check: tested or not, and when tested its verdict and F1."""
    tested = GaugeMetricFamily(
        "beryl_model_drift_tested",
        "1 when the latest pass could test the production model on new labelled rows, 0 when "
        "it had too few",
    )
    drifted = GaugeMetricFamily(
        "beryl_model_drift",
        "1 when production's F1 on the latest new rows fell below its recorded F1 by more than "
        "the tolerance",
    )
    f1 = GaugeMetricFamily(
        "beryl_production_f1_new_data", "F1 of the production model on the latest new rows"
    )
    checks = history.model_drift_checks(1)
    if checks:
        last = checks[-1]
        tested.add_metric([], 0.0 if last.verdict == "not tested" else 1.0)
        if last.verdict != "not tested":  # no figure rather than a false "no model drift"
            drifted.add_metric([], 1.0 if last.verdict == "drifted" else 0.0)
            if last.f1_new_data is not None:
                f1.add_metric([], last.f1_new_data)
    yield tested
    yield drifted
    yield f1


def _epoch(timestamp: str | None) -> float:
    from datetime import datetime

    if not timestamp:
        return 0.0
    return datetime.fromisoformat(timestamp.replace("Z", "+00:00")).timestamp()


class ApiMetrics:
    """The metrics one app records, and the text a scrape returns (the workspace gauges from
    the app's ``Workspace``)."""

    def __init__(self, workspace: Workspace | Settings) -> None:
        disable_created_metrics()  # type: ignore[no-untyped-call]  # no *_created series
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "beryl_http_requests",
            "HTTP requests by route, method and status",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "beryl_http_request_duration_seconds",
            "Time to answer an HTTP request, by route and status",
            ["route", "method", "status"],
            buckets=_BUCKETS,
            registry=self.registry,
        )
        self.predictions = Counter(
            "beryl_predictions",
            "Predictions made, by predicted class",
            ["label"],
            registry=self.registry,
        )
        self.collector = WorkspaceCollector(Workspace.of(workspace))
        self.registry.register(self.collector)
        # What this process is asked, recorded by ``respond`` (None: live.enabled is false).
        self.live = LiveRecorder.for_settings(self.collector.workspace.settings, source="serve")
        # Counts not yet in the series: per (route, method, status) the requests, their total
        # seconds and how many fell in each bucket (the last: +Inf); per label the predictions.
        self._requests: dict[tuple[str, str, int], list[Any]] = {}
        self._predicted: dict[str, int] = {}
        self._flush_due: asyncio.TimerHandle | None = None

    def observe_request(self, route: str, method: str, status: int, seconds: float) -> None:
        """Count one answered request and its duration."""
        tally = self._requests.get((route, method, status))
        if tally is None:
            tally = self._requests[(route, method, status)] = [0, 0.0, [0] * (len(_BUCKETS) + 1)]
        tally[0] += 1
        tally[1] += seconds
        tally[2][bisect.bisect_left(_BUCKETS, seconds)] += 1  # the first bound >= seconds
        if self._flush_due is None:
            self._flush_soon()

    def count_predictions(self, predictions: list[Any]) -> None:
        counts = self._predicted
        for label in predictions:
            key = str(label)
            counts[key] = counts.get(key, 0) + 1
        if self._flush_due is None:
            self._flush_soon()

    def _flush_soon(self) -> None:
        """A flush ``FLUSH_S`` from now on the running event loop (none due yet); off a loop,
        now. A flush due on a loop that ended (a test client's) never runs: ``flush`` before a
        scrape moves what it would have."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # not on an event loop: no later
            self.flush()
            return
        self._flush_due = loop.call_later(FLUSH_S, self.flush)

    def flush(self) -> None:
        """Move the counts gathered since the last flush into the Prometheus series."""
        if self._flush_due is not None:
            self._flush_due.cancel()
            self._flush_due = None
        requests, self._requests = self._requests, {}
        predicted, self._predicted = self._predicted, {}
        for (route, method, status), (count, seconds, buckets) in requests.items():
            labels = {"route": route, "method": method, "status": str(status)}
            self.requests.labels(**labels).inc(count)
            _observe_many(self.latency.labels(**labels), seconds, buckets)
        for label, count in predicted.items():
            self.predictions.labels(label=label).inc(count)

    def render(self) -> bytes:
        """The exposition text; with several workers, the sum over all of them (``flush``
        first, on the event loop, for this process's latest counts)."""
        if os.environ.get(MULTIPROC_ENV):
            combined = CollectorRegistry()
            MultiProcessCollector(combined)  # type: ignore[no-untyped-call]
            combined.register(self.collector)
            return generate_latest(combined)
        return generate_latest(self.registry)


def _observe_many(child: Any, seconds: float, buckets: list[int]) -> None:
    """``Histogram.observe`` of many durations at once: their total and each bucket's count, as
    that many ``observe`` calls would have added (one write per value, not one per request)."""
    child._sum.inc(seconds)
    for index, count in enumerate(buckets):
        if count:
            child._buckets[index].inc(count)


class MetricsMiddleware:
    """Count and time every request by its route template (not its raw path); when the server
    shuts down, write the counts and what live monitoring recorded since their last flush."""

    def __init__(self, app: ASGIApp, *, metrics: ApiMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            metrics = self.metrics

            async def send_after_closing(message: Message) -> None:
                if message["type"] in ("lifespan.shutdown.complete", "lifespan.shutdown.failed"):
                    metrics.flush()  # the server exits next (uvicorn then re-raises SIGTERM)
                    if metrics.live is not None:
                        metrics.live.close()
                await send(message)

            await self.app(scope, receive, send_after_closing)
            return
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = scope.get(STARTED)
        if started is None:
            started = time.perf_counter()
        status = 500

        async def send_and_record(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_and_record)
        finally:
            route = scope.get("route")
            path = getattr(route, "path", None)
            if path is None:  # answered outside the router (docs, errors): bound the labels
                path = scope.get("path", "") if status < 400 else "unmatched"
            elapsed = time.perf_counter() - started
            self.metrics.observe_request(path, scope.get("method", ""), status, elapsed)
