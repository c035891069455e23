"""Monitoring over time: data drift, run history, Prometheus metrics and the dashboard."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, Response
from starlette.concurrency import run_in_threadpool

from beryl.api.app import ApiError
from beryl.api.deps import SettingsDep
from beryl.api.routes.monitoring import history_of
from beryl.api.schemas import DriftResponse, ErrorResponse, HistoryResponse
from beryl.monitoring.history import History

router = APIRouter(tags=["monitoring"])


@router.get(
    "/drift",
    response_model=DriftResponse,
    responses={404: {"description": "No drift check yet", "model": ErrorResponse}},
)
async def drift(settings: SettingsDep) -> Any:
    """Data drift of the latest batch against the production model's training data."""
    latest = await run_in_threadpool(history_of(settings).latest_drift)
    if latest is None:
        raise ApiError(
            404,
            "no data-drift check yet",
            "drift is checked when a pass ingests a new batch after the first model",
        )
    return latest


@router.get("/history", response_model=HistoryResponse)
async def history(
    settings: SettingsDep, limit: Annotated[int, Query(ge=1, le=500)] = 50
) -> HistoryResponse:
    """Passes, scores and promotions over time (newest runs first; scores oldest first)."""
    return await run_in_threadpool(_history, history_of(settings), limit)


def _history(records: History, limit: int) -> HistoryResponse:
    runs = [
        {
            "id": r.id,
            "command": r.command,
            "started": r.started,
            "ended": r.ended,
            "duration_s": r.duration_s,
            "status": r.status,
            "summary": r.summary,
            "steps": [
                {"name": s.name, "duration_s": s.duration_s, "status": s.status} for s in r.steps
            ],
        }
        for r in records.runs(limit)
    ]
    return HistoryResponse(
        runs=runs, scores=records.scores(limit * 3), promotions=records.promotions(limit)
    )


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}},
)
async def metrics(request: Request) -> Response:
    """Prometheus metrics (text exposition format)."""
    body = await run_in_threadpool(request.app.state.metrics.render)
    return Response(body, media_type="text/plain; version=0.0.4; charset=utf-8")


@router.get("/dashboard", response_class=HTMLResponse)
async def dashboard(request: Request, settings: SettingsDep) -> HTMLResponse:
    """One page: model versions, F1 over time, drift, missing values, passes, confusion matrix."""
    from beryl.monitoring.dashboard import render_dashboard
    from beryl.monitoring.diagnostics import dashboard_data

    profiles = request.app.state.profiles
    page = await run_in_threadpool(
        lambda: render_dashboard(
            dashboard_data(settings, profile_of=profiles, history=history_of(settings))
        )
    )
    return HTMLResponse(page)
