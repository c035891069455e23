"""The ceiling: a raw ASGI callable (no framework) scoring a hard-coded linear model.

    BENCH_LINEAR_MODEL=linear.json uvicorn --app-dir benchmarks/serving/peers bare_asgi:app

``linear.json`` is written at setup from the fitted pipeline: per numeric feature the imputer's
fill value, the scaler's mean and scale and the logistic coefficient, plus the intercept, the two
classes and the index of the positive one. Any POST scores ``{"records": [...]}``; any GET
answers ``{"status": "ok"}``. The body is parsed and the answer written with orjson, as Beryl's
``/prediction`` does.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

_SPEC = json.loads(Path(os.environ["BENCH_LINEAR_MODEL"]).read_text())
# One (name, fill, mean, scale, coef) per feature: the numbers of impute -> scale -> dot product.
PLAN = tuple(
    zip(_SPEC["features"], _SPEC["fill"], _SPEC["mean"], _SPEC["scale"], _SPEC["coef"], strict=True)
)
INTERCEPT = float(_SPEC["intercept"])
NEGATIVE, POSITIVE = _SPEC["classes"]
POSITIVE_INDEX = int(_SPEC["positive_index"])
VERSION = _SPEC["model_version"]
_JSON = [(b"content-type", b"application/json")]


def score(record: dict[str, Any]) -> float:
    total = INTERCEPT
    for name, fill, mean, scale, coef in PLAN:
        value = record.get(name)
        if value is None:
            value = fill
        total += (value - mean) / scale * coef
    return total


def answer(records: list[dict[str, Any]]) -> dict[str, Any]:
    predictions, probabilities = [], []
    for record in records:
        total = score(record)
        chance = 1.0 / (1.0 + math.exp(-total)) if total >= 0 else _low(total)
        predictions.append(POSITIVE if total > 0 else NEGATIVE)
        probabilities.append(chance if POSITIVE_INDEX == 1 else 1.0 - chance)
    return {"predictions": predictions, "probabilities": probabilities, "model_version": VERSION}


def _low(total: float) -> float:
    odds = math.exp(total)
    return odds / (1.0 + odds)


async def _body(receive: Receive) -> bytes:
    chunks = []
    more = True
    while more:
        message = await receive()
        chunks.append(message.get("body", b""))
        more = message.get("more_body", False)
    return b"".join(chunks)


async def _reply(send: Send, status: int, payload: Any) -> None:
    data = orjson.dumps(payload)
    headers = [*_JSON, (b"content-length", str(len(data)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": data})


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    if scope["method"] != "POST":
        await _reply(send, 200, {"status": "ok"})
        return
    try:
        payload = answer(orjson.loads(await _body(receive))["records"])
    except (ValueError, KeyError, TypeError) as exc:
        await _reply(send, 422, {"error": str(exc)})
        return
    await _reply(send, 200, payload)
