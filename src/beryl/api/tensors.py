"""The requests of the Open Inference Protocol's ``infer`` (``beryl.api.routes.inference``):
named input tensors, one per feature, as JSON (flat or nested ``data``) or in the binary
tensor extension, turned into the rows ``/prediction`` scores, with the values checked by the
same rules (``number_value``, ``category_value``) and every refusal naming the tensor."""

from __future__ import annotations

import json
import struct
from typing import Any

import numpy as np

from beryl.api.app import ApiError
from beryl.api.holder import LoadedModel
from beryl.api.routes.prediction import category_value, number_value

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


def parse(
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
        if datatype == "BOOL":  # a boolean tensor's values are numbers here
            values = [float(v) if isinstance(v, bool) else v for v in values]
        convert = number_value if name in numeric else category_value
        columns[name] = [convert(v, i, where, _refused) for i, v in enumerate(values)]
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


def _refused(index: int, where: str, problem: str) -> ApiError:
    field = f"{where}.data[{index}]"
    return ApiError(422, f"{field} {problem}", {"field": field})
