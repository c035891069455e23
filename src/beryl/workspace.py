"""One workspace: its settings and the stores under them, built once by an entry point.

The CLI, the API factory and the scheduler each build a ``Workspace`` from the loaded
``Settings`` and hand it to the stages; no stage builds a store from paths. It owns:

- ``dataset``: the consolidated dataset (``beryl.data.dataset.Dataset``), read once and read
  again only when ``dataset.json`` changed on disk;
- ``registry``: the model versions, the production pointer and its log;
- ``history``: the history database (``beryl.monitoring.store.HistoryStore``);
- ``lock``: the single-flight lock around a pass (``beryl.lock.PassLock``);
- ``engine``: what trains a model (``beryl.model.engine.TrainingEngine``);
- ``reader``: what reads new input files when it is not this process (Spark), else None.

Each backend is a seam (a folder; SQLite and a lock file, or PostgreSQL for both when
``history_url`` is set; scikit-learn) and can be handed in instead::

    workspace = Workspace(config.load("ws/config.json"))
    workspace.dataset.rows, workspace.registry.production()
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from beryl.config import Settings

if TYPE_CHECKING:
    from beryl.data.dataset import Dataset
    from beryl.data.ingestion import FileReader
    from beryl.lock import PassLock
    from beryl.model.engine import TrainingEngine
    from beryl.model.registry import Registry
    from beryl.model.signing import Keyring
    from beryl.monitoring.store import HistoryStore


class Workspace:
    """A workspace's settings and stores (see the module docstring)."""

    def __init__(
        self,
        settings: Settings,
        *,
        history: HistoryStore | None = None,
        lock: PassLock | None = None,
        engine: TrainingEngine | None = None,
        keyring: Keyring | None = None,
    ) -> None:
        self.settings = settings
        self._history = history
        self._lock = lock
        self._engine = engine
        self._keyring = keyring
        self._registry: Registry | None = None
        self._dataset: Dataset | None = None

    @classmethod
    def of(cls, value: Workspace | Settings) -> Workspace:
        """``value`` itself, or a workspace for these settings (library calls take either)."""
        return value if isinstance(value, Workspace) else cls(value)

    @property
    def root(self) -> Path:
        return self.settings.root

    @property
    def dataset(self) -> Dataset:
        """The dataset, as ``dataset.json`` is now (one ``stat`` to know; read when another
        process changed it: what this process publishes, the dataset already holds)."""
        from beryl.data.dataset import Dataset

        if self._dataset is None or not self._dataset.is_current():
            self._dataset = Dataset(self.settings.output_folder)
        return self._dataset

    def forget_dataset(self) -> None:
        """Read ``dataset.json`` again on next use (after this process changed it)."""
        self._dataset = None

    @property
    def registry(self) -> Registry:
        """The models folder, or with ``registry_url`` the registry on object storage (its
        credentials from the ``AWS_*`` environment variables; ``beryl.objectstore``)."""
        if self._registry is None:
            from beryl.model.registry import Registry

            storage = None
            if self.settings.registry_url is not None:
                import os

                from beryl.objectstore import S3Storage

                storage = S3Storage(self.settings.registry_url, os.environ)
            self._registry = Registry(self.settings.model_folder, self._keyring, storage=storage)
        return self._registry

    @property
    def history(self) -> HistoryStore:
        if self._history is None:
            self._history = open_history(self.settings)
        return self._history

    @property
    def lock(self) -> PassLock:
        """The lock file in the workspace, or with ``history_url`` an advisory lock in that
        database (single flight across the machines that share it)."""
        if self._lock is None:
            if self.settings.history_url is not None:
                from beryl.monitoring.pglock import PgLock

                self._lock = PgLock(self.settings.history_url)
            else:
                from beryl.lock import FileLock

                self._lock = FileLock(self.settings.lock_file)
        return self._lock

    @property
    def engine(self) -> TrainingEngine:
        """scikit-learn on this machine, or MLlib with ``engine: "spark"``."""
        if self._engine is None:
            if self.settings.engine == "spark":
                from beryl.spark.train import SparkEngine

                self._engine = SparkEngine(self.settings.spark)
            else:
                from beryl.model.engine import SklearnEngine

                self._engine = SklearnEngine()
        return self._engine

    @property
    def reader(self) -> FileReader | None:
        """Spark's tasks with ``engine: "spark"``; None: ingestion reads the files here."""
        if self.settings.engine != "spark":
            return None
        from beryl.spark.ingest import SparkReader

        return SparkReader(self.settings.spark)


def open_history(settings: Settings, *, timeout: float = 60.0) -> HistoryStore:
    """The workspace's history: SQLite in the workspace, or the PostgreSQL database that
    ``history_url`` names; a call waits at most ``timeout`` seconds for it."""
    if settings.history_url is not None:
        from beryl.monitoring.pghistory import PgHistory

        return PgHistory(settings.history_url, timeout=timeout)
    from beryl.monitoring.history import History

    return History(settings.history_db, timeout=timeout)
