"""The benchmark's setup: a demo workspace with a production model, and the request bodies."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.common import CACHE, say, write_json

WORK = CACHE / "serving"
WORKSPACE = WORK / "workspace"
VERIFY_RECORDS = 50
BATCH_RECORDS = 1000


@dataclass(frozen=True)
class Model:
    """The production model of the benchmark workspace."""

    config: Path
    version: str
    pickle: Path
    positive_label: Any
    features: list[str]
    id_columns: list[str]


def ensure_cache() -> None:
    WORK.mkdir(parents=True, exist_ok=True)  # benchmarks/.cache/ is git-ignored by the repo


def _production(config_path: Path) -> str | None:
    from beryl import config as config_module
    from beryl.errors import BerylError
    from beryl.model.registry import Registry

    if not config_path.exists():
        return None
    try:
        registry = Registry(config_module.load(config_path).model_folder)
        version = registry.production()
        return version if version is not None and registry.verify(version) else None
    except BerylError:
        return None


def build_workspace(config_path: Path) -> None:
    """A demo workspace and one pass of the loop, so a model is in production."""
    from beryl import config as config_module
    from beryl.data.demo import init_workspace
    from beryl.loop.passes import run_pass

    shutil.rmtree(WORKSPACE, ignore_errors=True)
    init_workspace(WORKSPACE)
    data = json.loads(config_path.read_text())
    data["package_index_url"] = "http://127.0.0.1:9"  # never ask a real index
    write_json(config_path, data)
    result = run_pass(config_module.load(config_path), report=False)
    if not result.promoted:
        raise RuntimeError(f"the demo pass promoted no model: {result.reason}")


def ensure_workspace() -> Model:
    from beryl import config as config_module
    from beryl.model.registry import Registry

    config_path = WORKSPACE / "config.json"
    if _production(config_path) is None:
        say(f"setup: building the demo workspace in {WORKSPACE}")
        build_workspace(config_path)
    registry = Registry(config_module.load(config_path).model_folder)
    version = registry.require_production()
    schema = registry.card(version).schema
    return Model(
        config=config_path,
        version=version,
        pickle=registry.model_path(version),
        positive_label=schema["positive_label"],
        features=[*schema["numeric"], *schema["categorical"]],
        id_columns=list(schema["id_columns"]),
    )


def load_pipeline(model: Model) -> Any:
    """The fitted pipeline, unpickled by Beryl's registry (sha256 checked against the card)."""
    from beryl import config as config_module
    from beryl.model.registry import Registry

    return Registry(config_module.load(model.config).model_folder).pipeline(model.version)


def linear_spec(pipeline: Any, model: Model) -> dict[str, Any]:
    """Impute/scale/coef numbers of a numeric-only pipeline, for the bare ASGI peer."""
    columns, logistic = (step for _, step in pipeline.steps)
    names: list[str] = []
    fill: list[float] = []
    mean: list[float] = []
    scale: list[float] = []
    for _name, block, selection in columns.transformers_:
        if isinstance(block, str) or not len(selection):
            continue
        kinds = [type(step).__name__ for _, step in block.steps]
        if kinds != ["SimpleImputer", "StandardScaler"]:
            raise RuntimeError(f"bare ASGI peer: only numeric features are hard-coded, not {kinds}")
        imputer, scaler = (step for _, step in block.steps)
        names += list(selection)
        fill += [float(v) for v in imputer.statistics_]
        mean += [float(v) for v in scaler.mean_] if scaler.with_mean else [0.0] * len(selection)
        scale += [float(v) for v in scaler.scale_] if scaler.with_std else [1.0] * len(selection)
    classes = [c.item() if hasattr(c, "item") else c for c in logistic.classes_]
    return {
        "features": names,
        "fill": fill,
        "mean": mean,
        "scale": scale,
        "coef": [float(v) for v in logistic.coef_[0]],
        "intercept": float(logistic.intercept_[0]),
        "classes": classes,
        "positive_index": classes.index(model.positive_label),
        "model_version": model.version,
    }


def _plain_value(value: Any) -> Any:
    if isinstance(value, float) and value.is_integer():
        return int(value)  # what a client sends: 300, not 300.0
    return value.item() if hasattr(value, "item") else value


def sample_records(count: int, seed: int) -> list[dict[str, Any]]:
    """Demo-schema records (corporation and the numeric features), no missing values."""
    from beryl.data.demo import generate

    frame = generate(count, seed, missing_rate=0.0).drop(columns=["exited"])
    return [
        {key: _plain_value(value) for key, value in row.items()}
        for row in frame.to_dict(orient="records")
    ]


@dataclass(frozen=True)
class Bodies:
    """Request bodies on disk, for wrk: Beryl's format and MLflow's, single and batch."""

    single: Path
    single_mlflow: Path
    batch: Path
    batch_mlflow: Path
    verify: list[dict[str, Any]]
    explain: int | None = None  # ``--explain K``: Beryl's bodies again with ``"explain": K``
    single_explain: Path | None = None
    batch_explain: Path | None = None

    def path(self, kind: str, mlflow: bool, explain: bool = False) -> Path:
        if explain:
            chosen = self.single_explain if kind == "single" else self.batch_explain
            assert chosen is not None, "bodies written without --explain"
            return chosen
        if kind == "single":
            return self.single_mlflow if mlflow else self.single
        return self.batch_mlflow if mlflow else self.batch


def write_bodies(folder: Path, explain: int | None = None) -> Bodies:
    single = sample_records(1, seed=11)
    batch = sample_records(BATCH_RECORDS, seed=12)

    def both(name: str, records: list[dict[str, Any]]) -> tuple[Path, Path]:
        ours = write_json(folder / f"{name}.json", {"records": records})
        theirs = write_json(folder / f"{name}-mlflow.json", {"dataframe_records": records})
        return ours, theirs

    one, one_mlflow = both("single", single)
    many, many_mlflow = both("batch", batch)
    verify = sample_records(VERIFY_RECORDS, seed=13)
    if explain is None:
        return Bodies(one, one_mlflow, many, many_mlflow, verify)
    asked = {"explain": explain}
    single_explain = write_json(folder / "single-explain.json", {"records": single, **asked})
    batch_explain = write_json(folder / "batch-explain.json", {"records": batch, **asked})
    return Bodies(
        one, one_mlflow, many, many_mlflow, verify, explain, single_explain, batch_explain
    )
