"""Save a pickled scikit-learn pipeline as an MLflow model (run inside the MLflow venv).

    mlflow-venv/bin/python mlflow_save.py MODEL_PKL OUT_DIR

The pyfunc answers ``predict_proba`` (one [p0, p1] pair per record), so its probabilities can be
checked against Beryl's; no signature is logged, so the server skips schema enforcement (the
fastest way MLflow serves this model).
"""

from __future__ import annotations

import pickle
import shutil
import sys
from pathlib import Path

import mlflow.sklearn


def main() -> None:
    model_pkl, out_dir = Path(sys.argv[1]), Path(sys.argv[2])
    model = pickle.loads(model_pkl.read_bytes())
    if out_dir.exists():
        shutil.rmtree(out_dir)
    mlflow.sklearn.save_model(
        model,
        str(out_dir),
        serialization_format=mlflow.sklearn.SERIALIZATION_FORMAT_PICKLE,
        pyfunc_predict_fn="predict_proba",
    )
    print(out_dir)


if __name__ == "__main__":
    main()
