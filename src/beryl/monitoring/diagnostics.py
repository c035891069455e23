"""Diagnostics: predictions, summary statistics, missing values, timings, outdated packages.

Statistics of the consolidated dataset are cached in ``output_folder_path/profile.json`` keyed by
the dataset's batches, so asking again costs a file read until new data arrives.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.compute as pc

from beryl._io import atomic_write_json, read_json, utc_now
from beryl.config import Settings
from beryl.data.dataset import Dataset
from beryl.data.schema import Schema
from beryl.errors import EmptyDatasetError, StateError
from beryl.model.registry import Registry
from beryl.monitoring.history import History

PROFILE_FILE = "profile.json"
OUTDATED_CACHE_FILE = ".outdated.json"
_REQUIREMENT_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")


# -- dataset profile ------------------------------------------------------------------------------
def compute_profile(dataset: Dataset) -> dict[str, Any]:
    """Summary statistics per numeric column and percent missing per column."""
    schema = dataset.schema
    if schema is None or not dataset.batches:
        raise EmptyDatasetError(
            f"no data has been ingested into {dataset.folder} yet", hint="run `beryl ingest` first"
        )
    table = dataset.read_table(columns=schema.columns)
    rows = table.num_rows
    stats: dict[str, dict[str, float | int | None]] = {}
    for column in schema.numeric:
        values = table.column(column).to_numpy(zero_copy_only=False).astype(float)
        present = values[~np.isnan(values)]
        if present.size:
            stats[column] = {
                "mean": float(present.mean()),
                "median": float(np.median(present)),
                "std": float(present.std(ddof=1)) if present.size > 1 else 0.0,
                "count": int(present.size),
                "min": float(present.min()),
                "max": float(present.max()),
            }
        else:
            stats[column] = dict.fromkeys(("mean", "median", "std", "min", "max")) | {"count": 0}
    missing = {
        column: (100.0 * table.column(column).null_count / rows if rows else 0.0)
        for column in schema.columns
    }
    for column in schema.numeric:  # NaN stored as a float is missing too
        nan_count = int(pc.sum(pc.is_nan(table.column(column))).as_py() or 0)
        missing[column] += 100.0 * nan_count / rows if rows else 0.0
    return {
        "batches": [b.id for b in dataset.batches],
        "rows": rows,
        "computed_at": utc_now(),
        "summary_stats": stats,
        "missing_percent": missing,
    }


def _saved_profile(dataset: Dataset) -> dict[str, Any] | None:
    """The profile saved in the dataset folder, if it describes the dataset's batches now."""
    try:
        cached = dict(read_json(dataset.folder / PROFILE_FILE))
    except (OSError, ValueError, TypeError):
        return None
    return cached if cached.get("batches") == [b.id for b in dataset.batches] else None


def profile(dataset: Dataset) -> dict[str, Any]:
    """The dataset profile, from the cache when it matches the dataset's batches (a fresh one
    is saved for the next reader)."""
    cached = _saved_profile(dataset)
    if cached is not None:
        return cached
    fresh = compute_profile(dataset)
    with contextlib.suppress(StateError):  # a read-only workspace: the cache is only a cache
        atomic_write_json(dataset.folder / PROFILE_FILE, fresh)
    return fresh


ProfileSource = Callable[[Dataset], dict[str, Any]]


class ProfileCache:
    """Profiles for a reader that never writes to the workspace (the API): the saved profile
    when it matches the dataset, else one computed in memory and kept until the batches change.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._kept: dict[str, Any] | None = None

    def __call__(self, dataset: Dataset) -> dict[str, Any]:
        batches = [b.id for b in dataset.batches]
        kept = self._kept
        if kept is not None and kept["batches"] == batches:
            return kept
        with self._lock:  # one computation at a time; the others then find it kept
            kept = self._kept
            if kept is not None and kept["batches"] == batches:
                return kept
            found = _saved_profile(dataset) or compute_profile(dataset)
            self._kept = found
            return found


# -- predictions ----------------------------------------------------------------------------------
def predict_test_data(settings: Settings, registry: Registry) -> dict[str, Any]:
    """Predictions of the production model on the test data."""
    from beryl.model.scoring import read_labelled

    version = registry.require_production()
    card = registry.card(version)
    schema = Schema.from_dict(card.schema)
    frame, _ = read_labelled(settings.test_data, schema)
    model = registry.model(version)
    predictions = model.predict(frame[schema.features])
    return {"version": version, "predictions": [_plain(p) for p in predictions.tolist()]}


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


# -- timings --------------------------------------------------------------------------------------
def recorded_timings(history: History) -> dict[str, float | None]:
    """Seconds the latest real ingestion and training took, as the history recorded them."""
    out: dict[str, float | None] = {}
    for step in ("ingest", "train"):
        record = history.last_step(step)
        out[f"{step}_s"] = record.duration_s if record else None
    return out


def measure_timings(settings: Settings) -> dict[str, float]:
    """Re-time ingestion and training on a scratch copy; the workspace is not touched."""
    from beryl import config as config_module
    from beryl.data.ingestion import ingest
    from beryl.model.training import train

    with tempfile.TemporaryDirectory(prefix="beryl-measure-") as scratch:
        root = Path(scratch)
        shutil.copytree(settings.input_folder, root / "input", symlinks=True)
        data = settings.model_dump(mode="json", exclude={"root"})
        data.update(
            input_folder_path="input",
            output_folder_path="ingested",
            output_model_path="models",
            prod_deployment_path="production",
            test_data_path=str(settings.test_data),
        )
        scratch_settings = config_module.from_mapping(data, root)
        started = time.perf_counter()
        ingest(scratch_settings)
        ingest_s = time.perf_counter() - started
        started = time.perf_counter()
        train(scratch_settings)
        train_s = time.perf_counter() - started
    return {"ingest_s": ingest_s, "train_s": train_s}


# -- outdated packages ----------------------------------------------------------------------------
def dependencies(distribution: str = "beryl") -> list[str]:
    """Names of the runtime dependencies a distribution declares (extras excluded)."""
    names = []
    for requirement in metadata.requires(distribution) or []:
        if "extra ==" in requirement:
            continue
        match = _REQUIREMENT_NAME.match(requirement)
        if match:
            names.append(match.group(1))
    return names


def _latest_version(name: str, index_url: str, timeout: float) -> str:
    import httpx

    url = f"{index_url.rstrip('/')}/{name}/json"
    try:
        response = httpx.get(url, timeout=timeout, follow_redirects=True)
        if response.status_code == 200:
            version = response.json()["info"]["version"]
            if isinstance(version, str) and version.strip():
                return version.strip()
    except (httpx.HTTPError, ValueError, KeyError, TypeError, AttributeError):
        pass
    return "unknown"


def _is_newer(latest: str, installed: str) -> bool | None:
    """Whether ``latest`` is a newer release than ``installed`` (None when either is unparsable)."""
    from packaging.version import InvalidVersion, Version

    try:
        return Version(latest) > Version(installed)
    except InvalidVersion:
        return None


def outdated_packages(
    names: list[str] | None = None,
    *,
    index_url: str = "https://pypi.org/pypi",
    timeout: float = 3.0,
) -> list[dict[str, Any]]:
    """Per dependency: installed version, latest on the package index ('unknown' when offline).

    ``index_url`` serves the PyPI JSON API (``{index_url}/{name}/json``).
    """
    wanted = names if names is not None else dependencies()
    with ThreadPoolExecutor(max_workers=8) as pool:
        latest = list(pool.map(lambda n: _latest_version(n, index_url, timeout), wanted))
    table = []
    for name, newest in zip(wanted, latest, strict=True):
        try:
            installed = metadata.version(name)
        except metadata.PackageNotFoundError:
            installed = "not installed"
        outdated: bool | None = None
        if newest != "unknown" and installed != "not installed":
            outdated = _is_newer(newest, installed)
        table.append(
            {"module": name, "installed": installed, "latest": newest, "outdated": outdated}
        )
    return table


def cached_outdated(settings: Settings, *, max_age_s: float = 6 * 3600) -> dict[str, Any] | None:
    """The last outdated-packages table saved in the workspace, if it is recent enough."""
    path = settings.model_folder / OUTDATED_CACHE_FILE
    try:
        cached = dict(read_json(path))
    except (OSError, ValueError, TypeError):
        return None
    epoch = cached.get("checked_epoch")
    if not isinstance(epoch, int | float) or time.time() - float(epoch) > max_age_s:
        return None
    return cached


def check_outdated(settings: Settings, *, timeout: float = 3.0) -> dict[str, Any]:
    """Check the package index now (nothing is written)."""
    return {
        "checked_at": utc_now(),
        "checked_epoch": time.time(),
        "packages": outdated_packages(index_url=settings.package_index_url, timeout=timeout),
    }


def refresh_outdated(settings: Settings, *, timeout: float = 3.0) -> dict[str, Any]:
    """Check the package index now and save the table for later readers."""
    result = check_outdated(settings, timeout=timeout)
    with contextlib.suppress(StateError):  # a read-only workspace keeps no cache
        atomic_write_json(settings.model_folder / OUTDATED_CACHE_FILE, result)
    return result


class OutdatedCache:
    """The outdated-packages table for a reader that never writes to the workspace (the API):
    the table last saved in the workspace, or one checked in the background and kept in memory.
    """

    def __init__(self, settings: Settings, *, max_age_s: float = 6 * 3600) -> None:
        self.settings = settings
        self.max_age_s = max_age_s
        self._checking = threading.Lock()
        self._kept: dict[str, Any] | None = None

    def _fresh(self, table: dict[str, Any] | None) -> bool:
        return table is not None and time.time() - float(table["checked_epoch"]) <= self.max_age_s

    def current(self) -> dict[str, Any] | None:
        """The newest table known (None before any check); a stale one starts a new check."""
        saved = cached_outdated(self.settings, max_age_s=float("inf"))
        candidates = [t for t in (self._kept, saved) if t is not None]
        newest = max(candidates, key=lambda t: float(t["checked_epoch"]), default=None)
        if not self._fresh(newest):
            self.refresh_in_background()
        return newest

    def refresh_in_background(self) -> bool:
        """Start one check on a thread (none while another runs)."""
        if not self._checking.acquire(blocking=False):
            return False

        def work() -> None:
            try:
                self._kept = check_outdated(self.settings)
            finally:
                self._checking.release()

        threading.Thread(target=work, name="beryl-outdated", daemon=True).start()
        return True


# -- everything -----------------------------------------------------------------------------------
def diagnose(
    settings: Settings, *, measure: bool = False, check_outdated: bool = True
) -> dict[str, Any]:
    """All diagnostics of a workspace in one JSON-able dict."""
    registry = Registry(settings.model_folder)
    dataset = Dataset(settings.output_folder)
    history = History(settings.history_db)
    data_profile = profile(dataset)
    result: dict[str, Any] = {
        "production_version": registry.production(),
        "dataset_rows": data_profile["rows"],
        "summary_stats": data_profile["summary_stats"],
        "missing_percent": data_profile["missing_percent"],
        "timings": recorded_timings(history),
        "data_drift": history.latest_drift(),
    }
    if measure:
        result["measured_timings"] = measure_timings(settings)
    if registry.production() is not None:
        result["predictions"] = predict_test_data(settings, registry)
    if check_outdated:
        result["outdated_packages"] = refresh_outdated(settings)["packages"]
    return result


def dashboard_data(
    settings: Settings,
    *,
    runs: int = 15,
    profile_of: ProfileSource = profile,
    history: History | None = None,
) -> dict[str, Any]:
    """Everything the monitoring dashboard shows, from what the loop recorded."""
    registry = Registry(settings.model_folder)
    history = history or History(settings.history_db)
    production = registry.production()
    cards = registry.cards()
    by_id = {card.id: card for card in cards}
    prod_card = by_id.get(production) if production else None
    since = None
    if production is not None:
        since = next(
            (m.time for m in reversed(registry.moves()) if m.to_version == production), None
        )
    try:
        missing = profile_of(Dataset(settings.output_folder))["missing_percent"]
    except EmptyDatasetError:
        missing = {}
    matrix = None
    if prod_card is not None and prod_card.metrics.get("confusion_matrix"):
        matrix = {
            "matrix": prod_card.metrics["confusion_matrix"],
            "labels": prod_card.metrics.get("confusion_labels", []),
            "version": production,
        }
    warnings = []
    overlap = (prod_card.metrics.get("test_overlap") or {}) if prod_card else {}
    if overlap.get("shared"):
        warnings.append(
            f"{overlap['shared']} of {overlap['rows']} test rows ({overlap['share']:.0%}) are also "
            f"in {production}'s training data: its test score is flattered (was test data copied "
            "into the input folder?)"
        )
    return {
        "title": f"Beryl — workspace {settings.root}",
        "warnings": warnings,
        "generated_at": utc_now(),
        "production": None
        if prod_card is None
        else {"version": production, "f1": prod_card.f1, "since": since},
        "versions": [
            {
                "id": card.id,
                "created": card.created,
                "f1": card.f1,
                "rows": card.training.get("rows"),
                "production": card.id == production,
            }
            for card in reversed(cards)
        ],
        "scores": history.scores(),
        "promotions": history.promotions(),
        "drift": history.latest_drift(),
        "missing_percent": missing,
        "runs": [
            {
                "id": run.id,
                "command": run.command,
                "started": run.started,
                "duration_s": run.duration_s,
                "status": run.status,
                "summary": run.summary,
                "steps": [
                    {"name": s.name, "duration_s": s.duration_s, "status": s.status}
                    for s in run.steps
                ],
            }
            for run in history.runs(runs)
            if run.command == "run"
        ],
        "confusion_matrix": matrix,
    }
