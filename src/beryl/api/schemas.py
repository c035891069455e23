"""Request and response bodies of the API (kept apart from the domain objects)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class RecordsRequest(BaseModel):
    """Rows to score, as JSON objects keyed by column name."""

    model_config = ConfigDict(extra="forbid")

    records: list[dict[str, Any]] = Field(
        ...,
        min_length=1,
        examples=[
            [
                {
                    "corporation": "abcd",
                    "lastmonth_activity": 80,
                    "lastyear_activity": 1200,
                    "number_of_employees": 25,
                }
            ]
        ],
    )


class FileRequest(BaseModel):
    """A CSV file inside the workspace, relative to the folder of config.json."""

    model_config = ConfigDict(extra="forbid")

    file_location: str = Field(..., min_length=1, examples=["testdata/testdata.csv"])


class PredictionResponse(BaseModel):
    predictions: list[Any]
    probabilities: list[float]
    model_version: str


class ScoringResponse(BaseModel):
    model_version: str
    f1: float | None
    precision: float | None = None
    recall: float | None = None
    accuracy: float | None = None
    roc_auc: float | None = None
    confusion_matrix: list[list[int]] | None = None
    n: int | None = None
    scored_at: str | None = None


class ColumnStats(BaseModel):
    mean: float | None
    median: float | None
    std: float | None
    count: int
    min: float | None
    max: float | None


class SummaryStatsResponse(BaseModel):
    model_version: str | None
    rows: int
    computed_at: str
    columns: dict[str, ColumnStats]


class OutdatedPackage(BaseModel):
    module: str
    installed: str
    latest: str
    outdated: bool | None


class DiagnosticsResponse(BaseModel):
    model_version: str | None
    missing_percent: dict[str, float]
    timings: dict[str, float | None]
    outdated_packages: list[OutdatedPackage]
    outdated_checked_at: str | None


class HealthResponse(BaseModel):
    status: str


class ReadyResponse(BaseModel):
    ready: bool
    model_version: str | None


class ErrorResponse(BaseModel):
    error: str
    detail: Any = None
