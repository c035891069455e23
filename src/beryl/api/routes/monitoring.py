"""Answers from what the loop recorded: scoring, summary statistics, diagnostics."""

from __future__ import annotations

import threading

from fastapi import APIRouter, Request

from beryl.api.app import ApiError
from beryl.api.deps import HolderDep, SettingsDep
from beryl.api.schemas import (
    DiagnosticsResponse,
    DriftSummary,
    ScoringResponse,
    SummaryStatsResponse,
    error_responses,
)
from beryl.config import Settings
from beryl.dataset import Dataset
from beryl.diagnostics import cached_outdated, profile, recorded_timings, refresh_outdated
from beryl.errors import ModelError
from beryl.history import History

router = APIRouter(tags=["monitoring"], responses=error_responses(503))


@router.get("/scoring", response_model=ScoringResponse)
async def scoring(holder: HolderDep) -> ScoringResponse:
    """F1 (and the other metrics) of the production model on the test data, as last scored."""
    loaded = holder.get()
    metrics = loaded.card.metrics
    if metrics.get("f1") is None:
        raise ApiError(503, f"{loaded.version} has not been scored yet", "run `beryl score`")
    return ScoringResponse(
        model_version=loaded.version,
        **{k: metrics.get(k) for k in ScoringResponse.model_fields if k != "model_version"},
    )


def _version(holder: HolderDep) -> str | None:
    try:
        return holder.get().version
    except ModelError:
        return None


@router.get("/summarystats", response_model=SummaryStatsResponse)
async def summarystats(settings: SettingsDep, holder: HolderDep) -> SummaryStatsResponse:
    """Mean, median, std, count, min and max of each numeric column of the dataset."""
    data = profile(Dataset(settings.output_folder))
    return SummaryStatsResponse(
        model_version=_version(holder),
        rows=data["rows"],
        computed_at=data["computed_at"],
        columns=data["summary_stats"],
    )


@router.get("/diagnostics", response_model=DiagnosticsResponse)
async def diagnostics(
    request: Request, settings: SettingsDep, holder: HolderDep
) -> DiagnosticsResponse:
    """Missing values, step timings, outdated dependencies and the production version."""
    data = profile(Dataset(settings.output_folder))
    outdated = cached_outdated(settings)
    if outdated is None:
        start_outdated_refresh(request.app.state.outdated_lock, settings)
        outdated = cached_outdated(settings, max_age_s=float("inf")) or {}
    history = History(settings.history_db)
    drift = history.latest_drift()
    return DiagnosticsResponse(
        model_version=_version(holder),
        missing_percent=data["missing_percent"],
        timings=recorded_timings(history),
        outdated_packages=outdated.get("packages", []),
        outdated_checked_at=outdated.get("checked_at"),
        data_drift=None
        if drift is None
        else DriftSummary(
            dataset_drift=drift["dataset_drift"],
            drift_share=drift["drift_share"],
            drifted_features=drift["drifted_features"],
            checked_batches=drift["current"].get("batches", []),
        ),
    )


def start_outdated_refresh(lock: threading.Lock, settings: Settings) -> bool:
    """Refresh the outdated-packages cache in a background thread (one at a time)."""
    if not lock.acquire(blocking=False):
        return False

    def work() -> None:
        try:
            refresh_outdated(settings)
        finally:
            lock.release()

    threading.Thread(target=work, name="beryl-outdated", daemon=True).start()
    return True
