"""The dashboard tests' data: a small but complete sample with awkward values in the corners,
an empty workspace's, and ``build``, which makes the renderer's typed input of either."""

from __future__ import annotations

from typing import Any

from beryl.monitoring.dashboard import ConfusionMatrix, DashboardData, ProductionModel, VersionRow
from beryl.monitoring.results import DriftResult
from beryl.monitoring.store import PromotionRecord, RunRecord, ScoreRecord, StepRecord


def sample() -> dict[str, Any]:
    """A small but complete dashboard input with awkward values in the corners."""
    t = "2026-11-{:02d}T17:30:38Z".format
    step = [{"name": "ingest", "duration_s": 0.05, "status": "ok"}]
    return {
        "title": "Beryl — workspace /tmp/<ws>",
        "generated_at": t(27),
        "production": {"version": "v0002", "f1": 0.8379, "since": t(21)},
        "versions": [
            {"id": "v0001", "created": t(20), "f1": 0.8253, "rows": 3000, "production": False},
            {"id": "v0002", "created": t(21), "f1": 0.8379, "rows": 4500, "production": True},
            {"id": "v0003", "created": t(22), "f1": None, "rows": 6000, "production": False},
        ],
        "scores": [
            {"time": t(20), "version": "v0001", "role": "candidate", "f1": 0.8253, "run_id": 1},
            {"time": t(21), "version": "v0002", "role": "candidate", "f1": 0.8379, "run_id": 2},
            {"time": t(21), "version": "v0001", "role": "production", "f1": 0.8253, "run_id": 2},
            {"time": t(22), "version": "v0002", "role": "drift-check", "f1": 0.80, "run_id": 3},
            {"time": t(22), "version": "v0003", "role": "candidate", "f1": 0.1 + 0.2, "run_id": 3},
            {"time": t(22), "version": "v0002", "role": "production", "f1": 0.8391, "run_id": 3},
        ],
        "promotions": [
            {
                "time": t(20),
                "action": "promote",
                "from_version": None,
                "to_version": "v0001",
                "from_f1": None,
                "to_f1": 0.8253,
                "reason": "first model",
            },
            {
                "time": t(21),
                "action": "promote",
                "from_version": "v0001",
                "to_version": "v0002",
                "from_f1": 0.8253,
                "to_f1": 0.8379,
                "reason": "F1 0.8379 > 0.8253 <better>",
            },
            {
                "time": t(23),
                "action": "rollback",
                "from_version": "v0002",
                "to_version": "v0001",
                "from_f1": 0.8379,
                "to_f1": 0.8253,
                "reason": "asked for",
            },
        ],
        "drift": {
            "reference": {"rows": 3000, "model_version": "v0001", "batches": ["b1"]},
            "current": {"rows": 1500, "batches": ["b2"]},
            "dataset_drift": True,
            "drift_share": 2 / 3,
            "drifted_features": ["lastmonth_activity", "corporation"],
            "features": {
                "lastmonth_activity": {
                    "drifted": True,
                    "test": "kolmogorov-smirnov",
                    "statistic": 0.145,
                    "p_value": 9.2e-19,
                    "distance": 0.12431234567,
                    "distance_name": "psi",
                    "threshold": 0.1,
                },
                "corporation": {
                    "drifted": True,
                    "test": "chi-square",
                    "statistic": 31.5,
                    "p_value": 1e-6,
                    "distance": 0.31,
                    "distance_name": "jensen-shannon",
                    "threshold": 0.1,
                },
                "employees": {
                    "drifted": False,
                    "test": "kolmogorov-smirnov",
                    "statistic": 0.02,
                    "p_value": 0.6,
                    "distance": 0.01,
                    "distance_name": "psi",
                    "threshold": 0.1,
                },
                "tiny": {
                    "drifted": False,
                    "test": "kolmogorov-smirnov",
                    "statistic": None,
                    "p_value": None,
                    "distance": None,
                    "distance_name": "psi",
                    "threshold": None,
                    "note": "not tested: 3 rows, fewer than min_rows=30",
                },
            },
        },
        "missing_percent": {"corporation": 0.0, "lastmonth_activity": 1.2, "employees": 27.25},
        "runs": [
            {
                "id": 5,
                "command": "run",
                "started": t(22),
                "duration_s": 1.2,
                "status": "ok",
                "summary": "promoted: <script>alert(1)</script>",
                "steps": [
                    {"name": "ingest", "duration_s": 0.05, "status": "ok"},
                    {"name": "train", "duration_s": 0.9, "status": "ok"},
                    {"name": "drift", "duration_s": None, "status": "skipped"},
                ],
            },
            {
                "id": 4,
                "command": "ingest",
                "started": t(21),
                "duration_s": None,
                "status": "failed",
                "summary": "schema error",
                "steps": step,
            },
            {
                "id": 3,
                "command": "run",
                "started": t(20),
                "duration_s": 0.3,
                "status": "partial",
                "summary": "",
                "steps": [],
            },
        ],
        "confusion_matrix": {
            "matrix": [[249, 92], [57, 352]],
            "labels": ["not 1", "1"],
            "version": "v0002",
        },
    }


def empty() -> dict[str, Any]:
    return {
        "title": "Beryl — workspace /tmp/ws",
        "generated_at": "2026-11-27T17:30:38Z",
        "production": None,
        "versions": [],
        "scores": [],
        "promotions": [],
        "drift": None,
        "missing_percent": {},
        "runs": [],
        "confusion_matrix": None,
    }


def build(data: dict[str, Any]) -> DashboardData:
    """The dashboard's typed input from a plain sample (plain data is easy to vary in a test)."""
    production, matrix, drift = data["production"], data["confusion_matrix"], data["drift"]
    return DashboardData(
        title=data["title"],
        generated_at=data["generated_at"],
        production=None if production is None else ProductionModel(**production),
        versions=[VersionRow(**version) for version in data["versions"]],
        scores=[ScoreRecord(**{"data": "test data", **score}) for score in data["scores"]],
        promotions=[PromotionRecord(**{"run_id": None, **move}) for move in data["promotions"]],
        drift=None if drift is None else DriftResult.from_dict(drift),
        missing_percent=data["missing_percent"],
        runs=[
            RunRecord(
                **{k: run[k] for k in ("id", "command", "started", "duration_s", "status")},
                ended=None,
                exit_code=None,
                summary=run["summary"],
                detail={},
                steps=[StepRecord(**step, started=run["started"]) for step in run["steps"]],
            )
            for run in data["runs"]
        ],
        confusion_matrix=None if matrix is None else ConfusionMatrix(**matrix),
        warnings=data.get("warnings", []),
    )
