"""Answers from what the loop recorded: scoring, summary statistics, diagnostics.

Each route reads the workspace (``app.state.workspace``) on a worker thread, never on the event
loop, and writes nothing to it: a read-only workspace can be served.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from starlette.concurrency import run_in_threadpool

from beryl.api.app import ApiError
from beryl.api.deps import HolderDep
from beryl.api.holder import ModelHolder
from beryl.api.schemas import (
    ColumnStats,
    DiagnosticsResponse,
    DriftSummary,
    ModelDriftSummary,
    OutdatedPackage,
    QuarantinedFile,
    ScoringResponse,
    SummaryStatsResponse,
    error_responses,
)
from beryl.errors import ModelError
from beryl.monitoring.diagnostics import (
    OutdatedCache,
    ProfileCache,
    latest_model_drift,
    quarantined_files,
    recorded_timings,
)
from beryl.workspace import Workspace

router = APIRouter(tags=["monitoring"], responses=error_responses(503))


async def get_workspace(request: Request) -> Workspace:
    """The app's workspace; its history waits at most ``api.db_timeout_s`` for a writer."""
    workspace: Workspace = request.app.state.workspace
    return workspace


WorkspaceDep = Annotated[Workspace, Depends(get_workspace)]


@router.get("/scoring", response_model=ScoringResponse)
async def scoring(holder: HolderDep) -> ScoringResponse:
    """F1 (and the other metrics) of the production model on the test data, as last scored;
    the F1 also as ``f1_score`` and ``score``, the names the original system's clients read."""
    loaded = await holder.aget()
    metrics = loaded.card.metrics
    if metrics.get("f1") is None:
        raise ApiError(503, f"{loaded.version} has not been scored yet", "run `beryl score`")
    return ScoringResponse(
        model_version=loaded.version,
        **{k: metrics.get(k) for k in ScoringResponse.model_fields if k not in _NOT_METRICS},
        f1_score=metrics["f1"],
        score=metrics["f1"],
    )


_NOT_METRICS = frozenset({"model_version", "f1_score", "score"})


async def _version(holder: ModelHolder) -> str | None:
    try:
        return (await holder.aget()).version
    except ModelError:  # no model, or one that fails its checks: these answers do not need it
        return None


@router.get("/summarystats", response_model=SummaryStatsResponse)
async def summarystats(
    request: Request, workspace: WorkspaceDep, holder: HolderDep
) -> SummaryStatsResponse:
    """Mean, median, std, count, min and max of each numeric column of the dataset."""
    profiles: ProfileCache = request.app.state.profiles
    data = await run_in_threadpool(profiles, workspace)
    return SummaryStatsResponse(
        model_version=await _version(holder),
        rows=data["rows"],
        computed_at=data["computed_at"],
        columns={k: ColumnStats.model_validate(v) for k, v in data["summary_stats"].items()},
    )


@router.get("/diagnostics", response_model=DiagnosticsResponse)
async def diagnostics(
    request: Request, workspace: WorkspaceDep, holder: HolderDep
) -> DiagnosticsResponse:
    """Missing values, step timings, outdated dependencies and the production version."""
    profiles: ProfileCache = request.app.state.profiles
    outdated: OutdatedCache = request.app.state.outdated
    version = await _version(holder)

    def read() -> DiagnosticsResponse:
        data = profiles(workspace)
        table = outdated.current()
        drift = workspace.history.latest_drift()
        checked = latest_model_drift(workspace.history)
        return DiagnosticsResponse(
            model_version=version,
            missing_percent=data["missing_percent"],
            timings=recorded_timings(workspace.history),
            outdated_packages=[OutdatedPackage(**row) for row in table["packages"]]
            if table is not None
            else None,
            outdated_checked_at=None if table is None else table["checked_at"],
            data_drift=None
            if drift is None
            else DriftSummary(
                verdict=drift.verdict,  # type: ignore[arg-type]  # one of the three
                note=drift.note,
                dataset_drift=drift.dataset_drift,
                drift_share=drift.drift_share,
                drifted_features=list(drift.drifted_features),
                checked_batches=list(drift.current.batches),
            ),
            quarantined_files=[QuarantinedFile(**q) for q in quarantined_files(workspace)],
            model_drift=None if checked is None else ModelDriftSummary(**asdict(checked)),
        )

    return await run_in_threadpool(read)
