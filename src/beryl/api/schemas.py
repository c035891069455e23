"""Request and response bodies of the API (kept apart from the domain objects)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from beryl.data.schema import Schema


def _explain_field() -> Any:
    """The optional ``explain`` of a JSON body."""
    return Field(
        None,
        ge=1,
        description="Reason codes: for each record, this many features with their exact "
        "contributions to the logit of the positive label, largest first (more than the model "
        "has gives all). Two-class models only.",
        examples=[3],
    )


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
    explain: int | None = _explain_field()


class FileRequest(BaseModel):
    """A CSV file inside the workspace, relative to the folder of config.json."""

    model_config = ConfigDict(extra="forbid")

    file_location: str = Field(..., min_length=1, examples=["testdata/testdata.csv"])
    explain: int | None = _explain_field()


class Reason(BaseModel):
    """One feature's contribution to a record's logit for the positive label."""

    feature: str
    value: Any = Field(None, description="the record's value; null when missing (imputed)")
    contribution: float


class Explanation(BaseModel):
    """A record's reason codes: base_value plus the contributions of all its features is its
    logit; reasons are the largest contributions by size."""

    base_value: float
    logit: float
    reasons: list[Reason]


class PredictionResponse(BaseModel):
    predictions: list[Any]
    probabilities: list[float]
    explanations: list[Explanation] | None = Field(
        None, description="one per record, only when the request asks for explain"
    )
    model_version: str


_ORIGINAL_F1 = "f1 again, under the original system's name for it"


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
    # The original system's names for the F1, for its clients: always equal to ``f1``.
    f1_score: float | None = Field(None, description=_ORIGINAL_F1)
    score: float | None = Field(None, description=_ORIGINAL_F1)


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


class DriftSummary(BaseModel):
    """The latest data-drift verdict (details at GET /drift)."""

    verdict: Literal["drifted", "not drifted", "not tested"]
    note: str | None = None  # which features were not tested, and why
    dataset_drift: bool
    drift_share: float
    drifted_features: list[str]
    checked_batches: list[str]


class ModelDriftSummary(BaseModel):
    """The latest model-drift check: production's F1 on a pass's new labelled rows against its
    recorded F1 (``verdict`` not tested, with ``note``, when the rows were too few)."""

    verdict: Literal["drifted", "not drifted", "not tested"]
    note: str | None = None
    run_id: int | None
    time: str
    version: str
    rows: int | None
    f1_new_data: float | None
    f1_recorded: float | None
    tolerance: float | None


class QuarantinedFile(BaseModel):
    """An input file refused and still in the input folder."""

    name: str
    reason: str | None
    time: str


class DiagnosticsResponse(BaseModel):
    model_version: str | None
    missing_percent: dict[str, float]
    timings: dict[str, float | None]
    # None until the package index has been asked (never "nothing outdated" before a check)
    outdated_packages: list[OutdatedPackage] | None
    outdated_checked_at: str | None
    data_drift: DriftSummary | None = None
    quarantined_files: list[QuarantinedFile] = []
    model_drift: ModelDriftSummary | None = None


class HealthResponse(BaseModel):
    status: str


class ReadyResponse(BaseModel):
    ready: bool
    model_version: str | None


class FeatureDrift(BaseModel):
    verdict: Literal["drifted", "not drifted", "not tested"]
    note: str | None = None
    drifted: bool
    test: str
    statistic: float | None
    p_value: float | None
    distance: float | None
    distance_name: str | None = None
    threshold: float | None = None


class LiveHour(BaseModel):
    """One UTC hour of what Beryl was asked, every process added up."""

    hour: str = Field(..., examples=["2026-12-03T14"])
    records: int
    predicted_positive: int
    mean_predicted_risk: float | None
    estimated_f1: float | None = Field(None, description="null below drift.min_rows records")


class LiveDrift(BaseModel):
    """Live monitoring over the last live.window_hours hours (``POST /prediction`` on every
    worker and ``beryl predict``): counters, the F1 expected from the probabilities, and drift
    of the sampled inputs against the production model's training data."""

    window_hours: int
    first_hour: str
    last_hour: str
    records: int
    predicted_positive: int
    model_versions: dict[str, int] = Field(..., description="records by the version that scored")
    production_version: str | None
    mean_predicted_risk: float | None = Field(None, description="null with risk_note")
    risk_note: str | None = None
    probability_histogram: list[int] = Field(..., description="records in 10 bins of 0.1")
    estimated_f1: float | None = Field(
        None,
        description="2TP / (2TP + FP + FN) with TP = sum of p over predicted positives, FP = "
        "sum of 1 - p over them, FN = sum of p over predicted negatives: as good as the "
        "probabilities' calibration; null with f1_note",
    )
    f1_note: str | None = None
    verdict: Literal["drifted", "not drifted", "not tested"]
    note: str | None = None  # why not tested, or which features were not
    dataset_drift: bool
    drift_share: float | None = Field(None, description="null when not tested")
    drifted_features: list[str]
    sampled_records: int
    features: dict[str, FeatureDrift]
    hours: list[LiveHour]
    files: int
    unreadable_files: list[str] = []


class DriftResponse(BaseModel):
    """Data drift of the latest batch (reference: the production model's training data), and
    of live traffic (``live``)."""

    reference: dict[str, Any]
    current: dict[str, Any]
    verdict: Literal["drifted", "not drifted", "not tested"]
    note: str | None = None  # which features were not tested, and why
    dataset_drift: bool
    drift_share: float
    drifted_features: list[str]
    features: dict[str, FeatureDrift]
    live: LiveDrift | None = None


class HistoryResponse(BaseModel):
    runs: list[dict[str, Any]]
    scores: list[dict[str, Any]]
    promotions: list[dict[str, Any]]


class ErrorResponse(BaseModel):
    error: str
    detail: Any = None


_ERROR_DESCRIPTIONS = {
    400: "The body is not valid JSON",
    403: "file_location names a file outside the workspace",
    404: "file_location names no file in the workspace",
    413: "The body is larger than api.max_body_bytes or holds more than api.max_records records",
    415: "The content type is neither JSON nor CSV",
    422: "The body or a record does not fit the model's features",
    503: "No model is in production, or no data has been ingested yet",
}


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for the error answers a route gives, each an ``ErrorResponse``."""
    return {
        status: {"description": _ERROR_DESCRIPTIONS[status], "model": ErrorResponse}
        for status in statuses
    }


def prediction_request_schema(schema: Schema | None, max_records: int) -> dict[str, Any]:
    """JSON schema of a ``POST /prediction`` JSON body; names the model's features once known."""
    records = RecordsRequest.model_json_schema()
    field = records["properties"]["records"]
    field["maxItems"] = max_records
    if schema is not None:
        field.pop("examples", None)  # the static example names the demo's columns
        number = {"anyOf": [{"type": "number"}, {"type": "null"}]}
        text = {"anyOf": [{"type": "string"}, {"type": "null"}]}
        field["items"] = {
            "type": "object",
            "title": "Record",
            "description": "Every feature of the production model; null is a missing value "
            "and other keys are ignored.",
            "properties": {
                **{column: number for column in schema.numeric},
                **{column: text for column in schema.categorical},
            },
            "required": schema.features,
            "additionalProperties": True,
        }
    return {"oneOf": [records, FileRequest.model_json_schema()]}
