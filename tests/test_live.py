"""Live monitoring: what Beryl is asked, recorded per process and hour, merged and reported.

Unit tests drive a ``LiveRecorder`` with a clock of their own; the rest go through the real API
(in process, and ``beryl serve --workers 2`` with a worker killed), the real ``beryl predict``,
the metrics and the dashboard card.
"""

from __future__ import annotations

import asyncio
import gc
import json
import math
import os
import re
import shutil
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest
from tests.conftest import CliRunner
from tests.test_api import make_two_pass_workspace, make_workspace, serving
from tests.test_event_loop import in_process

from beryl import config
from beryl.api.app import create_app
from beryl.api.fastpath import PredictionFastPath
from beryl.config import LiveSettings, Settings
from beryl.data.demo import generate
from beryl.data.schema import Schema
from beryl.errors import ConfigError
from beryl.monitoring.live import LiveRecorder
from beryl.monitoring.livecard import live_card
from beryl.monitoring.livereport import LiveReports, live_summary
from beryl.monitoring.livestate import BINS, hour_index, hour_name, live_folder

FEATURES = ["lastmonth_activity", "lastyear_activity", "number_of_employees"]
SCHEMA = Schema(target="exited", positive_label=1, numeric=FEATURES)
HOUR = 3600.0
NOON = 1_796_385_600.0  # 2026-12-04T12:00:00Z


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, now: float = NOON) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def bare_settings(root: Path, **data: Any) -> Settings:
    """Settings of a workspace with no data and no model (counters only)."""
    root.mkdir(parents=True, exist_ok=True)
    return config.from_mapping(data, root, check_model=False)


def recorder(
    settings: Settings, clock: Clock, *, source: str = "test", seed: int = 0
) -> LiveRecorder:
    return LiveRecorder(
        live_folder(settings),
        settings.live,
        source=source,
        clock=clock,
        seed=seed,
        background=False,
    )


def rows(count: int, start: int = 0) -> list[dict[str, Any]]:
    """Records whose first feature numbers them (the sample can be checked for uniformity)."""
    return [
        {"lastmonth_activity": float(i), "lastyear_activity": 10.0, "number_of_employees": 3.0}
        for i in range(start, start + count)
    ]


def files_of(settings: Settings) -> list[dict[str, Any]]:
    found = sorted(live_folder(settings).glob("*/*.json"))
    return [json.loads(p.read_text()) for p in found]


def post_fast(app: Any, bodies: list[dict[str, Any]]) -> list[int]:
    """POST each body to ``app`` behind the prediction fast path, as ``beryl serve`` runs it;
    the statuses."""

    async def send() -> list[int]:
        transport = httpx.ASGITransport(app=PredictionFastPath(app))
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
            return [(await client.post("/prediction", json=b)).status_code for b in bodies]

    return asyncio.run(send())


def metric(text: str, name: str) -> float | None:
    found = re.search(rf"^{name} (\S+)$", text, re.MULTILINE)
    return None if found is None else float(found.group(1))


# -- the recorder ---------------------------------------------------------------------------------
def test_counters_and_histogram_are_exact(tmp_path: Path) -> None:
    settings = bare_settings(tmp_path / "ws")
    live = recorder(settings, Clock())
    chances = [0.95, 0.15, 0.05, 0.999, 1.0, 0.5, 0.55]
    labels = [1, 0, 0, 1, 1, 0, 1]
    live.record("v0001", SCHEMA, rows(1), labels[:1], chances[:1])  # the one-record path
    live.record("v0001", SCHEMA, rows(1, 1), labels[1:2], chances[1:2])
    live.record("v0001", SCHEMA, rows(5, 2), labels[2:], chances[2:])  # the many-record path
    assert live.flush() == 1
    (written,) = files_of(settings)
    counts = written["versions"]["v0001"]
    assert counts["records"] == 7 and counts["predicted_positive"] == 4
    assert counts["probability_sum_positive"] == pytest.approx(0.95 + 0.999 + 1.0 + 0.55)
    assert counts["probability_sum_negative"] == pytest.approx(0.05 + 0.15 + 0.5)
    assert counts["histogram"] == [1, 1, 0, 0, 0, 2, 0, 0, 0, 3]
    assert written["hour"] == "2026-12-04T12" and written["pid"] == os.getpid()
    assert written["sample"]["seen"] == 7
    sampled = written["sample"]["versions"]["v0001"]
    assert sampled["features"] == FEATURES
    assert [r[0] for r in sampled["rows"]] == [float(i) for i in range(7)]  # not yet full
    assert [r[-1] for r in sampled["rows"]] == chances
    assert live.flush() == 0  # nothing changed: nothing written again


def test_a_frame_is_counted_like_its_records(tmp_path: Path) -> None:
    one, other = bare_settings(tmp_path / "one"), bare_settings(tmp_path / "other")
    rng = np.random.default_rng(3)
    chances = rng.random(500).tolist()
    labels = [int(p > 0.4) for p in chances]
    by_records, by_frame = recorder(one, Clock()), recorder(other, Clock())
    by_records.record("v0001", SCHEMA, rows(500), labels, chances)
    frame = pd.DataFrame(rows(500))
    by_frame.record_frame("v0001", SCHEMA, frame, np.array(labels), np.array(chances))
    by_records.flush()
    by_frame.flush()
    ((counted,), (framed,)) = files_of(one), files_of(other)
    mine, theirs = counted["versions"]["v0001"], framed["versions"]["v0001"]
    for key in ("records", "predicted_positive", "histogram", "features"):
        assert mine[key] == theirs[key]
    for key in ("probability_sum_positive", "probability_sum_negative"):
        assert mine[key] == pytest.approx(theirs[key])
    assert mine["records"] == 500 and mine["predicted_positive"] == sum(labels)


@pytest.mark.parametrize("how", ["records", "frame"])
def test_the_sample_is_bounded_and_uniform(tmp_path: Path, how: str) -> None:
    settings = bare_settings(tmp_path / "ws", live={"sample_per_hour": 400})
    live = recorder(settings, Clock(), seed=7)
    total, size = 40_000, 40 if how == "records" else 4_000
    for start in range(0, total, size):
        batch = rows(size, start)
        chances = [0.5] * size
        if how == "records":
            live.record("v0001", SCHEMA, batch, [0] * size, chances)
        else:
            live.record_frame("v0001", SCHEMA, pd.DataFrame(batch), [0] * size, chances)
    live.flush()
    (written,) = files_of(settings)
    picked = [row[0] for row in written["sample"]["versions"]["v0001"]["rows"]]
    assert written["sample"]["seen"] == total and len(picked) == 400 == len(set(picked))
    # Uniform over all 40,000: each tenth of the stream holds about 40 of the 400.
    deciles = np.bincount((np.array(picked) * 10 // total).astype(int), minlength=10)
    chi_square = float(((deciles - 40) ** 2 / 40).sum())
    assert chi_square < 27.9, deciles  # 9 degrees of freedom, p = 0.001
    assert abs(np.mean(picked) / total - 0.5) < 0.05


def test_records_go_to_their_utc_hour_and_past_hours_are_let_go(tmp_path: Path) -> None:
    settings = bare_settings(tmp_path / "ws")
    clock = Clock(NOON + HOUR - 1)  # 12:59:59
    live = recorder(settings, clock)
    live.record("v0001", SCHEMA, rows(2), [0, 1], [0.2, 0.7])
    clock.now += 2  # 13:00:01
    live.record("v0001", SCHEMA, rows(3), [0, 0, 1], [0.1, 0.2, 0.9])
    assert live.flush() == 2
    hours = {f["hour"]: f["versions"]["v0001"]["records"] for f in files_of(settings)}
    assert hours == {"2026-12-04T12": 2, "2026-12-04T13": 3}
    assert list(live._book._hours) == [hour_index("2026-12-04T13")]  # 12:00 written, let go
    assert hour_name(int(NOON // HOUR)) == "2026-12-04T12"
    summary = live_summary(settings, now=clock.now)
    assert [(h.hour, h.records) for h in summary.hours[-2:]] == [
        ("2026-12-04T12", 2),
        ("2026-12-04T13", 3),
    ]
    assert len(summary.hours) == 24 and summary.last_hour == "2026-12-04T13"
    assert live_summary(settings, 1, now=clock.now).records == 3  # the last hour only


def test_the_estimated_f1_on_known_numbers(tmp_path: Path) -> None:
    settings = bare_settings(tmp_path / "ws", drift={"min_rows": 4})
    live = recorder(settings, Clock())
    live.record("v0001", SCHEMA, rows(4), [1, 1, 0, 0], [0.9, 0.8, 0.3, 0.1])
    live.flush()
    summary = live_summary(settings, now=NOON)
    # TP = 0.9 + 0.8, FP = 0.1 + 0.2, FN = 0.3 + 0.1: F1 = 3.4 / (3.4 + 0.3 + 0.4)
    assert summary.expected.true_positive == pytest.approx(1.7)
    assert summary.expected.false_positive == pytest.approx(0.3)
    assert summary.expected.false_negative == pytest.approx(0.4)
    assert summary.estimated_f1 == pytest.approx(3.4 / 4.1)
    assert summary.hours[-1].estimated_f1 == pytest.approx(3.4 / 4.1)
    assert summary.mean_risk == pytest.approx(0.525)
    assert summary.f1_note is not None and "calibration" in summary.f1_note
    assert summary.histogram == (0, 1, 0, 1, 0, 0, 0, 0, 1, 1)


def test_files_of_several_processes_are_merged(tmp_path: Path) -> None:
    settings = bare_settings(tmp_path / "ws", drift={"min_rows": 1})
    clock = Clock()
    workers = [recorder(settings, clock, seed=i) for i in range(3)]
    for i, live in enumerate(workers):
        live.record("v0001", SCHEMA, rows(10 * (i + 1)), [1] * 10 * (i + 1), [0.8] * 10 * (i + 1))
    workers[2].record("v0002", SCHEMA, rows(5), [0] * 5, [0.2] * 5)
    for live in workers:
        live.flush()
    assert len({live.process for live in workers}) == 3
    summary = live_summary(settings, now=clock.now)
    assert summary.files == 3
    assert summary.records == 65 and summary.predicted_positive == 60
    assert dict(summary.versions) == {"v0001": 60, "v0002": 5}
    assert summary.hours[-1].records == 65
    assert summary.mean_risk == pytest.approx((60 * 0.8 + 5 * 0.2) / 65)
    assert summary.histogram[8] == 60 and summary.histogram[2] == 5


def test_a_restarted_process_writes_a_new_file_and_nothing_is_counted_twice(
    tmp_path: Path,
) -> None:
    settings = bare_settings(tmp_path / "ws")
    clock = Clock()
    first = recorder(settings, clock)
    first.record("v0001", SCHEMA, rows(40), [0] * 40, [0.1] * 40)
    first.flush()
    first.record("v0001", SCHEMA, rows(7), [0] * 7, [0.1] * 7)  # killed before it is written
    again = recorder(settings, clock)  # the restarted worker
    again.record("v0001", SCHEMA, rows(5), [0] * 5, [0.1] * 5)
    again.flush()
    assert first.process != again.process
    assert sorted(f["versions"]["v0001"]["records"] for f in files_of(settings)) == [5, 40]
    assert live_summary(settings, now=clock.now).records == 45


def test_a_failed_write_never_fails_recording_and_is_tried_again(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = bare_settings(tmp_path / "ws")
    folder = live_folder(settings)
    folder.parent.mkdir(parents=True)
    folder.write_text("in the way")  # the folder cannot be made: every write fails
    live = recorder(settings, Clock())
    live.record("v0001", SCHEMA, rows(3), [0, 0, 1], [0.1, 0.2, 0.9])
    with caplog.at_level("WARNING", logger="beryl.live"):
        assert live.flush() == 0
        live.record("v0001", SCHEMA, rows(2), [0, 0], [0.1, 0.2])
        assert live.flush() == 0
    assert live.failures == 2 and live.last_error is not None
    assert len([r for r in caplog.records if r.name == "beryl.live"]) == 1  # logged once
    folder.unlink()
    assert live.flush() == 1
    (written,) = files_of(settings)
    assert written["versions"]["v0001"]["records"] == 5  # nothing recorded was lost


def test_a_dropped_recorder_writes_what_it_recorded_and_a_discarded_one_nothing(
    tmp_path: Path,
) -> None:
    kept, dropped = bare_settings(tmp_path / "kept"), bare_settings(tmp_path / "dropped")
    live = recorder(kept, Clock())
    live.record("v0001", SCHEMA, rows(3), [0, 0, 1], [0.1, 0.2, 0.9])
    del live  # the app that held it is gone (or the process exits): written once more
    gc.collect()
    assert [f["versions"]["v0001"]["records"] for f in files_of(kept)] == [3]
    failed = recorder(dropped, Clock())
    failed.record("v0001", SCHEMA, rows(3), [0, 0, 1], [0.1, 0.2, 0.9])
    failed.discard()  # beryl predict failed: nothing it scored was answered
    failed.close()
    del failed
    gc.collect()
    assert files_of(dropped) == []


def test_a_fault_while_recording_never_reaches_the_caller(tmp_path: Path) -> None:
    live = recorder(bare_settings(tmp_path / "ws"), Clock())
    live.record("v0001", SCHEMA, rows(2), [0], [0.1, float("nan")])  # labels and chances apart
    live.record_frame("v0001", SCHEMA, pd.DataFrame(rows(2)), [0], [0.1, 0.2])
    assert live.failures == 2


def test_hours_beyond_retention_are_removed(tmp_path: Path) -> None:
    settings = bare_settings(tmp_path / "ws", live={"retention_hours": 48, "window_hours": 24})
    folder = live_folder(settings)
    now = int(NOON // HOUR)
    old, kept = folder / hour_name(now - 48), folder / hour_name(now - 47)
    for hour in (old, kept):
        hour.mkdir(parents=True)
        (hour / "gone-1-ab.json").write_text("{}")
    stale = kept / ".beryl-tmp-left-by-a-kill.json"
    stale.write_text("")
    os.utime(stale, (time.time() - 3600, time.time() - 3600))
    fresh = kept / ".beryl-tmp-being-written.json"
    fresh.write_text("")
    live = recorder(settings, Clock())
    live.record("v0001", SCHEMA, rows(1), [0], [0.1])
    live.flush()
    assert not old.exists() and (kept / "gone-1-ab.json").exists()
    assert not stale.exists() and fresh.exists()  # another writer's may be in flight
    summary = live_summary(settings, now=NOON)
    assert summary.records == 1 and summary.files == 1  # temporaries are never read
    assert len(summary.unreadable) == 0  # the 47 h old file is outside the 24 h window


def test_too_few_records_are_not_tested_and_say_why(tmp_path: Path) -> None:
    settings = bare_settings(tmp_path / "ws")
    live = recorder(settings, Clock())
    live.record("v0001", SCHEMA, rows(12), [1] * 12, [0.9] * 12)
    live.flush()
    summary = live_summary(settings, now=NOON)
    assert summary.records == 12
    assert summary.drift_verdict == "not tested" and summary.drift is None
    assert summary.drift_note == "only 12 live records in the last 24 h (needs 30, drift.min_rows)"
    assert summary.estimated_f1 is None and summary.f1_note == summary.drift_note
    assert summary.mean_risk is None and summary.risk_note == summary.drift_note
    assert summary.hours[-1].estimated_f1 is None and summary.hours[-1].mean_risk == 0.9
    assert summary.to_dict()["verdict"] == "not tested"
    empty = live_summary(bare_settings(tmp_path / "none"), now=NOON)
    assert empty.records == 0 and empty.drift_verdict == "not tested" and empty.files == 0


def test_enough_records_without_a_model_are_not_tested_for_drift(tmp_path: Path) -> None:
    settings = bare_settings(tmp_path / "ws")
    live = recorder(settings, Clock())
    live.record("v0001", SCHEMA, rows(50), [1] * 50, [0.9] * 50)
    live.flush()
    summary = live_summary(settings, now=NOON)
    assert summary.estimated_f1 is not None and summary.drift_verdict == "not tested"
    assert summary.drift_note == "no model in production to compare the live inputs with"


def test_the_summary_is_computed_again_only_when_a_file_changed(tmp_path: Path) -> None:
    settings = bare_settings(tmp_path / "ws")
    clock = Clock()
    live, reports = recorder(settings, clock), LiveReports(settings, clock=clock)
    live.record("v0001", SCHEMA, rows(3), [0] * 3, [0.1] * 3)
    live.flush()
    first = reports.summary()
    assert reports.summary() is first
    live.record("v0001", SCHEMA, rows(2), [0] * 2, [0.1] * 2)
    live.flush()
    assert reports.summary().records == 5


def test_a_damaged_file_is_named_and_the_others_count(tmp_path: Path) -> None:
    settings = bare_settings(tmp_path / "ws")
    live = recorder(settings, Clock())
    live.record("v0001", SCHEMA, rows(3), [0] * 3, [0.1] * 3)
    live.flush()
    (live_folder(settings) / "2026-12-04T12" / "torn.json").write_text('{"format": 1, "vers')
    summary = live_summary(settings, now=NOON)
    assert summary.records == 3 and len(summary.unreadable) == 1
    assert "torn.json" in summary.unreadable[0]


def test_the_live_section_is_validated(tmp_path: Path) -> None:
    assert config.from_mapping({}, tmp_path).live == LiveSettings()
    assert LiveSettings().enabled and LiveSettings().flush_seconds == 10.0
    for bad, problem in [
        ({"flush_seconds": 0}, "live.flush_seconds"),
        ({"sample_per_hour": 1}, "live.sample_per_hour"),
        ({"window_hours": 48, "retention_hours": 24}, "at least window_hours (48)"),
        ({"every": 5}, "live.every: unknown key"),
    ]:
        with pytest.raises(ConfigError) as caught:
            config.from_mapping({"live": bad}, tmp_path)
        assert problem in " ".join(caught.value.problems), caught.value.problems


# -- against the production model: drift ----------------------------------------------------------
@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A workspace with a production model (copied by each test that writes live files)."""
    _, config_path = make_workspace(tmp_path_factory.mktemp("live") / "ws")
    return config_path.parent


@pytest.fixture
def fresh(trained: Path, tmp_path: Path) -> Settings:
    shutil.copytree(trained, tmp_path / "ws", symlinks=True)
    return config.load(tmp_path / "ws" / "config.json")


def demo_records(count: int, seed: int, shift: float = 0.0) -> list[dict[str, Any]]:
    """Customers as a client sends them (whole numbers), from the demo's own distribution."""
    frame = generate(count, seed, shift=shift, missing_rate=0.0)[FEATURES]
    return [{k: float(round(v)) for k, v in r.items()} for r in frame.to_dict("records")]


@pytest.mark.parametrize(("shift", "verdict"), [(0.0, "not drifted"), (0.8, "drifted")])
def test_drift_is_found_in_shifted_inputs_and_not_in_in_distribution_ones(
    fresh: Settings, shift: float, verdict: str
) -> None:
    app = create_app(fresh)
    records = demo_records(1_200, seed=40, shift=shift)
    bodies = [{"records": records[start : start + 100]} for start in range(0, 1_200, 100)]
    assert post_fast(app, bodies) == [200] * 12
    app.state.metrics.live.flush()
    summary = live_summary(fresh)
    assert summary.records == 1_200 and summary.production_version == "v0001"
    assert summary.drift_verdict == verdict, summary.to_dict()["features"]
    assert summary.drift is not None
    assert summary.drift.reference.model_version == "v0001" and summary.sampled == 1_200
    if verdict == "drifted":
        assert set(summary.drift.drifted_features) >= {"lastmonth_activity"}
        assert summary.mean_risk is not None
    else:
        assert summary.drift.drifted_features == ()


# -- the API --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def two_passes(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """A workspace whose second pass checked a batch for drift (so /drift answers 200)."""
    settings, _ = make_two_pass_workspace(tmp_path_factory.mktemp("live-drift") / "ws", seed=21)
    return settings


def test_drift_answers_live_monitoring_of_the_fast_path_and_the_route(
    two_passes: Settings,
) -> None:
    shutil.rmtree(live_folder(two_passes), ignore_errors=True)
    records = demo_records(60, seed=41)
    csv = pd.DataFrame(records).to_csv(index=False)
    with in_process(two_passes) as (url, app):
        before = httpx.get(f"{url}/drift", timeout=30).json()["live"]
        assert before["records"] == 0 and before["verdict"] == "not tested"
        assert post_fast(app, [{"records": records[:20]}]) == [200]  # the same app, fast path
        by_route = httpx.post(f"{url}/prediction?explain=1", json={"records": records[20:30]})
        by_csv = httpx.post(
            f"{url}/prediction", content=csv, headers={"Content-Type": "text/csv"}, timeout=30
        )
        assert by_route.status_code == by_csv.status_code == 200
        assert app.state.metrics.live.flush() == 1
        answer = httpx.get(f"{url}/drift", timeout=30).json()
    live = answer["live"]
    assert answer["verdict"] in ("drifted", "not drifted")  # the batch's, as before
    assert live["records"] == 20 + 10 + 60 and live["hours"][-1]["records"] == 90
    version = live["production_version"]
    assert live["model_versions"] == {version: 90} and version is not None
    assert live["verdict"] in ("drifted", "not drifted") and live["sampled_records"] == 90
    assert live["estimated_f1"] is not None and 0.0 < live["estimated_f1"] <= 1.0
    assert sum(live["probability_histogram"]) == 90 and len(live["hours"]) == 24
    assert set(live["features"]) == set(FEATURES)


def test_metrics_are_present_when_tested_and_absent_when_not(fresh: Settings) -> None:
    with in_process(fresh) as (url, app):
        text = httpx.get(f"{url}/metrics", timeout=30).text
        assert metric(text, "beryl_live_records") == 0.0
        assert metric(text, "beryl_live_drift_tested") == 0.0
        for absent in ("beryl_live_drift_share", "beryl_live_estimated_f1"):
            assert metric(text, absent) is None, absent
        assert metric(text, "beryl_live_mean_predicted_risk") is None
        assert "# HELP beryl_live_drift_share" in text
        answer = httpx.post(f"{url}/prediction", json={"records": demo_records(40, seed=42)})
        assert answer.status_code == 200
        app.state.metrics.live.flush()
        text = httpx.get(f"{url}/metrics", timeout=30).text
    assert metric(text, "beryl_live_records") == 40.0
    assert metric(text, "beryl_live_drift_tested") == 1.0
    share = metric(text, "beryl_live_drift_share")
    assert share is not None and 0.0 <= share <= 1.0
    f1, risk = (
        metric(text, "beryl_live_estimated_f1"),
        metric(text, "beryl_live_mean_predicted_risk"),
    )
    probabilities = answer.json()["probabilities"]
    assert risk == pytest.approx(sum(probabilities) / len(probabilities))
    assert f1 is not None and 0.0 < f1 <= 1.0


def test_switched_off_nothing_is_recorded(fresh: Settings) -> None:
    settings = fresh.model_copy(update={"live": LiveSettings(enabled=False)})
    app = create_app(settings)
    assert app.state.metrics.live is None
    assert post_fast(app, [{"records": demo_records(5, 1)}]) == [200]
    assert not live_folder(settings).exists()


# -- beryl predict --------------------------------------------------------------------------------
def test_beryl_predict_is_recorded(fresh: Settings, beryl_cli: CliRunner) -> None:
    source = fresh.test_data / "testdata.csv"
    output = fresh.root / "scored.csv"
    beryl_cli("predict", str(source), "-o", str(output), config=fresh.config_path, check=True)
    scored = pd.read_csv(output)
    (written,) = files_of(fresh)
    assert written["source"] == "predict"
    summary = live_summary(fresh)
    assert summary.records == len(scored) and dict(summary.versions) == {"v0001": len(scored)}
    assert summary.predicted_positive == int((scored["prediction"] == 1).sum())
    assert summary.mean_risk == pytest.approx(scored["probability"].mean())
    assert summary.histogram[BINS - 1] == int((scored["probability"] >= 0.9).sum())


# -- beryl serve --workers 2, one worker killed ---------------------------------------------------
def _files_by_pid(settings: Settings) -> dict[int, int]:
    """Records each worker's files hold, by its pid."""
    found: dict[int, int] = {}
    for written in files_of(settings):
        count = sum(v["records"] for v in written["versions"].values())
        found[written["pid"]] = found.get(written["pid"], 0) + count
    return found


def _until(condition: Any, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


@pytest.mark.slow
def test_two_workers_are_merged_and_a_killed_worker_keeps_what_it_wrote(
    fresh: Settings,
) -> None:
    data = json.loads(fresh.config_path.read_text())
    data["live"] = {"flush_seconds": 0.2}
    fresh.config_path.write_text(json.dumps(data))
    settings = config.load(fresh.config_path)
    record = {"records": demo_records(1, seed=43)}
    sent = 0
    lock = threading.Lock()

    def send(url: str, count: int) -> None:
        nonlocal sent
        for _ in range(count):  # a new connection each time: either worker may take it
            assert httpx.post(f"{url}/prediction", json=record, timeout=30).status_code == 200
            with lock:
                sent += 1

    with serving(fresh.config_path, "--workers", "2") as url:
        with ThreadPoolExecutor(4) as pool:
            deadline = time.monotonic() + 60
            while len(_files_by_pid(settings)) < 2:  # until both workers have answered
                assert time.monotonic() < deadline, "one worker took every connection"
                list(pool.map(lambda _: send(url, 10), range(4)))
                time.sleep(0.3)
        _until(lambda: live_summary(settings).records == sent, 30, "the workers never flushed")
        workers = _files_by_pid(settings)
        assert len(workers) == 2 and sum(workers.values()) == sent
        victim = max(workers, key=workers.__getitem__)
        kept = {
            path: path.read_bytes()
            for path in live_folder(settings).glob("*/*.json")
            if json.loads(path.read_bytes())["pid"] == victim
        }
        os.kill(victim, signal.SIGKILL)
        _until(lambda: not _alive(victim), 30, "the worker did not die")
        assert live_summary(settings).records == sent  # what it wrote before the kill counts
        before_kill = sent
        with ThreadPoolExecutor(4) as pool:  # until the worker started again has answered too
            deadline = time.monotonic() + 60
            while len(_files_by_pid(settings)) < 3:
                assert time.monotonic() < deadline, "the restarted worker never answered"
                list(pool.map(lambda _: send(url, 10), range(4)))
                time.sleep(0.3)
        _until(lambda: live_summary(settings).records == sent, 30, "later traffic never flushed")
        summary = live_summary(settings)
    assert summary.records == sent > before_kill  # nothing lost, nothing counted twice
    assert len(_files_by_pid(settings)) == 3 and _files_by_pid(settings)[victim] == workers[victim]
    assert kept and all(path.read_bytes() == content for path, content in kept.items())


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_server_stopped_by_sigterm_writes_what_it_recorded(fresh: Settings, workers: str) -> None:
    data = json.loads(fresh.config_path.read_text())
    data["live"] = {"flush_seconds": 3600}  # no flush before the end: only the one at exit
    fresh.config_path.write_text(json.dumps(data))
    log = fresh.root / "serve.log"
    with serving(fresh.config_path, "--workers", workers, log_path=log) as url:
        for _ in range(12):
            answer = httpx.post(f"{url}/prediction", json={"records": demo_records(3, seed=44)})
            assert answer.status_code == 200
        assert not list(live_folder(fresh).glob("*/*.json"))  # nothing written yet
    assert live_summary(fresh).records == 36, log.read_text()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as stat:  # a zombie waits for its parent: it is dead
        return stat.read().split(") ", 1)[1][0] != "Z"


# -- the dashboard card ---------------------------------------------------------------------------
def test_the_card_carries_the_numbers_and_the_not_tested_state(tmp_path: Path) -> None:
    settings = bare_settings(tmp_path / "ws", drift={"min_rows": 4})
    live = recorder(settings, Clock())
    live.record("v0001", SCHEMA, rows(4), [1, 1, 0, 0], [0.9, 0.8, 0.3, 0.1])
    live.flush()
    summary = live_summary(settings, now=NOON)
    html = live_card(summary)
    status = re.search(r'id="live-drift-status"[^>]*>([^<]*)<', html)
    assert status is not None and status.group(1) == "live drift not tested"
    assert "no model in production" in html
    bar = re.search(r'<rect class="live-bar"([^>]*)>', html)
    assert bar is not None
    attrs = dict(re.findall(r'(data-[\w-]+)="([^"]*)"', bar.group(1)))
    assert attrs["data-hour"] == "2026-12-04T12" and attrs["data-records"] == "4"
    assert math.isclose(float(attrs["data-mean-risk"]), 0.525)
    assert math.isclose(float(attrs["data-estimated-f1"]), 3.4 / 4.1)
    counts = [int(c) for c in re.findall(r'class="live-risk-bar"[^>]*data-count="(\d+)"', html)]
    assert counts == list(summary.histogram)
    figures = re.search(r'<table id="live-figures"([^>]*)>', html)
    assert figures is not None and 'data-records="4"' in figures.group(1)
    empty = live_card(live_summary(bare_settings(tmp_path / "none"), now=NOON))
    assert "No prediction in the last 24 h" in empty and "live drift not tested" in empty
    assert "<script" not in html and "http" not in html
