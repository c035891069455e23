"""Monitoring over time: data drift, run history, Prometheus metrics and the dashboard.

Like the other routes, each reads the workspace's history and registry on a worker thread.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, Response
from starlette.concurrency import run_in_threadpool

from beryl.api.app import ApiError
from beryl.api.routes.monitoring import WorkspaceDep
from beryl.api.schemas import DriftResponse, ErrorResponse, HistoryResponse
from beryl.errors import BerylError
from beryl.monitoring.livereport import LiveReports
from beryl.monitoring.store import HistoryStore, RunRecord

router = APIRouter(tags=["monitoring"])


@router.get(
    "/drift",
    response_model=DriftResponse,
    responses={404: {"description": "No drift check yet", "model": ErrorResponse}},
)
async def drift(request: Request, workspace: WorkspaceDep) -> Any:
    """Data drift of the latest batch against the production model's training data; under
    ``live``, what Beryl was asked over the last live.window_hours hours and its drift."""
    latest = await run_in_threadpool(workspace.history.latest_drift)
    if latest is None:
        raise ApiError(
            404,
            "no data-drift check yet",
            "drift is checked when a pass ingests a new batch after the first model",
        )
    live = await run_in_threadpool(_live, request.app.state.metrics.collector.live_reports)
    return latest.to_dict() | {"live": live}


def _live(reports: LiveReports) -> dict[str, Any] | None:
    """The live summary (cached while no live file changes); None when it cannot be read,
    which leaves the batch's verdict standing."""
    try:
        return reports.summary().to_dict()
    except (BerylError, OSError, ValueError):
        return None


@router.get("/history", response_model=HistoryResponse)
async def history(
    workspace: WorkspaceDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    command: Annotated[
        str,
        Query(
            pattern=r"^[a-z][a-z-]{0,31}$",
            description='runs of this command: "run" (passes of the loop, the default), another '
            'command such as "train", or "all"',
        ),
    ] = "run",
) -> HistoryResponse:
    """Passes, scores and promotions over time (newest runs first; scores oldest first)."""
    return await run_in_threadpool(_history, workspace.history, limit, command)


def _history(records: HistoryStore, limit: int, command: str) -> HistoryResponse:
    return HistoryResponse(
        runs=[_run(run) for run in records.runs(limit, None if command == "all" else command)],
        scores=[score.to_dict() for score in records.scores(limit * 3)],
        promotions=[move.to_dict() for move in records.promotions(limit)],
    )


def _run(run: RunRecord) -> dict[str, Any]:
    return {
        "id": run.id,
        "command": run.command,
        "started": run.started,
        "ended": run.ended,
        "duration_s": run.duration_s,
        "status": run.status,
        "summary": run.summary,
        "steps": [
            {"name": s.name, "duration_s": s.duration_s, "status": s.status} for s in run.steps
        ],
    }


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}},
)
async def metrics(request: Request) -> Response:
    """Prometheus metrics (text exposition format)."""
    metrics = request.app.state.metrics
    metrics.flush()  # this process's latest counts, moved on the loop that gathers them
    body = await run_in_threadpool(metrics.render)
    return Response(body, media_type="text/plain; version=0.0.4; charset=utf-8")


@router.get("/dashboard", response_class=HTMLResponse)
async def dashboard(request: Request, workspace: WorkspaceDep) -> HTMLResponse:
    """One page: the production model, drift of data, model and live traffic over time, the last
    decision, input files, dataset growth, missing values, passes and the confusion matrix."""
    from beryl.monitoring.dashboard import render_dashboard
    from beryl.monitoring.overview import dashboard_data

    profiles = request.app.state.profiles
    live = request.app.state.metrics.collector.live_reports  # cached: re-read on a change only
    page = await run_in_threadpool(
        lambda: render_dashboard(
            dashboard_data(workspace, profile_of=profiles, live_of=lambda _: live.summary())
        )
    )
    return HTMLResponse(page)
