"""A two-class Beryl model as an ONNX graph in double precision (``model.onnx``).

The graph is written with ``onnx``'s helpers from the version's data-only model, operation for
operation as ``LinearModel`` scores: each numeric feature's missing value (NaN) filled with its
training median, centred and scaled, times its coefficient; each categorical feature's weight
looked up by category (``LabelEncoder``), an unseen one weighing nothing; the sum plus the
intercept is the logit, its sigmoid the probability of the positive label, and the label is
positive where the logit is above the threshold's. (scikit-learn's converter, skl2onnx, turns
the imputer into ONNX-ML's ``Imputer``, which onnxruntime runs only in single precision, and has
no way to impute text.)

Inputs, one tensor per feature as KServe and Triton clients send them: ``[N, 1]`` doubles for a
numeric feature, ``[N, 1]`` strings for a categorical one. ONNX has no missing string: a missing
category is the empty string, which weighs as the training's most frequent category, as a
missing value does in Beryl. Outputs: ``label`` ``[N, 1]`` (int64 or string, as the classes are)
and ``probability`` ``[N, 1]`` (of the positive label). Before the file is written the graph is
run by onnxruntime, where it is installed, on records with missing values and unseen categories,
and refused unless it agrees with Beryl to 1e-9.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from beryl.errors import ConfigError, ModelError
from beryl.model.predict import threshold_score

if TYPE_CHECKING:
    from beryl.model.card import ModelCard
    from beryl.model.linear import LinearModel

ONNX_FILE = "model.onnx"
OPSET = 18
ML_OPSET = 4  # LabelEncoder with double values (keys_strings, values_tensor)
MISSING_TEXT = ""


def write_onnx(model: LinearModel, card: ModelCard, folder: Path, sample: pd.DataFrame) -> None:
    """Write ``folder/model.onnx`` for ``model``, after checking it on ``sample``."""
    try:
        import onnx
    except ImportError as exc:
        raise ConfigError(
            "exporting to ONNX needs the onnx package, which is not installed",
            hint="install the onnx extra: pip install 'beryl[onnx]'",
        ) from exc
    graph = build(model, card)
    onnx.checker.check_model(graph, full_check=True)
    data = graph.SerializeToString()
    _check_with_runtime(model, data, sample)
    (folder / ONNX_FILE).write_bytes(data)


def build(model: LinearModel, card: ModelCard) -> Any:
    """The ONNX ``ModelProto`` of ``model`` (see the module docstring)."""
    from onnx import TensorProto, helper, numpy_helper

    if len(model.classes) != 2:
        raise ModelError(
            f"ONNX export supports two-class models; {card.id} has {len(model.classes)} classes",
            hint="export it with --format mlflow",
        )
    schema = model.schema
    nodes: list[Any] = []
    constants: list[Any] = []

    def constant(name: str, value: Any, dtype: Any = np.float64) -> str:
        constants.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    positive = model.positive_index
    sign = 1.0 if positive == 1 else -1.0  # the score is for classes[1]
    total = constant("intercept", [model.intercept[0] * sign])
    inputs = []
    for j, name in enumerate(schema.numeric):
        inputs.append(helper.make_tensor_value_info(name, TensorProto.DOUBLE, ["N", 1]))
        fill = constant(f"{name}.fill", [model.numeric_fill[j]])
        mean = constant(f"{name}.mean", [model.mean[j]])
        scale = constant(f"{name}.scale", [model.scale[j]])
        weight = constant(f"{name}.coef", [model.coef[0, j] * sign])
        nodes += [
            helper.make_node("IsNaN", [name], [f"{name}.missing"]),
            helper.make_node("Where", [f"{name}.missing", fill, name], [f"{name}.filled"]),
            helper.make_node("Sub", [f"{name}.filled", mean], [f"{name}.centred"]),
            helper.make_node("Div", [f"{name}.centred", scale], [f"{name}.scaled"]),
            helper.make_node("Mul", [f"{name}.scaled", weight], [f"{name}.term"]),
            helper.make_node("Add", [total, f"{name}.term"], [f"{name}.sum"]),
        ]
        total = f"{name}.sum"
    offset = len(schema.numeric)
    for name, fill, known in zip(
        schema.categorical, model.categorical_fill, model.categories, strict=True
    ):
        inputs.append(helper.make_tensor_value_info(name, TensorProto.STRING, ["N", 1]))
        weights = model.coef[0, offset : offset + len(known)] * sign
        offset += len(known)
        keys = [str(c) for c in known]
        values = list(weights)
        if MISSING_TEXT not in keys:  # a missing category weighs as its fill value
            keys.append(MISSING_TEXT)
            values.append(weights[keys.index(str(fill))] if str(fill) in keys else 0.0)
        nodes += [
            helper.make_node(
                "LabelEncoder",
                [name],
                [f"{name}.term"],
                domain="ai.onnx.ml",
                keys_strings=keys,
                values_tensor=numpy_helper.from_array(np.array(values, dtype=np.float64)),
                default_tensor=numpy_helper.from_array(np.array([0.0])),
            ),
            helper.make_node("Add", [total, f"{name}.term"], [f"{name}.sum"]),
        ]
        total = f"{name}.sum"
    labels = [model.classes[1 - positive], model.classes[positive]]
    text = any(isinstance(c, str) for c in labels)
    label_type = TensorProto.STRING if text else TensorProto.INT64
    negative_label = constant("negative_label", [labels[0]], object if text else np.int64)
    positive_label = constant("positive_label", [labels[1]], object if text else np.int64)
    cut = constant("cut", [threshold_score(model.threshold)])
    nodes += [
        helper.make_node("Identity", [total], ["logit"]),
        helper.make_node("Sigmoid", ["logit"], ["probability"]),
        helper.make_node("Greater", ["logit", cut], ["is_positive"]),
        helper.make_node("Where", ["is_positive", positive_label, negative_label], ["label"]),
    ]
    outputs = [
        helper.make_tensor_value_info("label", label_type, ["N", 1]),
        helper.make_tensor_value_info("probability", TensorProto.DOUBLE, ["N", 1]),
    ]
    graph = helper.make_graph(nodes, "beryl_attrition", inputs, outputs, initializer=constants)
    proto = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET), helper.make_opsetid("ai.onnx.ml", ML_OPSET)],
        producer_name="beryl",
        doc_string=f"Beryl attrition model {card.id}",
    )
    proto.ir_version = 9  # what onnxruntime 1.17 and later read
    helper.set_model_props(
        proto,
        {
            "beryl_model_version": card.id,
            "threshold": repr(model.threshold),
            "positive_label": str(schema.positive_label),
            "missing_text": "the empty string",
        },
    )
    return proto


def feeds(model: LinearModel, frame: pd.DataFrame) -> dict[str, np.ndarray]:
    """The graph's inputs for ``frame``: missing numbers NaN, missing text the empty string."""
    out: dict[str, np.ndarray] = {}
    for name in model.schema.numeric:
        values = pd.to_numeric(frame[name]).to_numpy(dtype=np.float64, na_value=np.nan)
        out[name] = values.reshape(-1, 1)
    for name in model.schema.categorical:
        column = frame[name].astype(object)
        text = column.where(column.notna(), MISSING_TEXT).map(str)
        out[name] = text.to_numpy(dtype=object).reshape(-1, 1)
    return out


def _check_with_runtime(model: LinearModel, data: bytes, sample: pd.DataFrame) -> None:
    try:
        import onnxruntime  # type: ignore[import-untyped]
    except ImportError:
        return  # checked by the ONNX checker only; Beryl's tests run it on onnxruntime
    from beryl.model.export import check_agrees

    session = onnxruntime.InferenceSession(data, providers=["CPUExecutionProvider"])
    labels, chances = session.run(["label", "probability"], feeds(model, sample))
    check_agrees(model, sample, labels[:, 0], chances[:, 0], "ONNX")
