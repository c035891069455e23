"""``POST /prediction``: score records given as JSON, as a CSV body, or as a workspace file."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect

from beryl._io import is_utf8
from beryl.api.app import ApiError
from beryl.api.deps import HolderDep, SettingsDep
from beryl.api.holder import LoadedModel
from beryl.api.metrics import ApiMetrics
from beryl.api.schemas import PredictionResponse, error_responses
from beryl.cleaning import clean_features, read_csv_bytes
from beryl.config import Settings
from beryl.errors import SchemaError
from beryl.schema import Schema

router = APIRouter(tags=["prediction"])
_INLINE_ROWS = 64
JSON_TYPES = frozenset({"application/json", ""})  # no Content-Type at all: JSON
CSV_TYPES = frozenset({"text/csv", "application/csv"})
# JSONResponse's own settings, in an encoder made once (json.dumps makes one per call).
_ENCODER = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"))

_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            # Filled in by the app factory: the records' fields are the production model's.
            "application/json": {"schema": {"$ref": "#/components/schemas/PredictionRequest"}},
            "text/csv": {"schema": {"type": "string"}},
        },
    }
}


@router.post(
    "/prediction",
    response_model=PredictionResponse,
    responses=error_responses(400, 403, 404, 413, 415, 422, 503),
    openapi_extra=_BODY,
)
async def prediction(request: Request, settings: SettingsDep, holder: HolderDep) -> Any:
    """Predict attrition for records (JSON), a CSV body, or ``file_location`` in the workspace."""
    loaded = holder.get()
    try:
        body = await request.body()
    except ClientDisconnect:  # the caller went away mid-request: nobody to answer
        return Response(status_code=499)
    content_type = media_type(request.headers.get("content-type", ""))
    data: pd.DataFrame | list[dict[str, Any]]
    if content_type in CSV_TYPES:
        data = _frame_from_csv(body, loaded.schema, "request body", settings)
    elif content_type in JSON_TYPES:
        data = _frame_from_json(body, loaded.schema, settings)
    else:
        raise ApiError(
            415,
            f"unsupported content type {content_type!r}",
            "send application/json ({'records': [...]} or {'file_location': ...}) or text/csv",
        )
    return await respond(loaded, data, request.app.state.metrics)


def media_type(content_type: str) -> str:
    """``Content-Type`` without parameters, lower case: ``application/json; charset=utf-8`` ->
    ``application/json``."""
    return content_type.split(";")[0].strip().lower()


async def respond(
    loaded: LoadedModel, data: pd.DataFrame | list[dict[str, Any]], metrics: ApiMetrics
) -> JSONResponse:
    """Score validated records or a frame, count the predictions, and build the answer."""
    if isinstance(data, list) and len(data) <= _INLINE_ROWS and loaded.compiled is not None:
        answer = predict(loaded, data)  # microseconds: a thread hop would cost more
    else:
        answer = await run_in_threadpool(predict, loaded, data)
    metrics.count_predictions(answer["predictions"])
    # Built here, not by FastAPI: the answer's shape is fixed, so skip re-validating it.
    return _Answer(answer)


class _Answer(JSONResponse):
    def render(self, content: Any) -> bytes:
        return _ENCODER.encode(content).encode("utf-8")


def predict(loaded: LoadedModel, data: pd.DataFrame | list[dict[str, Any]]) -> dict[str, Any]:
    """Predictions and positive-class probabilities of one model snapshot.

    Validated JSON records go straight to the compiled model (no DataFrame); frames from CSV go
    to its vectorised path; a model that does not compile is called as the pipeline.
    """
    try:
        if loaded.compiled is not None:
            compiled = loaded.compiled
            predictions, probabilities = (
                compiled.predict(data) if isinstance(data, list) else compiled.predict_frame(data)
            )
            return {
                "predictions": predictions,
                "probabilities": probabilities,
                "model_version": loaded.version,
            }
        frame = frame_from_rows(data, loaded.schema) if isinstance(data, list) else data
        return _predict_pipeline(loaded, frame)
    except ValueError as exc:
        # Finite but extreme numbers can overflow once the model scales them.
        raise ApiError(
            422,
            "the model cannot score these records",
            f"{exc} (send numbers of a realistic magnitude)",
        ) from exc


def _predict_pipeline(loaded: LoadedModel, frame: pd.DataFrame) -> dict[str, Any]:
    model = loaded.model
    classes = list(model.classes_)
    proba = model.predict_proba(frame)
    positive = classes.index(loaded.schema.positive_label)
    binary = len(classes) == 2
    chosen = model.predict(frame) if binary else [classes[i] for i in proba.argmax(axis=1)]
    predictions = [_plain(label) for label in chosen]
    return {
        "predictions": predictions,
        "probabilities": proba[:, positive].astype(float).tolist(),
        "model_version": loaded.version,
    }


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def _frame_from_json(
    body: bytes, schema: Schema, settings: Settings
) -> pd.DataFrame | list[dict[str, Any]]:
    payload = json_request(body, schema)
    if "file_location" in payload:
        location = payload["file_location"]
        if not isinstance(location, str) or not location.strip():
            raise ApiError(
                422, "file_location must be a non-empty string", {"field": "file_location"}
            )
        path = _inside_workspace(location, settings)
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise ApiError(422, f"cannot read {location}: {exc.strerror}") from exc
        return _frame_from_csv(data, schema, location, settings)
    return rows_from_records(payload["records"], record_plan(schema), settings.api.max_records)


def json_request(body: bytes, schema: Schema) -> dict[str, Any]:
    """A JSON body parsed: an object holding exactly one of ``records`` or ``file_location``."""
    try:
        payload = json.loads(body or b"null")
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(400, "request body is not valid JSON", str(exc)) from exc
    except RecursionError as exc:
        raise ApiError(400, "request body is nested too deeply", str(exc)) from exc
    if not isinstance(payload, dict) or not (
        {"records"} <= payload.keys() or "file_location" in payload
    ):
        raise ApiError(
            422,
            "expected a JSON object with 'records' (a list of objects) or 'file_location'",
            {"example": {"records": [{c: None for c in schema.features}]}},
        )
    if set(payload) - {"records", "file_location"} or len(payload) != 1:
        raise ApiError(422, "send exactly one of 'records' or 'file_location'")
    return payload


def _inside_workspace(location: str, settings: Settings) -> Path:
    """Resolve ``location`` (relative to the workspace) and refuse anything outside it."""
    root = settings.root.resolve()
    candidate = Path(location)
    if "\x00" in location:
        raise ApiError(422, "file_location contains a NUL byte", {"field": "file_location"})
    if not is_utf8(location):
        raise ApiError(
            422, "file_location contains an unpaired surrogate", {"field": "file_location"}
        )
    path = candidate if candidate.is_absolute() else root / candidate
    if not Path(os.path.normpath(path)).is_relative_to(root):
        raise ApiError(
            403,
            "file_location must name a file inside the workspace",
            {"field": "file_location", "workspace": str(root)},
        )
    try:
        real = path.resolve(strict=True)
    except (FileNotFoundError, NotADirectoryError) as exc:
        raise ApiError(
            404, f"no file {location} in the workspace", {"field": "file_location"}
        ) from exc
    except (OSError, RuntimeError) as exc:
        raise ApiError(422, f"cannot resolve {location}", {"field": "file_location"}) from exc
    if not real.is_relative_to(root):
        raise ApiError(
            403,
            "file_location must name a file inside the workspace",
            {"field": "file_location", "workspace": str(root)},
        )
    if not real.is_file():
        raise ApiError(422, f"{location} is not a file", {"field": "file_location"})
    return real


def _frame_from_csv(data: bytes, schema: Schema, source: str, settings: Settings) -> pd.DataFrame:
    try:
        raw = read_csv_bytes(data, source, schema.text_columns)
        frame = clean_features(raw, schema, source)
    except SchemaError as exc:
        raise ApiError(422, exc.message, exc.hint) from exc
    _check_count(len(frame), settings.api.max_records)
    return frame


def _check_count(count: int, limit: int) -> None:
    if count > limit:
        raise ApiError(
            413,
            f"{count} records in one request; the limit is {limit}",
            "split the request, or raise api.max_records",
        )


# Each feature with the function that checks and converts its JSON value (one plan per model).
RecordPlan = tuple[tuple[str, Callable[[Any, int, str], Any]], ...]


def record_plan(schema: Schema) -> RecordPlan:
    """How to read a record for this schema: each feature and its converter, in model order."""
    numeric = set(schema.numeric)
    return tuple((c, _number if c in numeric else _category) for c in schema.features)


def rows_from_records(records: Any, plan: RecordPlan, limit: int) -> list[dict[str, Any]]:
    """Validate JSON records against the model's features; errors name the record and field."""
    if not isinstance(records, list) or not records:
        raise ApiError(422, "'records' must be a non-empty list of objects", {"field": "records"})
    _check_count(len(records), limit)
    rows = []
    for index, record in enumerate(records):
        if not isinstance(record, dict):
            raise ApiError(
                422, f"records[{index}] must be an object", {"field": f"records[{index}]"}
            )
        row = {}
        for column, convert in plan:
            if column not in record:
                raise _refused(index, column, "is missing")
            row[column] = convert(record[column], index, column)
        rows.append(row)
    return rows


def frame_from_rows(rows: list[dict[str, Any]], schema: Schema) -> pd.DataFrame:
    """Validated rows as the frame the pipeline expects."""
    frame = pd.DataFrame(rows, columns=schema.features)
    for column in schema.numeric:
        frame[column] = frame[column].astype("float64")
    return frame


def _refused(index: int, column: str, problem: str) -> ApiError:
    field = f"records[{index}].{column}"
    return ApiError(422, f"{field} {problem}", {"field": field})


def _number(value: Any, index: int, column: str) -> float:
    if value is None:
        return math.nan
    if isinstance(value, bool):
        raise _refused(index, column, "must be a number, not true/false")
    if isinstance(value, int | float):
        try:
            number = float(value)
        except OverflowError:  # an integer beyond the float range
            number = math.inf
    elif isinstance(value, str):
        text = value.strip()
        if not text:
            return math.nan
        try:
            number = float(text)
        except ValueError as exc:
            raise _refused(index, column, f"must be a number, got {value!r}") from exc
    else:
        raise _refused(index, column, "must be a number")
    if math.isinf(number):
        raise _refused(index, column, "must be finite")
    return number


def _category(value: Any, index: int, column: str) -> Any:
    if value is None:
        return np.nan
    if isinstance(value, str):
        if not is_utf8(value):
            raise _refused(index, column, "contains an unpaired surrogate")
        return value.strip() or np.nan
    if isinstance(value, bool | int | float):
        return str(value)
    raise _refused(index, column, "must be a string, number or null")
