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

import json
import math
import struct
from typing import Any

import numpy as np
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect

from beryl.api.app import ApiError
from beryl.api.deps import HolderDep, SettingsDep
from beryl.api.holder import LoadedModel
from beryl.api.routes.prediction import media_type, respond
from beryl.api.schemas import error_responses
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
HEADER_LENGTH = "inference-header-content-length"
OUTPUTS = ("predictions", "probabilities")
_NUMERIC_TYPES = {
    "BOOL": "<?",
    "UINT8": "<u1",
    "UINT16": "<u2",
    "UINT32": "<u4",
    "UINT64": "<u8",
    "INT8": "<i1",
    "INT16": "<i2",
    "INT32": "<i4",
    "INT64": "<i8",
    "FP16": "<f2",
    "FP32": "<f4",
    "FP64": "<f8",
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
        _parse(body, header, loaded, settings.api.max_records)
        if len(body) <= 64 * 1024
        else await run_in_threadpool(_parse, body, header, loaded, settings.api.max_records)
    )
    rows, request_id, wanted = parsed
    answer = await respond(loaded, rows, request.app.state.metrics)
    content = json.loads(bytes(answer.body))
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


# -- the request ----------------------------------------------------------------------------


def _parse(
    body: bytes, header: str | None, loaded: LoadedModel, limit: int
) -> tuple[list[dict[str, Any]], str | None, list[str]]:
    """The rows of an inference request (one dict per row, in the model's features), its id
    and the outputs it asks for."""
    if header is not None:
        if not header.isdigit() or int(header) > len(body):
            raise ApiError(
                400,
                f"Inference-Header-Content-Length {header!r} is not the length of a JSON header "
                "within the body",
            )
        document, binary = _json(body[: int(header)]), body[int(header) :]
    else:
        document, binary = _json(body), b""
    if not isinstance(document, dict):
        raise ApiError(400, "the request must be a JSON object with 'inputs'")
    request_id = document.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise ApiError(422, "'id' must be a string", {"field": "id"})
    inputs = document.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise ApiError(422, "'inputs' must be a non-empty list of tensors", {"field": "inputs"})
    wanted = _outputs(document.get("outputs"))
    schema = loaded.schema
    numeric = set(schema.numeric)
    columns: dict[str, list[Any]] = {}
    offset = 0
    for index, tensor in enumerate(inputs):
        where = f"inputs[{index}]"
        if not isinstance(tensor, dict) or not isinstance(tensor.get("name"), str):
            raise ApiError(422, f"{where} must be an object with a 'name'", {"field": where})
        name = tensor["name"]
        if name not in schema.features:
            raise ApiError(
                422,
                f"{where} names {name!r}, which is not a feature of the model",
                f"the inputs are {', '.join(schema.features)} (see GET /v2/models/...)",
            )
        if name in columns:
            raise ApiError(422, f"{where}: {name!r} is given twice", {"field": where})
        count = _rows_of(tensor.get("shape"), where, limit)
        datatype = tensor.get("datatype")
        parameters = tensor.get("parameters") or {}
        if not isinstance(parameters, dict):
            raise ApiError(422, f"{where}.parameters must be an object", {"field": where})
        size = parameters.get("binary_data_size")
        if size is not None:
            if not isinstance(size, int) or size < 0 or offset + size > len(binary):
                raise ApiError(400, f"{where}: binary_data_size {size!r} runs past the body")
            values = _binary(binary[offset : offset + size], datatype, count, where)
            offset += size
        else:
            values = _flat(tensor.get("data"), where)
        if len(values) != count:
            raise ApiError(
                422,
                f"{where} ({name}) has {len(values)} values but its shape says {count}",
                {"field": f"{where}.data"},
            )
        convert = _number if name in numeric else _category
        columns[name] = [convert(v, f"{where}.data[{i}]", datatype) for i, v in enumerate(values)]
    missing = [f for f in schema.features if f not in columns]
    if missing:
        raise ApiError(
            422,
            f"no input tensor for {', '.join(missing)}",
            "send one tensor per feature of the model",
        )
    lengths = {len(v) for v in columns.values()}
    if len(lengths) != 1:
        raise ApiError(422, "the input tensors have different numbers of rows", sorted(lengths))
    count = lengths.pop()
    rows = [{f: columns[f][i] for f in schema.features} for i in range(count)]
    return rows, request_id, wanted


def _json(data: bytes) -> Any:
    try:
        return json.loads(data)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise ApiError(400, f"the request is not valid JSON: {exc}") from None


def _outputs(asked: Any) -> list[str]:
    if asked is None:
        return list(OUTPUTS)
    if not isinstance(asked, list) or not all(isinstance(o, dict) for o in asked):
        raise ApiError(
            422, "'outputs' must be a list of objects with a 'name'", {"field": "outputs"}
        )
    names = [o.get("name") for o in asked]
    unknown = [n for n in names if n not in OUTPUTS]
    if unknown:
        raise ApiError(
            422, f"unknown output {unknown[0]!r}", f"the outputs are {', '.join(OUTPUTS)}"
        )
    return [n for n in OUTPUTS if n in names]


def _rows_of(shape: Any, where: str, limit: int) -> int:
    """The number of rows a tensor's shape gives: ``[N]`` or ``[N, 1]``."""
    if (
        not isinstance(shape, list)
        or not 1 <= len(shape) <= 2
        or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)
        or (len(shape) == 2 and shape[1] != 1)
    ):
        raise ApiError(
            422, f"{where}.shape must be [N] or [N, 1], got {shape!r}", {"field": f"{where}.shape"}
        )
    if shape[0] == 0:
        raise ApiError(422, f"{where} has no rows", {"field": f"{where}.shape"})
    if shape[0] > limit:
        raise ApiError(413, f"{shape[0]} rows is more than api.max_records ({limit})", "send fewer")
    return int(shape[0])


def _flat(data: Any, where: str) -> list[Any]:
    if not isinstance(data, list):
        raise ApiError(422, f"{where}.data must be a list", {"field": f"{where}.data"})
    if data and all(isinstance(d, list) for d in data):  # nested, [[x], [y]]
        if not all(len(d) == 1 for d in data):
            raise ApiError(
                422, f"{where}.data must hold one value per row", {"field": f"{where}.data"}
            )
        return [d[0] for d in data]
    return data


def _binary(data: bytes, datatype: Any, count: int, where: str) -> list[Any]:
    """A tensor in the binary extension: fixed-width little-endian values, or for ``BYTES``
    each element as a 4-byte little-endian length and its bytes."""
    if datatype in _NUMERIC_TYPES:
        dtype = np.dtype(_NUMERIC_TYPES[datatype])
        if len(data) != count * dtype.itemsize:
            raise ApiError(422, f"{where}: {len(data)} bytes is not {count} {datatype} values")
        values: list[Any] = np.frombuffer(data, dtype=dtype).tolist()
        return values
    if datatype != "BYTES":
        raise ApiError(422, f"{where}.datatype {datatype!r} is not one the protocol defines")
    values, position = [], 0
    while position < len(data):
        if position + 4 > len(data):
            raise ApiError(422, f"{where}: a BYTES element's length is cut off")
        (length,) = struct.unpack_from("<I", data, position)
        position += 4
        if position + length > len(data):
            raise ApiError(422, f"{where}: a BYTES element runs past its tensor")
        try:
            values.append(data[position : position + length].decode("utf-8"))
        except UnicodeDecodeError:
            raise ApiError(422, f"{where}: element {len(values)} is not UTF-8") from None
        position += length
    return values


def _number(value: Any, where: str, datatype: Any) -> float:
    if value is None:
        return math.nan
    if isinstance(value, bool):
        if datatype == "BOOL":
            return float(value)
        raise ApiError(422, f"{where} must be a number, not true/false", {"field": where})
    if isinstance(value, int | float):
        try:
            number = float(value)
        except OverflowError:
            number = math.inf
    elif isinstance(value, str):
        try:
            number = float(value.strip()) if value.strip() else math.nan
        except ValueError:
            raise ApiError(
                422, f"{where} must be a number, got {value!r}", {"field": where}
            ) from None
    else:
        raise ApiError(422, f"{where} must be a number", {"field": where})
    if math.isinf(number):
        raise ApiError(422, f"{where} must be finite", {"field": where})
    return number


def _category(value: Any, where: str, datatype: Any) -> Any:
    if value is None:
        return np.nan
    if isinstance(value, str):
        if any(0xD800 <= ord(c) <= 0xDFFF for c in value):
            raise ApiError(422, f"{where} contains an unpaired surrogate", {"field": where})
        return value.strip() or np.nan
    if isinstance(value, bool | int | float):
        return str(value)
    raise ApiError(422, f"{where} must be a string, number or null", {"field": where})


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
