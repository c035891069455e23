"""Prometheus gauges of live monitoring, read from every process's files at scrape time.

The summary (``beryl.monitoring.livereport.LiveReports``) is computed again only when a file
changed, so a scrape between two flushes costs a folder listing. A figure that could not be
established (too few records, no model in production) is left out, never shown as zero.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from prometheus_client.core import GaugeMetricFamily, Metric

from beryl.errors import BerylError
from beryl.monitoring.livereport import LiveReports, LiveSummary


def live_metrics(reports: LiveReports) -> Iterator[Metric]:
    """``beryl_live_*``: records, mean predicted risk, estimated F1 and drift of the window."""
    hours = reports.workspace.settings.live.window_hours
    window = f"the last {hours} h (live.window_hours), every worker and beryl predict"
    records = GaugeMetricFamily("beryl_live_records", f"Records scored in {window}")
    risk = GaugeMetricFamily(
        "beryl_live_mean_predicted_risk",
        f"Mean probability of the positive label over {window} (absent below drift.min_rows)",
    )
    f1 = GaugeMetricFamily(
        "beryl_live_estimated_f1",
        "F1 expected from the live probabilities (assumes calibrated probabilities; absent "
        "when it cannot be estimated)",
    )
    tested = GaugeMetricFamily(
        "beryl_live_drift_tested",
        "1 when the sampled live inputs could be tested for drift against production's "
        "training data, 0 when not (too few records, no production model)",
    )
    share = GaugeMetricFamily(
        "beryl_live_drift_share", "Share of features drifted in the sampled live inputs"
    )
    dataset = GaugeMetricFamily(
        "beryl_live_dataset_drift", "1 when the sampled live inputs drifted as a whole"
    )
    summary: LiveSummary | None = None
    with contextlib.suppress(BerylError, OSError, ValueError):
        summary = reports.summary()
    if summary is not None:
        records.add_metric([], float(summary.records))
        if summary.mean_risk is not None:
            risk.add_metric([], summary.mean_risk)
        if summary.estimated_f1 is not None:
            f1.add_metric([], summary.estimated_f1)
        tested.add_metric([], 1.0 if summary.drift_tested else 0.0)
        if summary.drift is not None and summary.drift_tested:  # no figure, not a false "none"
            share.add_metric([], summary.drift.drift_share)
            dataset.add_metric([], 1.0 if summary.drift.dataset_drift else 0.0)
    yield records
    yield risk
    yield f1
    yield tested
    yield share
    yield dataset
