"""Model versions for other tools: an MLflow model directory or an ONNX graph.

Both are made from the version's signed data-only model (``LinearModel``), never from its pickle,
so a version trained on any engine exports the same way, and both are checked against it before
they are handed over: an export whose probabilities or labels differ from Beryl's is refused,
never written. Nothing of the customers' data goes in: the input example is the model's own
fill values (the training medians and most frequent categories)::

    beryl models export 20261201T101500Z --format mlflow -o exported/attrition
    beryl models export production --format onnx -o exported/attrition-onnx

``mlflow``: the ``sklearn`` flavour holds a plain scikit-learn estimator (no Beryl code): the
pipeline in front of a ``LogisticRegression`` carrying the version's coefficients, wrapped in a
``FixedThresholdClassifier`` so that its ``predict`` decides at Beryl's threshold. The
``python_function`` flavour is a small loader shipped in the directory (``code/``) whose
``predict`` returns a frame with ``label`` and ``probability`` (of the positive label), as
``/prediction`` does. ``onnx``: see ``beryl.model.onnxgraph``.

The directory is built beside ``-o`` and renamed into place, so an export is whole or absent.
"""

from __future__ import annotations

import json
import math
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from beryl.errors import ConfigError, ModelError
from beryl.model.linear import _plain
from beryl.model.predict import threshold_score
from beryl.model.training import library_versions

if TYPE_CHECKING:
    from beryl.model.card import ModelCard
    from beryl.model.linear import LinearModel

FORMATS = ("mlflow", "onnx")
LOADER_MODULE = "beryl_attrition_pyfunc"  # the python_function loader's module in code/
DETAILS_FILE = "beryl.json"  # in every export: what the model expects and how it decides
PROBABILITY_TOLERANCE = 1e-9  # an exported model's probabilities against Beryl's, checked


@dataclass(frozen=True)
class Export:
    """What an export wrote: the folder, its format, the version and the files in it."""

    folder: Path
    format: str
    version: str
    files: list[str]


def export(model: LinearModel, card: ModelCard, fmt: str, target: Path) -> Export:
    """Write ``model`` (version ``card.id``) to ``target`` in ``fmt`` (see the module
    docstring); ``target`` must not exist or be an empty folder."""
    if fmt not in FORMATS:
        raise ConfigError(f"unknown export format {fmt!r}", hint="use mlflow or onnx")
    with _building(target) as folder:
        if fmt == "mlflow":
            _write_mlflow(model, card, folder)
        else:
            from beryl.model.onnxgraph import write_onnx

            write_onnx(model, card, folder, sample_frame(model))
        (folder / DETAILS_FILE).write_text(json.dumps(details(model, card, fmt), indent=2) + "\n")
        files = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
    return Export(target, fmt, card.id, files)


def details(model: LinearModel, card: ModelCard, fmt: str) -> dict[str, Any]:
    """What a caller of the exported model needs to know, beside the model card's scores."""
    schema = model.schema
    return {
        "format": fmt,
        "version": card.id,
        "exported_by": f"beryl {library_versions()['beryl']}",
        "numeric_features": list(schema.numeric),
        "categorical_features": list(schema.categorical),
        "target": schema.target,
        "classes": [_plain(c) for c in model.classes],
        "positive_label": _plain(schema.positive_label),
        "threshold": model.threshold,
        "decision": "label is positive_label where its probability is above threshold",
        "missing_values": (
            "numbers: NaN; text: the empty string (ONNX has no missing string)"
            if fmt == "onnx"
            else "None or NaN"
        ),
        "unseen_categories": "weigh nothing, as in Beryl",
        "metrics": card.metrics,
    }


# -- the scikit-learn estimator --------------------------------------------------------------------
def sklearn_estimator(model: LinearModel) -> Any:
    """A plain scikit-learn estimator that scores and decides as ``model`` does.

    Each component is fitted on a few made-up rows (so that scikit-learn's own fitted state is
    complete) and then given the version's parameters. Missing text is ``None`` or ``NaN``:
    two imputers (NaN's first: scikit-learn refuses NaN to any other) fill it with the
    training's most frequent category."""
    from sklearn.compose import ColumnTransformer
    from sklearn.frozen import FrozenEstimator
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import FixedThresholdClassifier
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    schema = model.schema
    parts: list[tuple[str, Any, list[str]]] = []
    if schema.numeric:
        numeric = Pipeline(
            [
                ("impute", SimpleImputer(strategy="median", keep_empty_features=True)),
                ("scale", StandardScaler()),
            ]
        )
        parts.append(("numeric", numeric, list(schema.numeric)))
    if schema.categorical:
        categorical = Pipeline(
            [
                ("impute_nan", SimpleImputer(missing_values=np.nan, strategy="most_frequent")),
                ("impute_none", SimpleImputer(missing_values=None, strategy="most_frequent")),
                (
                    "onehot",
                    OneHotEncoder(
                        categories=[list(c) for c in model.categories], handle_unknown="ignore"
                    ),
                ),
            ]
        )
        parts.append(("categorical", categorical, list(schema.categorical)))
    pipeline = Pipeline(
        [
            ("features", ColumnTransformer(parts, remainder="drop")),
            ("model", LogisticRegression()),
        ]
    )
    frame, labels = _fitting_rows(model)
    pipeline.fit(frame, labels)
    features = pipeline.named_steps["features"]
    if schema.numeric:
        numeric = features.named_transformers_["numeric"]
        numeric.named_steps["impute"].statistics_ = np.array(model.numeric_fill)
        scaler = numeric.named_steps["scale"]
        scaler.mean_, scaler.scale_ = np.array(model.mean), np.array(model.scale)
        scaler.var_ = scaler.scale_**2
    if schema.categorical:
        categorical = features.named_transformers_["categorical"]
        fills = np.array(model.categorical_fill, dtype=object)
        for step in ("impute_nan", "impute_none"):
            categorical.named_steps[step].statistics_ = fills
    classifier = pipeline.named_steps["model"]
    classifier.classes_ = np.array(model.classes_)
    classifier.coef_, classifier.intercept_ = np.array(model.coef), np.array(model.intercept)
    if len(model.classes) != 2:
        return pipeline
    # Beryl: positive where the score is above the threshold's; scikit-learn: at or above.
    cut = float(np.nextafter(threshold_score(model.threshold), math.inf))
    decided = FixedThresholdClassifier(
        FrozenEstimator(pipeline),
        threshold=cut,
        response_method="decision_function",
        pos_label=model.schema.positive_label,
    )
    return decided.fit(frame, labels)


def _fitting_rows(model: LinearModel) -> tuple[pd.DataFrame, np.ndarray]:
    """Made-up rows that hold every category and class (their values are then replaced)."""
    count = max([len(model.classes), 2, *(len(c) for c in model.categories)])
    columns: dict[str, Any] = {}
    for j, name in enumerate(model.schema.numeric):
        columns[name] = np.arange(count, dtype=np.float64) + j
    for name, known in zip(model.schema.categorical, model.categories, strict=True):
        columns[name] = np.array([known[i % len(known)] for i in range(count)], dtype=object)
    labels = np.array([model.classes[i % len(model.classes)] for i in range(count)])
    return pd.DataFrame(columns), labels


def sample_frame(model: LinearModel, rows: int = 256, seed: int = 0) -> pd.DataFrame:
    """Records an export is checked on: around the training values, with missing numbers and
    text, every category and categories the model never saw."""
    rng = np.random.default_rng(seed)
    columns: dict[str, Any] = {}
    for j, name in enumerate(model.schema.numeric):
        values = model.mean[j] + model.scale[j] * rng.normal(0.0, 2.0, rows)
        values[rng.random(rows) < 0.1] = np.nan
        columns[name] = values
    for name, known in zip(model.schema.categorical, model.categories, strict=True):
        choices = [*known, "never seen in training", None]
        columns[name] = np.array([choices[i] for i in rng.integers(0, len(choices), rows)])
    return pd.DataFrame(columns)


def example_record(model: LinearModel) -> pd.DataFrame:
    """The input example: one record of the model's own fill values (no customer's data)."""
    schema = model.schema
    record: dict[str, Any] = dict(zip(schema.numeric, map(float, model.numeric_fill), strict=True))
    record |= dict(zip(schema.categorical, model.categorical_fill, strict=True))
    return pd.DataFrame([record], columns=schema.features)


def check_agrees(
    model: LinearModel, frame: pd.DataFrame, labels: Any, chances: Any, what: str
) -> None:
    """Refuse an export whose labels or probabilities on ``frame`` are not Beryl's."""
    expected_labels, expected = model.predict_frame(frame)
    worst = float(np.max(np.abs(np.asarray(chances, dtype=np.float64) - expected), initial=0.0))
    same = [_plain(a) == _plain(b) for a, b in zip(labels, expected_labels, strict=True)]
    if worst > PROBABILITY_TOLERANCE or not all(same):
        raise ModelError(
            f"the {what} export does not score as Beryl does (largest probability difference "
            f"{worst:.3g}, {same.count(False)} of {len(same)} labels differ): nothing was written",
            hint="report this with the model version; export with the other format meanwhile",
        )


# -- MLflow ----------------------------------------------------------------------------------------
def _write_mlflow(model: LinearModel, card: ModelCard, folder: Path) -> None:
    try:
        from mlflow.models import Model, ModelSignature
        from mlflow.types import ColSpec, Schema
    except ImportError as exc:
        raise ConfigError(
            "exporting for MLflow needs MLflow, which is not installed",
            hint="install the mlflow extra: pip install 'beryl[mlflow]'",
        ) from exc
    estimator = sklearn_estimator(model)
    sample = sample_frame(model)
    chances = estimator.predict_proba(sample)[:, model.positive_index]
    check_agrees(model, sample, estimator.predict(sample), chances, "MLflow")
    schema = model.schema
    label_type = "long" if all(isinstance(c, int) for c in model.classes) else "string"
    columns: list[Any] = [ColSpec("double", name) for name in schema.numeric]
    columns += [ColSpec("string", name) for name in schema.categorical]
    signature = ModelSignature(
        inputs=Schema(columns),
        outputs=Schema([ColSpec(label_type, "label"), ColSpec("double", "probability")]),
    )
    with warnings.catch_warnings():
        # MLflow's own use of pandas warns of deprecations: nothing a Beryl user can act on
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", FutureWarning)
        metadata = {"beryl_model_version": card.id, "threshold": model.threshold}
        _save_sklearn(estimator, folder, signature, example_record(model), metadata)
    code = folder / "code"
    code.mkdir()
    shutil.copyfile(Path(__file__).with_name("mlflow_loader.py"), code / f"{LOADER_MODULE}.py")
    (folder / "beryl_card.json").write_text(json.dumps(card.to_dict(), indent=2) + "\n")
    described = Model.load(str(folder))
    pyfunc = described.flavors["python_function"]
    pyfunc["loader_module"] = LOADER_MODULE
    pyfunc["code"] = "code"
    pyfunc.pop("predict_fn", None)
    described.save(str(folder / "MLmodel"))


def _save_sklearn(
    estimator: Any,
    folder: Path,
    signature: Any,
    example: pd.DataFrame,
    metadata: dict[str, Any],
) -> None:
    import mlflow.sklearn

    versions = library_versions()
    mlflow.sklearn.save_model(
        estimator,
        str(folder),
        serialization_format=mlflow.sklearn.SERIALIZATION_FORMAT_PICKLE,
        signature=signature,
        input_example=example,
        pip_requirements=[
            f"{name}=={versions[name]}" for name in ("scikit-learn", "numpy", "pandas")
        ],
        metadata=metadata,
    )


# -- helpers ---------------------------------------------------------------------------------------
@contextmanager
def _building(target: Path) -> Iterator[Path]:
    """A fresh folder beside ``target``, renamed to it when the block succeeds."""
    target = target.expanduser()
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise ConfigError(
            f"{target} already exists and is not an empty folder",
            hint="name a new folder with -o, or remove the old export first",
        )
    parent = target.absolute().parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=parent))
    except OSError as exc:
        raise ConfigError(
            f"cannot write the export under {parent}: {exc.strerror or exc}",
            hint="name a folder you can write to with -o",
        ) from exc
    try:
        built = work / "model"
        built.mkdir()
        yield built
        if target.exists():
            target.rmdir()
        built.rename(target)
    finally:
        shutil.rmtree(work, ignore_errors=True)
