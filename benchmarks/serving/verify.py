"""Verification: every peer answers the same records, and must match Beryl's answer to 1e-9."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from benchmarks.serving.servers import Peer
from benchmarks.serving.workspace import VERIFY_RECORDS, Model

TOLERANCE = 1e-9


@dataclass(frozen=True)
class Answer:
    predictions: list[Any]
    probabilities: list[float]


def parse_answer(peer: Peer, payload: Any, classes: list[Any], positive: int) -> Answer:
    if not peer.mlflow_format:
        return Answer(list(payload["predictions"]), [float(p) for p in payload["probabilities"]])
    pairs = payload["predictions"]  # predict_proba: one [p0, p1] per record
    probabilities = [float(pair[positive]) for pair in pairs]
    return Answer([classes[int(pair[1] > pair[0])] for pair in pairs], probabilities)


def ask(peer: Peer, records: list[dict[str, Any]], classes: list[Any], positive: int) -> Answer:
    """The peer's answer for ``records``: one request per record, then all in one request."""
    import httpx

    key = "dataframe_records" if peer.mlflow_format else "records"
    predictions: list[Any] = []
    probabilities: list[float] = []
    with httpx.Client(timeout=30) as client:
        for chunk in [*([record] for record in records), records]:
            response = client.post(peer.url, json={key: chunk})
            response.raise_for_status()
            answer = parse_answer(peer, response.json(), classes, positive)
            predictions += answer.predictions
            probabilities += answer.probabilities
    return Answer(predictions, probabilities)


def ask_explained(
    peer: Peer, records: list[dict[str, Any]], explain: int, features: int
) -> tuple[Answer, list[str]]:
    """Beryl's answer with ``"explain": explain`` (one request per record, then all in one), and
    what is wrong with its reasons: each record needs min(explain, features) of them, largest
    first, and a logit that is the one behind its probability (1e-9)."""
    import httpx

    predictions: list[Any] = []
    probabilities: list[float] = []
    problems: list[str] = []
    with httpx.Client(timeout=30) as client:
        for chunk in [*([record] for record in records), records]:
            response = client.post(peer.url, json={"records": chunk, "explain": explain})
            response.raise_for_status()
            payload = response.json()
            predictions += payload["predictions"]
            probabilities += [float(p) for p in payload["probabilities"]]
            for chance, why in zip(payload["probabilities"], payload["explanations"], strict=True):
                sizes = [abs(r["contribution"]) for r in why["reasons"]]
                if len(sizes) != min(explain, features) or sizes != sorted(sizes, reverse=True):
                    problems.append(f"reasons {why['reasons']!r}")
                if abs(why["logit"] - math.log(chance / (1.0 - chance))) > TOLERANCE:
                    problems.append(f"logit {why['logit']} for probability {chance}")
    return Answer(predictions, probabilities), problems


def compare(name: str, answer: Answer, reference: Answer) -> dict[str, Any]:
    """Probabilities within 1e-9 and equal predictions, record by record."""
    gaps = [abs(a - b) for a, b in zip(answer.probabilities, reference.probabilities, strict=True)]
    same = answer.predictions == reference.predictions
    ok = same and max(gaps) <= TOLERANCE
    return {
        "peer": name,
        "records": VERIFY_RECORDS,
        "answers": len(gaps),
        "max_abs_probability_gap": max(gaps),
        "predictions_equal": same,
        "ok": ok,
    }


def reference_for(pipeline: Any, model: Model) -> dict[str, Any]:
    classes = [c.item() if hasattr(c, "item") else c for c in pipeline.classes_]
    return {"classes": classes, "positive": classes.index(model.positive_label)}
