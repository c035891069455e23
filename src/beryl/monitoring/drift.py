"""Data drift: compare a new batch with the production model's training data, per feature.

A feature drifts when a two-sample test rejects "same distribution" *and* a distance says the
difference is large enough to matter. The test alone would flag any tiny difference in a large
batch; the distance alone would flag noise in a tiny one. Numeric features use Kolmogorov-Smirnov
and PSI; categorical features use chi-square and Jensen-Shannon distance, and a category never
seen in the reference is drift when it makes up a noticeable share of the batch.

    result = check_batches(workspace, production_batches, [new_batch], reference_label="v0001")
    result.dataset_drift, result.features["lastmonth_activity"].distance

The result is a ``beryl.monitoring.results.DriftResult``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import stats
from scipy.spatial.distance import jensenshannon

from beryl.config import DriftSettings, Settings
from beryl.data.schema import Schema
from beryl.errors import EmptyDatasetError
from beryl.monitoring.results import DriftResult, DriftSample, FeatureDrift
from beryl.workspace import Workspace

_EPSILON = 1e-4
_BINS = 10


def psi(reference: np.ndarray, current: np.ndarray, bins: int = _BINS) -> float:
    """Population stability index over the reference's quantile bins."""
    edges = np.unique(np.quantile(reference, np.linspace(0.0, 1.0, bins + 1)))
    if edges.size < 2:  # a constant reference: one bin for "equal", one for "different"
        same = np.isclose(current, edges[0])
        ref_share = np.array([1.0, 0.0])
        cur_share = np.array([same.mean(), 1.0 - same.mean()])
    else:
        inner = edges[1:-1]
        ref_counts = np.bincount(
            np.searchsorted(inner, reference, side="right"), minlength=edges.size - 1
        )
        cur_counts = np.bincount(
            np.searchsorted(inner, current, side="right"), minlength=edges.size - 1
        )
        ref_share = ref_counts / ref_counts.sum()
        cur_share = cur_counts / cur_counts.sum()
    ref_share = np.clip(ref_share, _EPSILON, None)
    cur_share = np.clip(cur_share, _EPSILON, None)
    return float(np.sum((cur_share - ref_share) * np.log(cur_share / ref_share)))


def numeric_drift(
    reference: pd.Series, current: pd.Series, settings: DriftSettings
) -> FeatureDrift:
    """Kolmogorov-Smirnov test and PSI of one numeric feature (missing values left out)."""
    ref = reference.dropna().to_numpy(dtype=float)
    cur = current.dropna().to_numpy(dtype=float)
    if ref.size < settings.min_rows or cur.size < settings.min_rows:
        return _too_few("kolmogorov-smirnov", "psi", ref.size, cur.size, settings)
    test = stats.ks_2samp(ref, cur)
    distance = psi(ref, cur)
    p_value = float(test.pvalue)
    return FeatureDrift(
        drifted=bool(p_value < settings.p_value and distance > settings.psi_threshold),
        test="kolmogorov-smirnov",
        statistic=float(test.statistic),
        p_value=p_value,
        distance=distance,
        distance_name="psi",
        threshold=settings.psi_threshold,
        reference_mean=float(ref.mean()),
        current_mean=float(cur.mean()),
    )


def categorical_drift(
    reference: pd.Series, current: pd.Series, settings: DriftSettings
) -> FeatureDrift:
    """Chi-square test and Jensen-Shannon distance of one categorical feature."""
    ref = reference.fillna("(missing)").astype(str)
    cur = current.fillna("(missing)").astype(str)
    if len(ref) < settings.min_rows or len(cur) < settings.min_rows:
        return _too_few("chi-square", "jensen-shannon", len(ref), len(cur), settings)
    categories = sorted(set(ref.unique()) | set(cur.unique()))
    ref_counts = ref.value_counts().reindex(categories, fill_value=0).to_numpy(dtype=float)
    cur_counts = cur.value_counts().reindex(categories, fill_value=0).to_numpy(dtype=float)
    new = [c for c, r, k in zip(categories, ref_counts, cur_counts, strict=True) if r == 0 and k]
    new_share = float(sum(cur_counts[categories.index(c)] for c in new) / cur_counts.sum())
    if len(categories) > 1:
        test = stats.chi2_contingency(np.vstack([ref_counts, cur_counts]))
        statistic, p_value = float(test.statistic), float(test.pvalue)
    else:
        statistic, p_value = 0.0, 1.0
    distance = float(
        jensenshannon(ref_counts / ref_counts.sum(), cur_counts / cur_counts.sum(), base=2)
    )
    drifted = (p_value < settings.p_value and distance > settings.jensen_shannon_threshold) or (
        new_share >= settings.new_category_share
    )
    return FeatureDrift(
        drifted=bool(drifted),
        test="chi-square",
        statistic=statistic,
        p_value=p_value,
        distance=distance,
        distance_name="jensen-shannon",
        threshold=settings.jensen_shannon_threshold,
        new_categories=tuple(new[:20]),
        new_category_share=new_share,
    )


def _too_few(test: str, distance: str, ref: int, cur: int, settings: DriftSettings) -> FeatureDrift:
    return FeatureDrift(
        drifted=False,
        test=test,
        statistic=None,
        p_value=None,
        distance=None,
        distance_name=distance,
        threshold=None,
        note=f"not tested: {min(ref, cur)} rows, fewer than min_rows={settings.min_rows}",
    )


def check_batches(
    workspace: Workspace | Settings,
    reference_batches: Sequence[str],
    current_batches: Sequence[str],
    *,
    reference_label: str,
) -> DriftResult:
    """Drift of some batches of the workspace's dataset against others, with its drift
    settings (a sample of at most ``max_reference_rows`` reference rows, drawn with a fixed
    seed). ``reference_label`` is the model version trained on the reference batches."""
    workspace = Workspace.of(workspace)
    dataset, settings = workspace.dataset, workspace.settings.drift
    schema = dataset.schema
    if schema is None:
        raise EmptyDatasetError("no data has been ingested yet", hint="run `beryl ingest` first")
    reference = dataset.read(columns=schema.features, batches=list(reference_batches))
    if len(reference) > settings.max_reference_rows:
        reference = reference.sample(n=settings.max_reference_rows, random_state=0)
    current = dataset.read(columns=schema.features, batches=list(current_batches))
    return compare(
        reference,
        current,
        schema,
        settings,
        reference_label=reference_label,
        reference_batches=reference_batches,
        current_batches=current_batches,
    )


def compare(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    schema: Schema,
    settings: DriftSettings,
    *,
    reference_label: str | None = None,
    reference_batches: Sequence[str] = (),
    current_batches: Sequence[str] = (),
) -> DriftResult:
    """Per-feature drift and the dataset-level verdict (share of drifted features)."""
    features: dict[str, FeatureDrift] = {}
    for column in schema.numeric:
        features[column] = numeric_drift(reference[column], current[column], settings)
    for column in schema.categorical:
        features[column] = categorical_drift(reference[column], current[column], settings)
    return DriftResult.of(
        features,
        DriftSample(len(reference), tuple(reference_batches), reference_label),
        DriftSample(len(current), tuple(current_batches)),
        settings.dataset_drift_share,
    )
