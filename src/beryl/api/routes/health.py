"""Liveness and readiness."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from beryl.api.deps import HolderDep
from beryl.api.schemas import HealthResponse, ReadyResponse
from beryl.errors import ModelError

router = APIRouter(tags=["health"])


@router.get("/health", response_model=HealthResponse)
async def health() -> HealthResponse:
    """The server is up (no model needed)."""
    return HealthResponse(status="ok")


@router.get(
    "/ready",
    response_model=ReadyResponse,
    responses={503: {"model": ReadyResponse, "description": "No model is loaded yet"}},
)
async def ready(holder: HolderDep) -> JSONResponse:
    """A production model is loaded and verified; 503 until then."""
    try:
        loaded = await holder.aget()
    except ModelError:
        return JSONResponse(ReadyResponse(ready=False, model_version=None).model_dump(), 503)
    return JSONResponse(ReadyResponse(ready=True, model_version=loaded.version).model_dump())
