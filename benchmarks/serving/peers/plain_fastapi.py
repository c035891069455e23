"""What most teams write: FastAPI, a pydantic body, ``pd.DataFrame(records)``, ``predict_proba``.

    BENCH_MODEL=path/to/model.pkl BENCH_MODEL_VERSION=v0001 \\
        uvicorn --app-dir benchmarks/serving/peers plain_fastapi:app --workers 2

``BENCH_POSITIVE_LABEL`` (JSON, default ``1``) names the class whose probability is returned.
"""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path
from typing import Any

import pandas as pd
from fastapi import FastAPI
from pydantic import BaseModel


class Records(BaseModel):
    records: list[dict[str, Any]]


def _load() -> tuple[Any, int, str]:
    model = pickle.loads(Path(os.environ["BENCH_MODEL"]).read_bytes())
    positive = json.loads(os.environ.get("BENCH_POSITIVE_LABEL", "1"))
    return model, list(model.classes_).index(positive), os.environ.get("BENCH_MODEL_VERSION", "")


app = FastAPI()
MODEL, POSITIVE, VERSION = _load()


@app.get("/health")
def health() -> dict[str, str]:
    return {"status": "ok"}


@app.post("/prediction")
def prediction(body: Records) -> dict[str, Any]:
    frame = pd.DataFrame(body.records)
    probabilities = MODEL.predict_proba(frame)[:, POSITIVE]
    predictions = MODEL.predict(frame)
    return {
        "predictions": predictions.tolist(),
        "probabilities": probabilities.tolist(),
        "model_version": VERSION,
    }
