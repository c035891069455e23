"""Training: a candidate model version fitted on the whole consolidated dataset.

The fitting itself is the workspace's ``TrainingEngine`` (``beryl.model.engine``: scikit-learn,
or Spark MLlib with ``engine: "spark"``, which reads the batches itself); this module turns a
fit into a registered, immutable model version with its card.
"""

from __future__ import annotations

import platform
from importlib import metadata

from beryl._io import utc_now
from beryl.config import Settings, check_model
from beryl.errors import EmptyDatasetError
from beryl.model.card import ModelCard
from beryl.model.engine import DatasetEngine, TrainingOptions
from beryl.workspace import Workspace

_LIBRARIES = ("beryl", "scikit-learn", "numpy", "pandas", "pyarrow", "scipy")


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in _LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "unknown"
    return versions


def train(workspace: Workspace | Settings) -> ModelCard:
    """Train a candidate on the whole consolidated dataset and register it as a new version."""
    workspace = Workspace.of(workspace)
    settings = workspace.settings
    check_model(settings)
    dataset = workspace.dataset
    schema = dataset.schema
    if schema is None or not dataset.batches:
        raise EmptyDatasetError(
            f"no data has been ingested into {settings.output_folder} yet",
            hint="run `beryl ingest` first",
        )
    schema.check_settings(settings)
    options = TrainingOptions(scale=settings.scale_features, tuning=settings.tuning)
    engine = workspace.engine
    if isinstance(engine, DatasetEngine):  # reads the batches itself (Spark)
        fitted = engine.fit_dataset(schema, settings.model, dataset, options)
        rows = dataset.rows
    else:
        frame = dataset.read(columns=[*schema.features, schema.target])
        fitted = engine.fit(schema, settings.model, frame, options)
        rows = len(frame)
    card = ModelCard(
        id="",
        created=utc_now(),
        schema=schema.to_dict(),
        parameters={"engine": workspace.engine.name, **fitted.parameters},
        classes=list(fitted.model.classes),
        training={
            "rows": rows,
            "batches": [b.id for b in dataset.batches],
            "files": [
                {"name": r.name, "sha256": r.sha256}
                for r in dataset.files
                if r.status == "ingested"
            ],
        },
        libraries=library_versions(),
        tuning={
            **fitted.tuning.to_dict(),
            "scale_features": settings.scale_features,
            "threshold": fitted.model.threshold,
        },
    )
    return workspace.registry.create(fitted.artifact, card, model=fitted.model, latest=True)
