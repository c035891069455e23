"""The Open Inference Protocol (V2) over REST, as KServe and Triton clients speak it.

- ``GET /v2``: the server's name, version and extensions;
- ``GET /v2/health/live``, ``GET /v2/health/ready``: 200 with ``{"live": true}`` or
  ``{"ready": true}``; not ready is 503 with ``{"ready": false}`` (both open without a token,
  like ``/health`` and ``/ready``);
- ``GET /v2/models/{name}`` (and ``.../versions/{version}``): the model's metadata: its
  versions (the production version), one input tensor per feature (``FP64`` for a numeric
  feature, ``BYTES`` for a categorical one, shape ``[-1]``) and the outputs ``predictions``
  (the predicted class, as its name) and ``probabilities`` (of the positive class);
- ``GET /v2/models/{name}/ready``: 200 when the production model is loaded and verified;
- ``POST /v2/models/{name}/infer``: named input tensors, one per feature, each of shape
  ``[N]`` or ``[N, 1]`` with ``data`` flat (or nested) in JSON, or in the binary tensor
  extension (``Inference-Header-Content-Length``) that Triton's client uses by default.

The model is named ``api.model_name`` (``attrition``). A request is checked as
``/prediction`` checks its records (every feature present, numbers finite, at most
``api.max_records`` rows, the body limits of every route) and scored by the same decision rule;
an error is 4xx with ``{"error": ...}`` naming the tensor and what to do. The answer holds the
outputs asked for (all by default) as JSON, the request's ``id`` and the ``model_version``.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect

from beryl.api.app import ApiError
from beryl.api.deps import HolderDep, SettingsDep
from beryl.api.holder import LoadedModel
from beryl.api.routes.prediction import media_type, scored
from beryl.api.schemas import error_responses
from beryl.api.tensors import HEADER_LENGTH, parse
from beryl.errors import ModelError

router = APIRouter(prefix="/v2", tags=["open inference protocol"])


class ServerMetadata(BaseModel):
    name: str
    version: str
    extensions: list[str]


class Live(BaseModel):
    live: bool


class Ready(BaseModel):
    ready: bool


class ModelReady(BaseModel):
    name: str
    ready: bool


class TensorMetadata(BaseModel):
    name: str
    datatype: str
    shape: list[int]


class ModelMetadata(BaseModel):
    name: str
    versions: list[str]
    platform: str
    inputs: list[TensorMetadata]
    outputs: list[TensorMetadata]


class OutputTensor(BaseModel):
    name: str
    datatype: str
    shape: list[int]
    data: list[str] | list[float]


class InferResponse(BaseModel):
    model_name: str
    model_version: str
    id: str | None = None
    outputs: list[OutputTensor]


_TENSOR = {
    "type": "object",
    "required": ["name", "shape", "datatype", "data"],
    "properties": {
        "name": {"type": "string", "description": "a feature of the model"},
        "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}, "maxItems": 2},
        "datatype": {"type": "string", "enum": ["FP64", "FP32", "INT64", "INT32", "BYTES"]},
        "data": {"type": "array", "items": {"anyOf": [{"type": "number"}, {"type": "string"}]}},
        "parameters": {"type": "object"},
    },
}
_INFER_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["inputs"],
                    "properties": {
                        "id": {"type": "string"},
                        "inputs": {"type": "array", "items": _TENSOR, "minItems": 1},
                        "outputs": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "required": ["name"],
                                "properties": {
                                    "name": {
                                        "type": "string",
                                        "enum": ["predictions", "probabilities"],
                                    }
                                },
                            },
                        },
                    },
                }
            }
        },
    }
}


@router.get("", response_model=ServerMetadata)
async def server_metadata(request: Request) -> dict[str, Any]:
    """The server's name, version and the protocol extensions it answers."""
    return {"name": "beryl", "version": request.app.version, "extensions": ["binary_tensor_data"]}


@router.get("/health/live", response_model=Live)
async def live() -> dict[str, bool]:
    """The server is up."""
    return {"live": True}


@router.get(
    "/health/ready",
    response_model=Ready,
    responses={503: {"model": Ready, "description": "No model is loaded yet"}},
)
async def ready(holder: HolderDep) -> JSONResponse:
    """A verified production model is loaded; 503 until then."""
    loaded = await _loaded(holder) is not None
    return JSONResponse({"ready": loaded}, 200 if loaded else 503)


@router.get("/models/{name}", response_model=ModelMetadata, responses=error_responses(404, 503))
@router.get(
    "/models/{name}/versions/{version}",
    response_model=ModelMetadata,
    responses=error_responses(404, 503),
)
async def model_metadata(
    name: str, settings: SettingsDep, holder: HolderDep, version: str | None = None
) -> dict[str, Any]:
    """The production model's versions, input tensors (one per feature) and outputs."""
    loaded = await _model(name, version, settings.api.model_name, holder)
    schema = loaded.schema
    numeric = set(schema.numeric)
    return {
        "name": settings.api.model_name,
        "versions": [loaded.version],
        "platform": "beryl_logistic_regression",
        "inputs": [
            {"name": f, "datatype": "FP64" if f in numeric else "BYTES", "shape": [-1]}
            for f in schema.features
        ],
        "outputs": [
            {"name": "predictions", "datatype": "BYTES", "shape": [-1]},
            {"name": "probabilities", "datatype": "FP64", "shape": [-1]},
        ],
    }


_READY = {
    **error_responses(404),
    503: {"model": ModelReady, "description": "No verified production model is loaded"},
}


@router.get("/models/{name}/ready", response_model=ModelReady, responses=_READY)
@router.get("/models/{name}/versions/{version}/ready", response_model=ModelReady, responses=_READY)
async def model_ready(
    name: str, settings: SettingsDep, holder: HolderDep, version: str | None = None
) -> JSONResponse:
    """Whether the model (the production version) is loaded and verified."""
    _check_name(name, settings.api.model_name)
    loaded = await _loaded(holder)
    if loaded is not None and version is not None and version != loaded.version:
        raise _no_version(version, loaded)
    return JSONResponse({"name": name, "ready": loaded is not None}, 200 if loaded else 503)


_INFER_ERRORS = error_responses(400, 404, 413, 415, 422, 503)


@router.post(
    "/models/{name}/infer",
    response_model=InferResponse,
    responses=_INFER_ERRORS,
    openapi_extra=_INFER_BODY,
)
@router.post(
    "/models/{name}/versions/{version}/infer",
    response_model=InferResponse,
    responses=_INFER_ERRORS,
    openapi_extra=_INFER_BODY,
)
async def infer(
    name: str,
    request: Request,
    settings: SettingsDep,
    holder: HolderDep,
    version: str | None = None,
) -> Response:
    """Score named input tensors, one per feature, with the production model."""
    loaded = await _model(name, version, settings.api.model_name, holder)
    try:
        body = await request.body()
    except ClientDisconnect:
        return Response(status_code=499)
    header = request.headers.get(HEADER_LENGTH)
    kind = media_type(request.headers.get("content-type", ""))
    if header is None and kind not in ("application/json", ""):
        raise ApiError(415, f"unsupported content type {kind!r}", "send application/json")
    parsed = (
        parse(body, header, loaded, settings.api.max_records)
        if len(body) <= 64 * 1024
        else await run_in_threadpool(parse, body, header, loaded, settings.api.max_records)
    )
    rows, request_id, wanted = parsed
    content = await scored(loaded, rows, request.app.state.metrics)
    outputs = []
    count = len(rows)
    if "predictions" in wanted:
        labels = [str(label) for label in content["predictions"]]
        outputs.append(
            {"name": "predictions", "datatype": "BYTES", "shape": [count], "data": labels}
        )
    if "probabilities" in wanted:
        outputs.append(
            {
                "name": "probabilities",
                "datatype": "FP64",
                "shape": [count],
                "data": content["probabilities"],
            }
        )
    result: dict[str, Any] = {
        "model_name": settings.api.model_name,
        "model_version": loaded.version,
        "outputs": outputs,
    }
    if request_id is not None:
        result["id"] = request_id
    return JSONResponse(result)


# -- the model ------------------------------------------------------------------------------


async def _loaded(holder: Any) -> LoadedModel | None:
    try:
        loaded: LoadedModel = await holder.aget()
    except ModelError:
        return None
    return loaded


async def _model(name: str, version: str | None, model_name: str, holder: Any) -> LoadedModel:
    _check_name(name, model_name)
    loaded: LoadedModel = await holder.aget()  # 503 without a production model
    if version is not None and version != loaded.version:
        raise _no_version(version, loaded)
    return loaded


def _check_name(name: str, model_name: str) -> None:
    if name != model_name:
        raise ApiError(
            404, f"no model {name[:100]!r}: this server serves {model_name!r}", "see GET /v2"
        )


def _no_version(version: str, loaded: LoadedModel) -> ApiError:
    return ApiError(
        404,
        f"version {version[:100]!r} is not served: the production version is {loaded.version}",
        "leave the version out to use production",
    )
