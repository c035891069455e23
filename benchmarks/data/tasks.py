"""Child side of the data-path benchmarks: every task runs in a fresh process of its own.

    python benchmarks/data/tasks.py cli [BERYL ARGS...]     # exactly what `python -m beryl` runs
    python benchmarks/data/tasks.py TASK '{"json": "params"}'

When ``BENCH_REPORT`` names a file, the process writes a JSON report there as it exits: its own
peak resident memory (``VmHWM`` of this process's address space, so nothing inherited from the
parent counts) and whatever the task measured. Only the standard library is imported at module
level; each task imports what it needs, so the ``cli`` task costs Beryl's own imports and no more.

Tasks (see ``TASKS``): ``generate`` and ``generate-wide`` write the cached data sets
(``datagen.py``, ``widegen.py``); ``workspace`` creates a Beryl workspace; ``ingest-pandas``,
``predict-pandas``, ``stats-pandas`` and ``train-sklearn`` are the peers; ``train-split`` times
the phases of Beryl's ``train``; ``compare-ingest`` and ``compare-predictions`` check that Beryl
and its peer produced the same outputs. The DuckDB peer runs in a venv of its own
(``barejob.py``), not here; it writes its report with ``write_report`` from this module.
"""

from __future__ import annotations

import atexit
import json
import os
import resource
import runpy
import shutil
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from datagen import ID_COLUMN, LABEL, NUMERIC

REPORT_ENV = "BENCH_REPORT"
TRACE_ENV = "BENCH_TRACE_RSS"

LISTINGS = ("ls_beryl", "ls_peer")
Params = dict[str, Any]
Report = dict[str, Any]

REPORT: Report = {}


# -- process report ---------------------------------------------------------------------------
def peak_rss_kb() -> int:
    """Peak resident set of this process's own address space (VmHWM), in KiB."""
    with open("/proc/self/status", encoding="ascii") as handle:
        for line in handle:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


def write_report(path: str, report: Report) -> None:
    """Write ``report`` to ``path`` as JSON, with this process's peak memory as it is now."""
    data = {
        **report,
        "vmhwm_kb": peak_rss_kb(),
        "ru_maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
    }
    Path(path).write_text(json.dumps(data, default=str), encoding="utf-8")


# -- data generation --------------------------------------------------------------------------
def task_generate(params: Params) -> Report:
    """Write the demo data set once (``datagen.generate_demo``)."""
    from datagen import generate_demo

    return generate_demo(params)


def task_generate_wide(params: Params) -> Report:
    """Write the wide data set once (``widegen.generate_wide``)."""
    from widegen import generate_wide

    return generate_wide(params)


def task_workspace(params: Params) -> Report:
    """A fresh Beryl workspace: Beryl's default config, input files linked from the cache.

    ``limit`` (optional) links only the first ``limit`` input files by name.
    """
    from beryl.config import default_config

    root = Path(params["root"])
    shutil.rmtree(root, ignore_errors=True)
    config = default_config() | params.get("overrides", {})
    root.mkdir(parents=True)
    (root / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    for key in ("input_folder_path", "output_folder_path", "test_data_path", "output_model_path"):
        (root / config[key]).mkdir(parents=True, exist_ok=True)
    linked = 0
    for source in first_csv_files(Path(params["inputs"]), params.get("limit")):
        link(source, root / config["input_folder_path"] / source.name)
        linked += 1
    if params.get("test"):
        link(Path(params["test"]), root / config["test_data_path"] / "testdata.csv")
    return {"config": str(root / "config.json"), "inputs": linked}


def first_csv_files(folder: Path, limit: int | None = None) -> list[Path]:
    """The ``*.csv`` files of ``folder`` by name; only the first ``limit`` when it is given."""
    return sorted(folder.glob("*.csv"))[:limit]


def link(source: Path, target: Path) -> None:
    """Hard-link ``source`` to ``target`` (a copy when linking is impossible)."""
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


# -- peers ------------------------------------------------------------------------------------
def task_ingest_pandas(params: Params) -> Report:
    """The original ingestion: read_csv every file, concat, drop_duplicates, to_csv.

    ``limit`` (optional) reads only the first files by name, as ``workspace`` links them.
    """
    import pandas as pd

    source, output = Path(params["input"]), Path(params["output"])
    files = first_csv_files(source, params.get("limit"))
    frames = [pd.read_csv(path) for path in files]
    final = pd.concat(frames, ignore_index=True).drop_duplicates()
    output.mkdir(parents=True, exist_ok=True)
    final.to_csv(output / "finaldata.csv", index=False)
    listing = "".join(f"{path.name}\n" for path in files)
    (output / "ingestedfiles.txt").write_text(listing, encoding="utf-8")
    return {"rows_read": sum(len(f) for f in frames), "rows_written": len(final)}


def _production_model(workspace: Path) -> tuple[Any, float]:
    """The production model's pickle from the registry (what the original scripts loaded) and
    its decision threshold (the card's tuned one; 0.5 untuned)."""
    import pickle

    config = json.loads((workspace / "config.json").read_text(encoding="utf-8"))
    models = workspace / config["output_model_path"]
    version = json.loads((models / "production.json").read_text(encoding="utf-8"))["version"]
    card = json.loads((models / "versions" / version / "card.json").read_text(encoding="utf-8"))
    threshold = (card.get("tuning") or {}).get("threshold") or 0.5
    return pickle.loads((models / "versions" / version / "model.pkl").read_bytes()), threshold


def task_predict_pandas(params: Params) -> Report:
    """Batch scoring as most teams write it: read_csv, predict_proba, to_csv (the label by the
    model's own threshold, as Beryl gives it: positive above it)."""
    import numpy as np
    import pandas as pd

    model, threshold = _production_model(Path(params["workspace"]))
    frame = pd.read_csv(params["input"])
    proba = model.predict_proba(frame[list(model.feature_names_in_)])
    classes = list(model.classes_)
    positive = classes.index(params["positive_label"])
    negative = model.classes_[1 - positive]
    chance = proba[:, positive]
    out = pd.DataFrame(
        {
            ID_COLUMN: frame[ID_COLUMN],
            "prediction": np.where(chance > threshold, model.classes_[positive], negative),
            "probability": chance,
        }
    )
    out.to_csv(params["output"], index=False)
    return {"rows": len(out)}


def task_stats_pandas(params: Params) -> Report:
    """The original diagnostics: re-read finaldata.csv and recompute the statistics per request."""
    import pandas as pd

    seconds = []
    for _ in range(int(params["repeats"])):
        started = time.perf_counter()
        frame = pd.read_csv(params["csv"])
        numeric = frame.select_dtypes("number").drop(columns=[LABEL], errors="ignore")
        stats = {
            column: {
                "mean": numeric[column].mean(),
                "median": numeric[column].median(),
                "std": numeric[column].std(),
                "count": int(numeric[column].count()),
                "min": numeric[column].min(),
                "max": numeric[column].max(),
            }
            for column in numeric.columns
        }
        missing = (frame.isna().mean() * 100).to_dict()
        json.dumps({"summary_stats": stats, "missing_percent": missing}, default=float)
        seconds.append(time.perf_counter() - started)
    return {"seconds": seconds}


def _timed(owner: Any, name: str, key: str, sink: dict[str, float]) -> None:
    """Replace ``owner.name`` with a wrapper that adds its duration to ``sink[key]``."""
    original = getattr(owner, name)

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            sink[key] = sink.get(key, 0.0) + time.perf_counter() - started

    setattr(owner, name, wrapper)


def task_train_split(params: Params) -> Report:
    """Beryl's ``train`` in process, with the time of each phase: load, the cross-validated
    search, the final fit, register."""
    started = time.perf_counter()
    import beryl.data.dataset
    import beryl.model.engine
    import beryl.model.registry
    import beryl.model.training
    from beryl.config import load

    phases: dict[str, float] = {"import_s": time.perf_counter() - started}
    _timed(beryl.data.dataset.Dataset, "read", "load_s", phases)
    _timed(beryl.model.engine, "search", "search_s", phases)
    _timed(beryl.model.engine, "fit_pipeline", "fit_s", phases)
    _timed(beryl.model.registry.Registry, "create", "register_s", phases)
    settings = load(params["config"])
    began = time.perf_counter()
    card = beryl.model.training.train(settings)
    phases["train_s"] = time.perf_counter() - began
    phases["other_s"] = phases["train_s"] - sum(
        phases.get(k, 0.0) for k in ("load_s", "search_s", "fit_s", "register_s")
    )
    return {"phases": phases, "version": card.id, "rows": card.training["rows"]}


def task_ingest_in_process(params: Params) -> Report:
    """Beryl's ``ingest()`` timed inside the process, as a running ``beryl schedule`` calls it
    (the imports and the rest of the process start-up are not timed)."""
    from beryl.config import load
    from beryl.data.ingestion import ingest

    settings = load(params["config"], check_model=False)
    started = time.perf_counter()
    result = ingest(settings)
    return {"ingest_s": time.perf_counter() - started, "rows_added": result.rows_added}


def task_train_sklearn(params: Params) -> Report:
    """scikit-learn's own ``fit`` of the untuned pipeline (the config's parameters, scikit-learn's
    default solver, threshold 0.5) on the same arrays (loading not timed); then, untimed, how far
    Beryl's latest model (calibration taken out) is from the exact optimum of the setting its
    search chose: that pipeline fitted by Newton steps to a gradient of 1e-12."""
    from sklearn.exceptions import ConvergenceWarning

    from beryl.config import load
    from beryl.data.dataset import Dataset
    from beryl.model.engine import build_pipeline
    from beryl.model.registry import Registry

    settings = load(params["config"])
    dataset = Dataset(settings.output_folder)
    schema = dataset.schema
    assert schema is not None
    started = time.perf_counter()
    frame = dataset.read(columns=[*schema.features, schema.target])
    features, labels = frame[schema.features], frame[schema.target]
    load_s = time.perf_counter() - started

    def fit(model_params: dict[str, Any]) -> Any:
        pipeline = build_pipeline(schema, model_params, scale=settings.scale_features)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            pipeline.fit(features, labels)
        return pipeline.named_steps["model"]

    started = time.perf_counter()
    plain = fit({"solver": "lbfgs"} | settings.model)  # scikit-learn's default solver
    fit_s = time.perf_counter() - started
    registry = Registry(settings.model_folder)
    card = registry.card(registry.latest())
    chosen = card.tuning.get("params") or {}
    exact = fit(settings.model | chosen | {"solver": "newton-cholesky", "tol": 1e-12})
    theirs = registry.pipeline(card.id).named_steps["model"]
    calibration = card.tuning.get("calibration") or {}
    a, b = 1.0, 0.0
    if calibration.get("method") == "sigmoid":
        a, b = float(calibration["a"]), float(calibration["b"])
    sign = 1.0 if theirs.classes_[1] == schema.positive_label else -1.0
    coef_diff = float(abs(exact.coef_ - theirs.coef_ / a).max())
    intercept_diff = float(abs(exact.intercept_ - (theirs.intercept_ - sign * b) / a).max())
    return {
        "load_s": load_s,
        "fit_s": fit_s,
        "rows": len(frame),
        "n_iter": int(plain.n_iter_.max()),
        "compared_with": card.id,
        "chosen": chosen,
        "solver": theirs.solver,
        "threshold": card.tuning.get("threshold"),
        "max_coef_diff": max(coef_diff, intercept_diff),
    }


# -- verification -----------------------------------------------------------------------------
def _read_dataset_csv(path: str) -> Any:
    import pyarrow as pa
    import pyarrow.csv as pacsv

    types = {ID_COLUMN: pa.string(), LABEL: pa.int64()} | dict.fromkeys(NUMERIC, pa.float64())
    return pacsv.read_csv(
        path, convert_options=pacsv.ConvertOptions(column_types=types, strings_can_be_null=True)
    )


def task_compare_ingest(params: Params) -> Report:
    """Both finaldata.csv files hold the same rows (as a multiset) and, when both listings are
    given (``ls_beryl``, ``ls_peer``), list the same files."""
    ours, theirs = _read_dataset_csv(params["beryl"]), _read_dataset_csv(params["peer"])
    report: Report = {"rows_beryl": ours.num_rows, "rows_peer": theirs.num_rows}
    columns = [ID_COLUMN, *NUMERIC, LABEL]
    order = [(c, "ascending") for c in columns]
    identical = ours.num_rows == theirs.num_rows
    if identical:
        ours = ours.select(columns).sort_by(order).combine_chunks()
        theirs = theirs.select(columns).sort_by(order).combine_chunks()
        identical = all(ours.column(c).equals(theirs.column(c)) for c in columns)
    report["same_rows"] = identical
    if all(key in params for key in LISTINGS):
        ours_ls, theirs_ls = (Path(params[k]).read_text(encoding="utf-8").split() for k in LISTINGS)
        report["same_ingestedfiles"] = sorted(ours_ls) == sorted(theirs_ls)
    return report


def task_compare_predictions(params: Params) -> Report:
    """Same rows, ids and predictions; probabilities equal to ``tolerance``."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.csv as pacsv

    types = {ID_COLUMN: pa.string(), "prediction": pa.int64(), "probability": pa.float64()}
    options = pacsv.ConvertOptions(column_types=types)
    ours = pacsv.read_csv(params["beryl"], convert_options=options)
    theirs = pacsv.read_csv(params["peer"], convert_options=options)
    report: Report = {"rows_beryl": ours.num_rows, "rows_peer": theirs.num_rows}
    if ours.num_rows != theirs.num_rows:
        return report | {"equal": False}
    step = max(1, ours.num_rows // int(params["sample"]))
    rows = np.arange(0, ours.num_rows, step)
    report["sampled_rows"] = len(rows)
    report["same_ids"] = ours.column(ID_COLUMN).equals(theirs.column(ID_COLUMN))
    report["same_predictions"] = ours.column("prediction").equals(theirs.column("prediction"))
    a = ours.column("probability").to_numpy()
    b = theirs.column("probability").to_numpy()
    report["max_abs_diff_sample"] = float(np.abs(a[rows] - b[rows]).max())
    report["max_abs_diff_all"] = float(np.abs(a - b).max())
    report["equal"] = bool(
        report["same_ids"]
        and report["same_predictions"]
        and report["max_abs_diff_sample"] <= float(params["tolerance"])
    )
    return report


TASKS: dict[str, Callable[[Params], Report]] = {
    "generate": task_generate,
    "generate-wide": task_generate_wide,
    "workspace": task_workspace,
    "ingest-pandas": task_ingest_pandas,
    "ingest-in-process": task_ingest_in_process,
    "predict-pandas": task_predict_pandas,
    "stats-pandas": task_stats_pandas,
    "train-split": task_train_split,
    "train-sklearn": task_train_sklearn,
    "compare-ingest": task_compare_ingest,
    "compare-predictions": task_compare_predictions,
}


def run_cli(args: list[str]) -> None:
    """Run the Beryl CLI in this process exactly as ``python -m beryl ARGS`` does."""
    if os.environ.get(TRACE_ENV):
        trace_rss(os.environ[TRACE_ENV].split(","))
    sys.argv = ["beryl", *args]
    runpy.run_module("beryl", run_name="__main__", alter_sys=True)


# -- memory timeline (profiling runs only) ----------------------------------------------------
def _vm_rss_mb() -> int:
    with open("/proc/self/status", encoding="ascii") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) // 1024
    return 0


def trace_rss(functions: list[str]) -> None:
    """Sample VmRSS every 10 ms and mark entry and exit of ``module:Qual.name`` functions.

    The report gets ``rss_timeline``: one line per mark with the RSS then and the highest RSS
    sampled since the previous mark, which tells which phase holds the peak.
    """
    import importlib
    import threading

    started = time.perf_counter()
    samples: list[tuple[float, int]] = []
    marks: list[tuple[float, str, int]] = []

    def sample() -> None:
        while True:
            samples.append((time.perf_counter() - started, _vm_rss_mb()))
            time.sleep(0.01)

    def mark(name: str) -> None:
        marks.append((time.perf_counter() - started, name, _vm_rss_mb()))

    def wrap(spec: str) -> None:
        module_name, qualname = spec.split(":")
        owner: Any = importlib.import_module(module_name)
        *path, attr = qualname.split(".")
        for part in path:
            owner = getattr(owner, part)
        original = getattr(owner, attr)

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            mark(f"> {qualname}")
            try:
                return original(*args, **kwargs)
            finally:
                mark(f"< {qualname}")

        setattr(owner, attr, wrapper)

    def summarise() -> None:
        lines, previous = [], 0.0
        for at, name, rss in [*marks, (time.perf_counter() - started, "exit", _vm_rss_mb())]:
            window = [mb for t, mb in list(samples) if previous <= t <= at] or [rss]
            lines.append(
                f"{at:8.2f} s  {name:<44} rss {rss:6d} MB  max since previous {max(window):6d} MB"
            )
            previous = at
        REPORT["rss_timeline"] = lines

    for spec in functions:
        wrap(spec)
    threading.Thread(target=sample, name="rss-sampler", daemon=True).start()
    atexit.register(summarise)  # runs before the report is written (atexit is LIFO)


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if os.environ.get(REPORT_ENV):
        atexit.register(write_report, os.environ[REPORT_ENV], REPORT)
    if not args:
        raise SystemExit(f"usage: tasks.py cli ARGS... | tasks.py TASK JSON ({', '.join(TASKS)})")
    if args[0] == "cli":
        run_cli(args[1:])
        return
    task = TASKS[args[0]]
    REPORT.update(task(json.loads(args[1]) if len(args) > 1 else {}))


if __name__ == "__main__":
    main()
