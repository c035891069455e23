"""``POST /prediction``: score records given as JSON, as a CSV body, or as a workspace file.

The original system's request shapes are answered too: a bare JSON list of records (answered as
``{"records": [...]}`` is, by ``json_request``; the fast path leaves it to this route) and
``GET /prediction?filename=PATH`` (answered as ``{"file_location": PATH}`` is, by
``prediction_of_file``).

Records are predicted by ``beryl.model.predict.predict`` (the one decision rule), here and in the
fast path in front of FastAPI (``beryl.api.fastpath``), which answers through ``respond``.

With ``explain`` (``"explain": k`` in a JSON body, or ``?explain=k`` for any body) each record
also gets its reason codes (``beryl.model.predict.explain``) under ``explanations``: the base
value, its logit for the positive label and the k features that move it most, with their exact
contributions. Without it the answer is exactly what it was before reasons existed.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from beryl._io import is_utf8
from beryl.api import jsoncodec
from beryl.api.app import ApiError
from beryl.api.deps import HolderDep, SettingsDep
from beryl.api.holder import LoadedModel
from beryl.api.metrics import ApiMetrics
from beryl.api.schemas import PredictionResponse, error_responses
from beryl.config import Settings
from beryl.data.cleaning import clean_features
from beryl.data.confined import ConfinedError, RootUnavailableError, read_confined
from beryl.data.csvfiles import TooManyRowsError, read_csv_bytes
from beryl.data.schema import Schema
from beryl.errors import SchemaError
from beryl.model.predict import ExplainError, explain_count, explain_dicts, predict

router = APIRouter(tags=["prediction"])
_INLINE_ROWS = 64
_EXPLAIN_COST = 8  # explaining a record costs about as much as predicting 8 (no DataFrame)
_INLINE_JSON_BYTES = 64 * 1024  # parsed on the event loop below this size, else on a thread
# JSON must say so: a browser sends a cross-site POST without a Content-Type (or as text/plain)
# with no preflight, and such a request must not make the server read a workspace file.
JSON_TYPES = frozenset({"application/json"})
CSV_TYPES = frozenset({"text/csv", "application/csv"})
_JSON_KEYS = frozenset({"records", "file_location", "explain"})

_BODY = {
    "parameters": [
        {
            "name": "explain",
            "in": "query",
            "required": False,
            "description": "Reason codes: the number of features per record whose contributions "
            "to the logit of the positive label are given, largest first (more than the model "
            "has gives all). For any body, and the way for a CSV body; a JSON body may give it "
            "as its 'explain' instead (not both).",
            "schema": {"type": "integer", "minimum": 1},
        }
    ],
    "requestBody": {
        "required": True,
        "content": {
            # Filled in by the app factory: the records' fields are the production model's.
            "application/json": {"schema": {"$ref": "#/components/schemas/PredictionRequest"}},
            "text/csv": {"schema": {"type": "string"}},
        },
    },
}


@router.post(
    "/prediction",
    response_model=PredictionResponse,
    responses=error_responses(400, 403, 404, 413, 415, 422, 503),
    openapi_extra=_BODY,
)
async def prediction(request: Request, settings: SettingsDep, holder: HolderDep) -> Any:
    """Predict attrition for records (JSON), a CSV body, or ``file_location`` in the workspace.

    Parsing a CSV body, reading a file and parsing a large JSON body run on a worker thread,
    never on the event loop.
    """
    content_type = media_type(request.headers.get("content-type", ""))
    if content_type not in CSV_TYPES and content_type not in JSON_TYPES:
        raise ApiError(
            415,
            f"unsupported content type {content_type or '(none)'!r}",
            "send Content-Type: application/json ({'records': [...]} or {'file_location': ...}) "
            "or text/csv",
        )
    loaded = await holder.aget()
    asked = request.query_params.getlist("explain")
    try:
        body = await request.body()
    except ClientDisconnect:  # the caller went away mid-request: nobody to answer
        return Response(status_code=499)
    data: pd.DataFrame | list[dict[str, Any]]
    if content_type in CSV_TYPES:
        reasons = requested_reasons(None, asked, loaded)  # checked before the body is parsed
        data = await run_in_threadpool(
            _frame_from_csv, body, loaded.schema, "request body", settings
        )
    else:
        parsed, reasons = (
            _frame_from_json(body, loaded, settings, asked)
            if len(body) <= _INLINE_JSON_BYTES
            else await run_in_threadpool(_frame_from_json, body, loaded, settings, asked)
        )
        if isinstance(parsed, _FileRequest):
            data = await run_in_threadpool(
                _frame_from_file, parsed.location, loaded.schema, settings
            )
        else:
            data = parsed
    return await respond(loaded, data, request.app.state.metrics, reasons)


# Fetch metadata a browser sends with a request made by a page: from the API's own pages
# (same-origin) or typed by the user (none); anything else comes from another site's page.
_OWN_FETCHES = frozenset({"same-origin", "none"})


@router.get("/prediction", include_in_schema=False)
async def prediction_of_file(request: Request, settings: SettingsDep, holder: HolderDep) -> Any:
    """The original system's ``GET /prediction?filename=PATH``: the CSV file at ``PATH`` in the
    workspace, confined, limited and answered exactly as ``{"file_location": PATH}`` is.

    Without ``filename`` the answer is the 405 a GET got before this route existed. A browser
    page on another site may send a GET without a preflight, so a request whose
    ``Sec-Fetch-Site`` says it came from one is refused (403) before any file is opened.
    Left out of the OpenAPI document: ``POST`` with ``file_location`` is the documented form.
    """
    names = request.query_params.getlist("filename")
    if not names:
        raise StarletteHTTPException(405, headers={"Allow": "POST"})
    if len(names) > 1:
        raise ApiError(422, "filename is given more than once: give it once", {"field": "filename"})
    location = names[0]
    if not location.strip():
        raise ApiError(422, "filename must name a CSV file in the workspace", {"field": "filename"})
    site = request.headers.get("sec-fetch-site")
    if site is not None and site.lower() not in _OWN_FETCHES:
        raise ApiError(
            403,
            f"GET /prediction?filename= is refused from a page on another site "
            f"(Sec-Fetch-Site: {site[:40]!r})",
            {"field": "filename", "problem": "POST {'file_location': ...} as application/json"},
        )
    loaded = await holder.aget()
    reasons = requested_reasons(None, request.query_params.getlist("explain"), loaded)
    data = await run_in_threadpool(_frame_from_file, location, loaded.schema, settings, "filename")
    return await respond(loaded, data, request.app.state.metrics, reasons)


def media_type(content_type: str) -> str:
    """``Content-Type`` without parameters, lower case: ``application/json; charset=utf-8`` ->
    ``application/json``."""
    return content_type.split(";")[0].strip().lower()


async def respond(
    loaded: LoadedModel,
    data: pd.DataFrame | list[dict[str, Any]],
    metrics: ApiMetrics,
    reasons: int | None = None,
) -> JSONResponse:
    """``scored``, as the answer of ``/prediction``."""
    # Built here, not by FastAPI: the answer's shape is fixed, so skip re-validating it.
    return _Answer(await scored(loaded, data, metrics, reasons))


async def scored(
    loaded: LoadedModel,
    data: pd.DataFrame | list[dict[str, Any]],
    metrics: ApiMetrics,
    reasons: int | None = None,
) -> dict[str, Any]:
    """Score validated records or a frame, count the predictions and record them for live
    monitoring: the answer's content; ``reasons``: how many reason codes per record (checked by
    ``requested_reasons``), or None."""
    if (
        isinstance(data, list)
        and len(data) * (1 if reasons is None else _EXPLAIN_COST) <= _INLINE_ROWS
        and loaded.compiled is not None
    ):
        # Microseconds: a thread hop would cost more.
        answer = _predictions(loaded, data, reasons)
    else:
        answer = await run_in_threadpool(_predictions, loaded, data, reasons)
    metrics.count_predictions(answer["predictions"])
    live = metrics.live  # live monitoring: microseconds, no I/O (beryl.monitoring.live)
    if live is not None:
        live.observe(
            loaded.version, loaded.schema, data, answer["predictions"], answer["probabilities"]
        )
    return answer


class _Answer(JSONResponse):
    def render(self, content: Any) -> bytes:
        return jsoncodec.dumps(content)


def answer_headers(body: bytes) -> list[tuple[bytes, bytes]]:
    """The headers ``respond``'s response sends with ``body``: the same names, values and order."""
    return [(b"content-length", b"%d" % len(body)), (b"content-type", b"application/json")]


def _predictions(
    loaded: LoadedModel, data: pd.DataFrame | list[dict[str, Any]], reasons: int | None = None
) -> dict[str, Any]:
    """The answer of one model snapshot: predictions and positive-class probabilities, and
    with ``reasons`` each record's reason codes.

    Validated JSON records go to the compiled model when there is one (no DataFrame), frames
    from CSV to its vectorised path; a model that does not fold is scored as its data-only form.
    """
    try:
        answer = predict(loaded.model, data, compiled=loaded.compiled)
        explained = None if reasons is None else explain_dicts(loaded.model, data, reasons)
    except ValueError as exc:
        # Finite but extreme numbers can overflow once the model scales them.
        raise ApiError(
            422,
            "the model cannot score these records",
            f"{exc} (send numbers of a realistic magnitude)",
        ) from exc
    if explained is None:
        return {
            "predictions": answer.labels,
            "probabilities": answer.chances,
            "model_version": loaded.version,
        }
    return {
        "predictions": answer.labels,
        "probabilities": answer.chances,
        "explanations": explained,
        "model_version": loaded.version,
    }


def requested_reasons(value: Any, query: list[str], loaded: LoadedModel) -> int | None:
    """How many reason codes a request asks for: ``value``, its JSON body's ``explain`` (None
    when absent), or ``query``, the ``explain`` values of its query string; None: none asked.

    A 422 naming the field for a count that is not a whole number of at least 1, for both
    forms or the parameter twice, and for a model with more than two classes.
    """
    if value is None and not query:
        return None
    if len(query) > 1 or (value is not None and query):
        raise ApiError(
            422,
            "explain is given more than once: give it in the JSON body or the query string, once",
            {"field": "explain"},
        )
    try:
        count = explain_count(query[0] if query else value)
    except ExplainError as exc:
        raise ApiError(422, f"explain {exc}", {"field": "explain"}) from exc
    classes = loaded.model.classes
    if len(classes) != 2:
        raise ApiError(
            422,
            f"explain needs a two-class model; the production model {loaded.version} has "
            f"{len(classes)} classes",
            {"field": "explain", "classes": list(classes)},
        )
    return count


@dataclass(frozen=True)
class _FileRequest:
    """A valid ``file_location`` request: the file is read on a worker thread."""

    location: str


def _frame_from_json(
    body: bytes, loaded: LoadedModel, settings: Settings, query: list[str]
) -> tuple[list[dict[str, Any]] | _FileRequest, int | None]:
    """The records (or the file) a JSON body names, and how many reasons it asks for."""
    schema = loaded.schema
    payload = json_request(body, schema)
    reasons = requested_reasons(payload.get("explain"), query, loaded)
    if "file_location" in payload:
        location = payload["file_location"]
        if not isinstance(location, str) or not location.strip():
            raise ApiError(
                422, "file_location must be a non-empty string", {"field": "file_location"}
            )
        return _FileRequest(location), reasons
    rows = rows_from_records(payload["records"], record_plan(schema), settings.api.max_records)
    return rows, reasons


# A refusal of ``read_confined`` as an answer: whose fault, and in what words ({field}: the
# request's name for the file, ``file_location`` or the original system's ``filename``).
_REFUSALS: dict[str, tuple[int, str]] = {
    "outside": (403, "{field} must name a file inside the workspace"),
    "link": (403, "{field} must name a regular file inside the workspace, not a link"),
    "not-found": (404, "no such file in the workspace"),
    "too-large": (413, "{field} names a file over api.max_file_bytes"),
    "bad-name": (422, "{field} is not a usable file name"),
    "not-a-file": (422, "{field} must name a regular file"),
    "unreadable": (422, "{field} names a file the server cannot read"),
}


def _frame_from_file(
    location: str, schema: Schema, settings: Settings, field: str = "file_location"
) -> pd.DataFrame:
    """Read a workspace file once, confined on its descriptor, bounded by api.max_file_bytes;
    refusals name the request's ``field``."""
    try:
        data = read_confined(settings.root, location, max_bytes=settings.api.max_file_bytes)
    except RootUnavailableError as exc:
        raise ApiError(503, "the server cannot open its workspace", str(exc)) from exc
    except ConfinedError as exc:
        status, error = _REFUSALS[exc.kind]
        error = error.format(field=field)
        detail: dict[str, Any] = {"field": field, "problem": str(exc)}
        if exc.kind in ("outside", "link"):
            detail["workspace"] = str(settings.root)
        if exc.kind == "too-large":
            detail["problem"] = f"{exc.message} (send a smaller file, or raise api.max_file_bytes)"
        raise ApiError(status, error, detail) from exc
    return _frame_from_csv(data, schema, location, settings)


def json_request(body: bytes, schema: Schema, *, bare_list: bool = True) -> dict[str, Any]:
    """A JSON body parsed: an object holding exactly one of ``records`` or ``file_location``,
    and optionally ``explain``.

    A bare list (the original system's body, ``[{...}, {...}]``) is taken as its ``records``:
    the same limits and the same errors, which name ``records[i]``; ``bare_list=False`` refuses
    it as any body that is not an object.
    """
    try:
        payload = jsoncodec.loads(body or b"null")
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(400, "request body is not valid JSON", str(exc)) from exc
    except RecursionError as exc:
        raise ApiError(400, "request body is nested too deeply", str(exc)) from exc
    if bare_list and isinstance(payload, list):
        return {"records": payload}
    if not isinstance(payload, dict) or not (
        {"records"} <= payload.keys() or "file_location" in payload
    ):
        raise ApiError(
            422,
            "expected a JSON object with 'records' (a list of objects) or 'file_location'",
            {"example": {"records": [{c: None for c in schema.features}]}},
        )
    if set(payload) - _JSON_KEYS or ("records" in payload) == ("file_location" in payload):
        raise ApiError(422, "send exactly one of 'records' or 'file_location'")
    return payload


def _frame_from_csv(data: bytes, schema: Schema, source: str, settings: Settings) -> pd.DataFrame:
    limit = settings.api.max_records
    try:
        raw = read_csv_bytes(data, source, schema.text_columns, max_rows=limit)
        frame = clean_features(raw, schema, source)
    except TooManyRowsError as exc:
        raise ApiError(
            413,
            f"{source}: more than {limit} records in one request; the limit is {limit}",
            "split the request, or raise api.max_records",
        ) from exc
    except SchemaError as exc:
        raise ApiError(422, exc.message, exc.hint) from exc
    _check_count(len(frame), limit)
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
    return tuple((c, number_value if c in numeric else category_value) for c in schema.features)


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


Refusal = Callable[[int, str, str], ApiError]
"""The 422 for value ``index`` of ``column`` (a record's, a tensor's) and its problem."""


def _refused(index: int, column: str, problem: str) -> ApiError:
    field = f"records[{index}].{column}"
    return ApiError(422, f"{field} {problem}", {"field": field})


def number_value(value: Any, index: int, column: str, refused: Refusal = _refused) -> float:
    """A numeric feature's value (None and blank: missing); the rules of every route."""
    if value is None:
        return math.nan
    if isinstance(value, bool):
        raise refused(index, column, "must be a number, not true/false")
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
            raise refused(index, column, f"must be a number, got {value!r}") from exc
    else:
        raise refused(index, column, "must be a number")
    if math.isinf(number):
        raise refused(index, column, "must be finite")
    return number


def category_value(value: Any, index: int, column: str, refused: Refusal = _refused) -> Any:
    """A categorical feature's value (None and blank: missing); the rules of every route."""
    if value is None:
        return np.nan
    if isinstance(value, str):
        if not is_utf8(value):
            raise refused(index, column, "contains an unpaired surrogate")
        return value.strip() or np.nan
    if isinstance(value, bool | int | float):
        return str(value)
    raise refused(index, column, "must be a string, number or null")
