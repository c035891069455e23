"""Diagnostics: predictions, summary statistics, missing values, timings, outdated packages.

Statistics of the consolidated dataset are cached in ``output_folder_path/profile.json`` keyed by
the dataset's batches, so asking again costs a file read until new data arrives::

    report = diagnose(workspace, check_outdated=False)     # a ``Diagnostics``
    report.production_version, report.data_drift, report.to_dict()   # the JSON of `--json`
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
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, TypedDict, cast

import numpy as np
import pyarrow.compute as pc

from beryl._io import atomic_write_json, read_json, utc_now
from beryl.config import Settings
from beryl.data.dataset import Dataset
from beryl.data.schema import Schema
from beryl.errors import EmptyDatasetError, StateError
from beryl.model.predict import predict
from beryl.monitoring.results import DriftResult
from beryl.monitoring.store import HistoryStore, ModelDriftRecord
from beryl.workspace import Workspace

PROFILE_FILE = "profile.json"
OUTDATED_CACHE_FILE = ".outdated.json"
_REQUIREMENT_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")


# Mean, median, std, count, min and max of one numeric column (None where it holds no value).
ColumnSummary = dict[str, float | int | None]


class Profile(TypedDict):
    """The dataset's statistics as ``profile.json`` keeps them, for the batches it names."""

    batches: list[str]
    rows: int
    computed_at: str
    summary_stats: dict[str, ColumnSummary]
    missing_percent: dict[str, float]


class QuarantinedFile(TypedDict):
    """An input file refused and still in the input folder: its name, why, and since when."""

    name: str
    reason: str | None
    time: str


def quarantined_files(workspace: Workspace | Settings) -> list[QuarantinedFile]:
    """The input files still waiting to be fixed or removed (``outstanding_quarantine``)."""
    from beryl.data.scan import outstanding_quarantine

    return [
        QuarantinedFile(name=r.name, reason=r.reason, time=r.time)
        for r in outstanding_quarantine(workspace)
    ]


class PackageRow(TypedDict):
    """One dependency: installed and latest versions; outdated is None when either is unknown."""

    module: str
    installed: str
    latest: str
    outdated: bool | None


class OutdatedTable(TypedDict):
    """The outdated-packages table as ``.outdated.json`` keeps it."""

    checked_at: str
    checked_epoch: float
    packages: list[PackageRow]


@dataclass(frozen=True)
class PredictionsOnTestData:
    """The production model's predictions, one per row of the test data."""

    version: str
    predictions: list[Any]

    def to_dict(self) -> dict[str, Any]:
        return {"version": self.version, "predictions": list(self.predictions)}


@dataclass(frozen=True)
class Diagnostics:
    """Everything ``beryl diagnose`` reports; a part not asked for (``measure``, the package
    index) or not possible (no production model for predictions) is None."""

    production_version: str | None
    dataset_rows: int
    summary_stats: dict[str, ColumnSummary]
    missing_percent: dict[str, float]
    timings: dict[str, float | None]
    data_drift: DriftResult | None
    measured_timings: dict[str, float] | None = None
    predictions: PredictionsOnTestData | None = None
    outdated_packages: list[PackageRow] | None = None
    quarantined: list[QuarantinedFile] = field(default_factory=list)  # until fixed or removed
    model_drift: ModelDriftRecord | None = None  # the latest model-drift check

    def to_dict(self) -> dict[str, Any]:
        """The JSON of ``beryl diagnose --json`` (parts that are None are left out, but drift)."""
        data: dict[str, Any] = {
            "production_version": self.production_version,
            "dataset_rows": self.dataset_rows,
            "summary_stats": self.summary_stats,
            "missing_percent": self.missing_percent,
            "timings": self.timings,
            "data_drift": None if self.data_drift is None else self.data_drift.to_dict(),
        }
        if self.measured_timings is not None:
            data["measured_timings"] = self.measured_timings
        if self.predictions is not None:
            data["predictions"] = self.predictions.to_dict()
        if self.outdated_packages is not None:
            data["outdated_packages"] = self.outdated_packages
        data["quarantined_files"] = list(self.quarantined)
        data["model_drift"] = None if self.model_drift is None else asdict(self.model_drift)
        return data


# -- dataset profile ------------------------------------------------------------------------------
def compute_profile(dataset: Dataset) -> Profile:
    """Summary statistics per numeric column and percent missing per column."""
    schema = dataset.schema
    if schema is None or not dataset.batches:
        raise EmptyDatasetError(
            f"no data has been ingested into {dataset.folder} yet", hint="run `beryl ingest` first"
        )
    table = dataset.read_table(columns=schema.columns)
    rows = table.num_rows
    stats: dict[str, ColumnSummary] = {}
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
    return Profile(
        batches=[b.id for b in dataset.batches],
        rows=rows,
        computed_at=utc_now(),
        summary_stats=stats,
        missing_percent=missing,
    )


def _saved_profile(dataset: Dataset) -> Profile | None:
    """The profile saved in the dataset folder, if it describes the dataset's batches now."""
    try:
        cached = dict(read_json(dataset.folder / PROFILE_FILE))
    except (OSError, ValueError, TypeError):
        return None
    return (
        cast(Profile, cached) if cached.get("batches") == [b.id for b in dataset.batches] else None
    )


def profile(workspace: Workspace | Settings) -> Profile:
    """The dataset profile, from the cache when it matches the dataset's batches (a fresh one
    is saved for the next reader)."""
    dataset = Workspace.of(workspace).dataset
    cached = _saved_profile(dataset)
    if cached is not None:
        return cached
    fresh = compute_profile(dataset)
    with contextlib.suppress(StateError):  # a read-only workspace: the cache is only a cache
        atomic_write_json(dataset.folder / PROFILE_FILE, fresh)
    return fresh


ProfileSource = Callable[[Workspace], Profile]


class ProfileCache:
    """Profiles for a reader that never writes to the workspace (the API): the saved profile
    when it matches the dataset, else one computed in memory and kept until the batches change.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._kept: Profile | None = None

    def __call__(self, workspace: Workspace | Settings) -> Profile:
        dataset = Workspace.of(workspace).dataset
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
def predict_test_data(workspace: Workspace | Settings) -> PredictionsOnTestData:
    """Predictions of the production model on the test data (``beryl.model.predict``)."""
    from beryl.data.csvfiles import read_labelled

    workspace = Workspace.of(workspace)
    registry = workspace.registry
    version = registry.require_production()
    schema = Schema.from_dict(registry.card(version).schema)
    frame, _ = read_labelled(workspace.settings.test_data, schema)
    predictions = predict(registry.model(version), frame[schema.features])
    return PredictionsOnTestData(version, predictions.labels)


# -- timings --------------------------------------------------------------------------------------
def recorded_timings(history: HistoryStore) -> dict[str, float | None]:
    """Seconds the latest real ingestion and training took, as the history recorded them."""
    out: dict[str, float | None] = {}
    for step in ("ingest", "train"):
        record = history.last_step(step)
        out[f"{step}_s"] = record.duration_s if record else None
    return out


def measure_timings(workspace: Workspace | Settings) -> dict[str, float]:
    """Re-time ingestion and training on a scratch copy; the workspace is not touched."""
    from beryl import config as config_module
    from beryl.data.ingestion import ingest
    from beryl.model.training import train

    settings = Workspace.of(workspace).settings
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
) -> list[PackageRow]:
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
        table.append(PackageRow(module=name, installed=installed, latest=newest, outdated=outdated))
    return table


def cached_outdated(
    workspace: Workspace | Settings, *, max_age_s: float = 6 * 3600
) -> OutdatedTable | None:
    """The last outdated-packages table saved in the workspace, if it is recent enough."""
    path = Workspace.of(workspace).settings.model_folder / OUTDATED_CACHE_FILE
    try:
        cached = dict(read_json(path))
    except (OSError, ValueError, TypeError):
        return None
    epoch = cached.get("checked_epoch")
    if not isinstance(epoch, int | float) or time.time() - float(epoch) > max_age_s:
        return None
    return cast(OutdatedTable, cached)


def check_outdated(workspace: Workspace | Settings, *, timeout: float = 3.0) -> OutdatedTable:
    """Check the package index now (nothing is written)."""
    index_url = Workspace.of(workspace).settings.package_index_url
    return OutdatedTable(
        checked_at=utc_now(),
        checked_epoch=time.time(),
        packages=outdated_packages(index_url=index_url, timeout=timeout),
    )


def refresh_outdated(workspace: Workspace | Settings, *, timeout: float = 3.0) -> OutdatedTable:
    """Check the package index now and save the table for later readers."""
    workspace = Workspace.of(workspace)
    result = check_outdated(workspace, timeout=timeout)
    with contextlib.suppress(StateError):  # a read-only workspace keeps no cache
        atomic_write_json(workspace.settings.model_folder / OUTDATED_CACHE_FILE, result)
    return result


class OutdatedCache:
    """The outdated-packages table for a reader that never writes to the workspace (the API):
    the table last saved in the workspace, or one checked in the background and kept in memory.
    """

    def __init__(self, workspace: Workspace | Settings, *, max_age_s: float = 6 * 3600) -> None:
        self.workspace = Workspace.of(workspace)
        self.max_age_s = max_age_s
        self._checking = threading.Lock()
        self._kept: OutdatedTable | None = None

    def _fresh(self, table: OutdatedTable | None) -> bool:
        return table is not None and time.time() - float(table["checked_epoch"]) <= self.max_age_s

    def current(self) -> OutdatedTable | None:
        """The newest table known (None before any check); a stale one starts a new check."""
        saved = cached_outdated(self.workspace, max_age_s=float("inf"))
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
                self._kept = check_outdated(self.workspace)
            finally:
                self._checking.release()

        threading.Thread(target=work, name="beryl-outdated", daemon=True).start()
        return True


# -- everything -----------------------------------------------------------------------------------
def diagnose(
    workspace: Workspace | Settings, *, measure: bool = False, check_outdated: bool = True
) -> Diagnostics:
    """All diagnostics of a workspace; ``to_dict()`` is their JSON."""
    workspace = Workspace.of(workspace)
    history = workspace.history
    data_profile = profile(workspace)
    production = workspace.registry.production()
    return Diagnostics(
        production_version=production,
        dataset_rows=data_profile["rows"],
        summary_stats=data_profile["summary_stats"],
        missing_percent=data_profile["missing_percent"],
        timings=recorded_timings(history),
        data_drift=history.latest_drift(),
        measured_timings=measure_timings(workspace) if measure else None,
        predictions=None if production is None else predict_test_data(workspace),
        outdated_packages=refresh_outdated(workspace)["packages"] if check_outdated else None,
        quarantined=quarantined_files(workspace),
        model_drift=latest_model_drift(history),
    )


def latest_model_drift(history: HistoryStore) -> ModelDriftRecord | None:
    """The latest model-drift check, or None before the first."""
    checks = history.model_drift_checks(1)
    return checks[-1] if checks else None
