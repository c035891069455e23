"""Reading live monitoring: every process's hour files merged into one ``LiveSummary``.

``beryl.monitoring.live`` writes, per process and UTC hour, exact counters and a uniform sample
of the inputs. Here the files of the last ``live.window_hours`` hours are added up, whoever wrote
them (every worker of ``beryl serve --workers N``, every ``beryl predict``), into:

- per hour: records, predicted positives, the mean predicted risk and the estimated F1;
- over the window: the same, the records by model version and the histogram of probabilities;
- the estimated F1 from the probabilities alone (confidence-based performance estimation): the
  expected true positives are the sum of p over predicted positives, the false positives the sum
  of 1 - p over them, the false negatives the sum of p over predicted negatives, and
  F1 = 2TP / (2TP + FP + FN). It holds only as far as the probabilities are calibrated;
- data drift of the sampled inputs against the production model's training data, by
  ``beryl.monitoring.drift.compare`` (``DriftResult``, three states).

Each figure that needs ``drift.min_rows`` records and has fewer is None, with the reason::

    summary = live_summary(workspace)          # the last live.window_hours hours
    summary.records, summary.estimated_f1, summary.drift_verdict, summary.drift_note
    LiveReports(workspace).summary()           # the same, cached while no file changes
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from beryl.config import Settings
from beryl.errors import BerylError
from beryl.monitoring.livestate import (
    HOUR_S,
    HourFile,
    Tally,
    hour_name,
    listing,
    live_folder,
    parse,
)
from beryl.monitoring.results import NOT_TESTED, DriftResult
from beryl.workspace import Workspace

if TYPE_CHECKING:
    import pandas as pd

CALIBRATION_NOTE = "estimated from the probabilities: as good as their calibration"


@dataclass(frozen=True)
class LiveHour:
    """One UTC hour of traffic, every process added up."""

    hour: str  # "2026-12-03T14"
    records: int
    predicted_positive: int
    mean_risk: float | None  # mean probability of the positive label; None without records
    estimated_f1: float | None  # None below drift.min_rows records

    def to_dict(self) -> dict[str, Any]:
        return {
            "hour": self.hour,
            "records": self.records,
            "predicted_positive": self.predicted_positive,
            "mean_predicted_risk": self.mean_risk,
            "estimated_f1": self.estimated_f1,
        }


@dataclass(frozen=True)
class Expected:
    """The confusion counts the probabilities lead one to expect (not observed ones)."""

    true_positive: float
    false_positive: float
    false_negative: float

    @property
    def f1(self) -> float | None:
        denominator = 2 * self.true_positive + self.false_positive + self.false_negative
        return None if denominator <= 0 else 2 * self.true_positive / denominator


def expected(tally: Tally) -> Expected:
    """What the probabilities lead one to expect of counters: TP = sum of p over predicted
    positives, FP = sum of 1 - p over them, FN = sum of p over predicted negatives."""
    return Expected(tally.positive_sum, tally.positives - tally.positive_sum, tally.negative_sum)


@dataclass(frozen=True)
class LiveSummary:
    """What Beryl was asked over a window of hours, and what can be said about it."""

    window_hours: int
    first_hour: str
    last_hour: str
    records: int
    predicted_positive: int
    versions: Mapping[str, int]  # records by the model version that scored them
    production_version: str | None
    mean_risk: float | None
    risk_note: str | None  # why mean_risk is None
    histogram: tuple[int, ...]  # records by probability, in BINS bins of 0.1
    expected: Expected
    estimated_f1: float | None
    f1_note: str | None  # why estimated_f1 is None; else what it rests on
    drift: DriftResult | None  # None when not tested (drift_note says why)
    drift_verdict: str  # "drifted", "not drifted" or "not tested"
    drift_note: str | None
    sampled: int  # sampled inputs the drift test compared
    hours: tuple[LiveHour, ...]  # every hour of the window, oldest first
    files: int  # process files merged
    unreadable: tuple[str, ...] = field(default=())  # files that could not be read

    @property
    def drift_tested(self) -> bool:
        return self.drift_verdict != NOT_TESTED

    def to_dict(self) -> dict[str, Any]:
        drift = self.drift
        return {
            "window_hours": self.window_hours,
            "first_hour": self.first_hour,
            "last_hour": self.last_hour,
            "records": self.records,
            "predicted_positive": self.predicted_positive,
            "model_versions": dict(self.versions),
            "production_version": self.production_version,
            "mean_predicted_risk": self.mean_risk,
            "risk_note": self.risk_note,
            "probability_histogram": list(self.histogram),
            "estimated_f1": self.estimated_f1,
            "f1_note": self.f1_note,
            "verdict": self.drift_verdict,
            "note": self.drift_note,
            "dataset_drift": bool(drift and drift.dataset_drift),
            "drift_share": None if drift is None else drift.drift_share,
            "drifted_features": [] if drift is None else list(drift.drifted_features),
            "sampled_records": self.sampled,
            "features": {}
            if drift is None
            else {n: f.to_dict() for n, f in drift.features.items()},
            "hours": [hour.to_dict() for hour in self.hours],
            "files": self.files,
            "unreadable_files": list(self.unreadable),
        }


class LiveReports:
    """Live summaries of one workspace, computed again only when a file or production changed.

    Each file is parsed once per version of it (its modification time and size); the reference
    (production's training rows) is read once per production version.
    """

    def __init__(
        self, workspace: Workspace | Settings, *, clock: Callable[[], float] = time.time
    ) -> None:
        self.workspace = Workspace.of(workspace)
        self._clock = clock
        self._files: dict[str, tuple[tuple[int, int, int], HourFile]] = {}
        self._summary: tuple[Any, LiveSummary] | None = None
        self._reference: tuple[Any, pd.DataFrame] | None = None
        self._lock = threading.Lock()  # a scrape and a request at once compute it once

    def summary(self, hours: int | None = None) -> LiveSummary:
        """The last ``hours`` UTC hours (default ``live.window_hours``), the current one last."""
        with self._lock:
            return self._summarise(hours)

    def _summarise(self, hours: int | None) -> LiveSummary:
        settings = self.workspace.settings
        hours = hours or settings.live.window_hours
        now = int(self._clock() // HOUR_S)
        first = now - hours + 1
        listed = listing(live_folder(settings), first, now)
        production = self._production()
        key = (hours, now, production, tuple(sorted(listed.items())))
        cached = self._summary
        if cached is not None and cached[0] == key:
            return cached[1]
        files, unreadable = [], []
        for path, stamp in listed.items():
            known = self._files.get(path)
            if known is not None and known[0] == stamp:
                files.append(known[1])
                continue
            try:
                parsed = parse(json.loads(Path(path).read_text(encoding="utf-8")), stamp[2])
            except (OSError, ValueError) as exc:
                unreadable.append(f"{path}: {exc}")
                continue
            self._files[path] = (stamp, parsed)
            files.append(parsed)
        self._files = {p: v for p, v in self._files.items() if p in listed}
        summary = self._merge(files, hours, first, now, production, tuple(unreadable))
        self._summary = (key, summary)
        return summary

    def _production(self) -> str | None:
        try:
            return self.workspace.registry.production()
        except BerylError:
            return None

    def _merge(
        self,
        files: list[HourFile],
        hours: int,
        first: int,
        now: int,
        production: str | None,
        unreadable: tuple[str, ...],
    ) -> LiveSummary:
        min_rows = self.workspace.settings.drift.min_rows
        by_hour: dict[int, Tally] = {}
        versions: dict[str, int] = {}
        total = Tally()
        for file in files:
            for version, tally in file.versions.items():
                by_hour[file.hour] = by_hour.get(file.hour, Tally()) + tally
                versions[version] = versions.get(version, 0) + tally.records
                total = total + tally
        rows = tuple(
            LiveHour(
                hour_name(index),
                tally.records,
                tally.positives,
                tally.mean_risk,
                expected(tally).f1 if tally.records >= min_rows else None,
            )
            for index in range(first, now + 1)
            for tally in [by_hour.get(index, Tally())]
        )
        few = (
            None
            if total.records >= min_rows
            else f"only {total.records} live records in the last {hours} h (needs {min_rows}, "
            "drift.min_rows)"
        )
        f1 = None if few else expected(total).f1
        f1_note = few or (
            CALIBRATION_NOTE if f1 is not None else "no record was predicted or expected positive"
        )
        drift, sampled, drift_note = (None, 0, few) if few else self._drift(files, production)
        return LiveSummary(
            window_hours=hours,
            first_hour=hour_name(first),
            last_hour=hour_name(now),
            records=total.records,
            predicted_positive=total.positives,
            versions=dict(sorted(versions.items())),
            production_version=production,
            mean_risk=None if few else total.mean_risk,
            risk_note=few,
            histogram=total.histogram,
            expected=expected(total),
            estimated_f1=f1,
            f1_note=f1_note,
            drift=drift,
            drift_verdict=NOT_TESTED if drift is None else drift.verdict,
            drift_note=drift_note if drift is None else drift.note,
            sampled=sampled,
            hours=rows,
            files=len(files),
            unreadable=unreadable,
        )

    def _drift(
        self, files: list[HourFile], production: str | None
    ) -> tuple[DriftResult | None, int, str | None]:
        """Drift of the merged sample against production's training data, or why not."""
        settings = self.workspace.settings.drift
        if production is None:
            return None, 0, "no model in production to compare the live inputs with"
        try:
            reference, schema = self._reference_of(production)
        except (BerylError, OSError) as exc:
            return None, 0, f"production's training data cannot be read: {exc}"
        if reference is None or schema is None:
            return (
                None,
                0,
                (
                    f"{production}'s training batches are no longer in the dataset, or it was "
                    "trained with other column types than the dataset holds now"
                ),
            )
        current = _merged_sample(
            files, schema.features, schema.numeric, settings.max_reference_rows
        )
        if len(current) < settings.min_rows:
            return (
                None,
                len(current),
                (
                    f"only {len(current)} sampled live records (needs {settings.min_rows}, "
                    "drift.min_rows; raise live.sample_per_hour)"
                ),
            )
        from beryl.monitoring.drift import compare

        result = compare(reference, current, schema, settings, reference_label=production)
        return result, len(current), result.note

    def _reference_of(self, production: str) -> tuple[pd.DataFrame | None, Any]:
        """Production's training rows the dataset still holds (a sample, as the batch check
        draws it), and its schema; None when there are none to compare with."""
        registry, dataset = self.workspace.registry, self.workspace.dataset
        schema = registry.model(production).schema
        batches = sorted(
            set(registry.card(production).training.get("batches", []))
            & {b.id for b in dataset.batches}
        )
        if not batches or schema != dataset.schema:
            return None, None
        key = (production, tuple(batches))
        cached = self._reference
        if cached is not None and cached[0] == key:
            return cached[1], schema
        limit = self.workspace.settings.drift.max_reference_rows
        reference = dataset.read(columns=schema.features, batches=batches)
        if len(reference) > limit:
            reference = reference.sample(n=limit, random_state=0)
        self._reference = (key, reference)
        return reference, schema


def live_summary(
    workspace: Workspace | Settings, hours: int | None = None, *, now: float | None = None
) -> LiveSummary:
    """The live summary of the last ``hours`` hours (default ``live.window_hours``)."""
    clock = time.time if now is None else (lambda: now)
    return LiveReports(workspace, clock=clock).summary(hours)


def _merged_sample(
    files: list[HourFile], features: list[str], numeric: list[str], limit: int
) -> pd.DataFrame:
    """One uniform sample of the window's inputs from every file's reservoir: each file gives
    rows in proportion to the records it saw, as many as the smallest share allows."""
    import numpy as np
    import pandas as pd

    sources = [f.sample for f in files if f.sample.seen > 0 and f.sample.kept > 0]
    seen = sum(s.seen for s in sources)
    if not sources:
        return pd.DataFrame(columns=features)
    size = min(
        limit,
        sum(s.kept for s in sources),
        *(int(s.kept * seen / s.seen) for s in sources),
    )
    random = np.random.default_rng(0)
    records = []
    for source in sources:
        share = min(source.kept, round(size * source.seen / seen))
        if share <= 0:
            continue
        for i in sorted(random.choice(source.kept, size=share, replace=False).tolist()):
            version, values = source.rows[i]
            records.append(dict(zip(source.features[version], values, strict=True)))
    merged = pd.DataFrame.from_records(records, columns=features)
    for column in features:
        if column in numeric:
            merged[column] = pd.to_numeric(merged[column], errors="coerce").astype(float)
        else:
            merged[column] = merged[column].astype(object).where(merged[column].notna(), None)
    return merged
