"""The training-engine seam's contract, run against every engine: scikit-learn, and Spark MLlib
on ``local[2]`` (one session for the module, stopped after it).

Any engine must give a data-only model with Beryl's preprocessing semantics: the classes of the
labels, the positive label's probability, missing values and unseen categories scored, the same
model from the same data, and ``TrainingError`` for what it cannot learn from.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import pandas as pd
import pytest
from tests.spark_support import SPARK_CONF, require_java

from beryl.config import SparkSettings
from beryl.data.schema import Schema
from beryl.errors import TrainingError
from beryl.model.engine import Fitted, SklearnEngine, TrainingEngine
from beryl.model.linear import LinearModel
from beryl.spark import session


def _spark() -> TrainingEngine:
    from beryl.spark.train import SparkEngine

    require_java()
    return SparkEngine(SparkSettings(conf=SPARK_CONF))


ENGINES: dict[str, Callable[[], TrainingEngine]] = {"scikit-learn": SklearnEngine, "spark": _spark}
SCHEMA = Schema(target="churned", positive_label="Yes", numeric=["activity"], categorical=["plan"])


@pytest.fixture(scope="module", autouse=True)
def _one_spark_session() -> Iterator[None]:
    yield
    session.stop()


@pytest.fixture(params=list(ENGINES))
def engine(request: pytest.FixtureRequest) -> TrainingEngine:
    made = ENGINES[request.param]()
    assert isinstance(made, TrainingEngine)
    return made


def _frame(rows: int = 400, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    activity = rng.normal(50, 15, rows)
    plan = rng.choice(["free", "pro", "team"], rows)
    risk = -0.08 * (activity - 50) + np.where(plan == "free", 1.0, -0.5)
    churned = np.where(rng.random(rows) < 1 / (1 + np.exp(-risk)), "Yes", "No")
    frame = pd.DataFrame({"activity": activity, "plan": plan, "churned": churned})
    frame.loc[rng.random(rows) < 0.05, "activity"] = np.nan
    frame.loc[rng.random(rows) < 0.05, "plan"] = None
    return frame


def test_a_fit_gives_a_data_only_model_of_the_labels(engine: TrainingEngine) -> None:
    fitted = engine.fit(SCHEMA, {"max_iter": 500}, _frame())
    assert isinstance(fitted, Fitted) and isinstance(fitted.model, LinearModel)
    assert fitted.model.classes == ("No", "Yes")
    assert fitted.model.schema == SCHEMA
    assert LinearModel.from_dict(fitted.model.to_dict()).to_dict() == fitted.model.to_dict()


def test_the_model_learns_the_direction_of_the_signal(engine: TrainingEngine) -> None:
    model = engine.fit(SCHEMA, {}, _frame(2000)).model
    probe = pd.DataFrame(
        {"activity": [10.0, 90.0, 50.0, 50.0], "plan": ["pro", "pro", "free", "team"]}
    )
    _, chances = model.predict_frame(probe)
    assert chances[0] > chances[1]  # low activity: more risk
    assert chances[2] > chances[3]  # the free plan: more risk


def test_missing_values_and_unseen_categories_are_scored(engine: TrainingEngine) -> None:
    model = engine.fit(SCHEMA, {}, _frame()).model
    probe = pd.DataFrame({"activity": [np.nan, 40.0], "plan": ["enterprise", None]})
    labels, chances = model.predict_frame(probe)
    assert set(labels) <= {"No", "Yes"} and np.isfinite(chances).all()


def test_the_same_data_gives_the_same_model(engine: TrainingEngine) -> None:
    first = engine.fit(SCHEMA, {}, _frame(seed=3)).model
    again = engine.fit(SCHEMA, {}, _frame(seed=3)).model
    assert first.to_dict() == again.to_dict()


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        (lambda f: f.assign(churned="No"), "only one label value"),
        (lambda f: f.assign(churned=np.where(f.index % 2, "A", "B")), "positive_label"),
    ],
)
def test_what_cannot_be_learned_is_a_training_error(
    engine: TrainingEngine, change: Callable[[pd.DataFrame], pd.DataFrame], problem: str
) -> None:
    with pytest.raises(TrainingError, match=problem):
        engine.fit(SCHEMA, {}, change(_frame()))


def test_parameters_the_engine_refuses_are_a_training_error(engine: TrainingEngine) -> None:
    with pytest.raises(TrainingError):
        engine.fit(SCHEMA, {"C": -1.0}, _frame())
