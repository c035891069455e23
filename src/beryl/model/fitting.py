"""How Beryl fits its scikit-learn pipeline on many rows: what ``Pipeline.fit`` gives, faster.

- **Medians by partition.** ``SimpleImputer(strategy="median")`` sorts every masked column;
  the imputer is fitted instead with ``present_median`` (``np.median`` of the present values, a
  partition), which gives the same statistics, and is left with ``strategy="median"``: the
  fitted pipeline, and its pickle, are plain scikit-learn.
- **A solver made for many rows and few columns.** Unless ``config.json``'s ``model`` section
  chooses a solver or a penalty other than L2, ``LogisticRegression`` runs ``newton-cholesky``
  to a gradient of at most ``TOLERANCE``: a few Newton steps, each one pass over the rows. On
  more than ``4 * WARM_ROWS`` rows it starts from the same fit on ``WARM_ROWS`` of them chosen
  at random (fixed seed), and two steps on every row then reach the optimum (the coefficients
  agree with a fit to a gradient of 1e-12 to about 1e-9, where the default ``lbfgs`` at its
  default tolerance stops about 1e-3 away).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

SOLVER = "newton-cholesky"
TOLERANCE = 1e-8
WARM_ROWS = 250_000
_SEED = 0


def model_params(params: dict[str, Any]) -> dict[str, Any]:
    """``LogisticRegression``'s parameters: ``params`` with Beryl's solver and tolerance unless
    they choose a solver, or a penalty that solver does not take (L1, elastic net)."""
    if "solver" in params or params.get("dual"):
        return params
    if params.get("penalty", "l2") not in ("l2", None) or params.get("l1_ratio") not in (None, 0):
        return params
    return {"solver": SOLVER, "tol": TOLERANCE} | params


def present_median(values: np.ndarray) -> float:
    """The median of one column's present values (a copy, partitioned in place), 0 when there
    are none: what ``SimpleImputer(strategy="median", keep_empty_features=True)`` computes."""
    if not len(values):
        return 0.0
    return float(np.median(values, overwrite_input=True))


def fit_features(transform: Any, features: Any, labels: Any) -> Any:
    """``transform.fit_transform`` (Beryl's ``ColumnTransformer``) with the numeric imputer's
    medians by partition; the fitted imputer keeps ``strategy="median"``."""
    if not any(name == "numeric" for name, _, _ in transform.transformers):
        return transform.fit_transform(features, labels)
    transform.set_params(numeric__impute__strategy=present_median)
    try:
        matrix = transform.fit_transform(features, labels)
    finally:
        transform.set_params(numeric__impute__strategy="median")
    transform.named_transformers_["numeric"].named_steps["impute"].strategy = "median"
    return matrix


def warm_start(estimator: Any, matrix: Any, labels: Any, fit: Callable[..., None]) -> bool:
    """Start ``estimator`` (unfitted, Beryl's solver) from its own fit (by ``fit``) on
    ``WARM_ROWS`` random rows when there are many more; whether it was. The caller fits it on
    every row, then sets ``warm_start=False`` back."""
    from sklearn.base import clone

    rows = matrix.shape[0]
    if estimator.solver != SOLVER or estimator.warm_start or rows <= 4 * WARM_ROWS:
        return False
    picks = np.sort(np.random.default_rng(_SEED).choice(rows, WARM_ROWS, replace=False))
    every = np.asarray(labels)
    sample = every[picks]
    if len(pd.unique(sample)) != len(pd.unique(every)):
        return False  # a class too rare to be sampled: start from zero
    start = clone(estimator)
    fit(start, matrix[picks], sample)
    estimator.set_params(warm_start=True)
    estimator.coef_, estimator.intercept_ = start.coef_.copy(), start.intercept_.copy()
    return True
