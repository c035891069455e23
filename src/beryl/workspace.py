"""One workspace: its settings and the stores under them, built once by an entry point.

The CLI, the API factory and the scheduler each build a ``Workspace`` from the loaded
``Settings`` and hand it to the stages; no stage builds a store from paths. It owns:

- ``dataset``: the consolidated dataset (``beryl.data.dataset.Dataset``), read once and read
  again only when ``dataset.json`` changed on disk;
- ``registry``: the model versions, the production pointer and its log;
- ``history``: the history database (``beryl.monitoring.store.HistoryStore``);
- ``lock``: the single-flight lock around a pass (``beryl.lock.PassLock``);
- ``engine``: what trains a model (``beryl.model.engine.TrainingEngine``);
- ``reader``: what reads new input files when it is not this process (Spark), else None;
- ``mirror``: with ``workspace_url``, the bucket that holds the input files, the dataset and the
  reports (``beryl.data.remote``), which ``synced`` keeps in step around a command; else None.

Each backend is a seam (a folder; SQLite and a lock file, or PostgreSQL for both when
``history_url`` is set; scikit-learn) and can be handed in instead::

    workspace = Workspace(config.load("ws/config.json"))
    workspace.dataset.rows, workspace.registry.production()
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from beryl.config import Settings

if TYPE_CHECKING:
    from beryl.data.dataset import Dataset
    from beryl.data.ingestion import FileReader
    from beryl.data.remote import WorkspaceMirror
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
        mirror: WorkspaceMirror | None = None,
        follow: bool = False,
    ) -> None:
        """``follow``: a reader that never changes the workspace (the API) and takes a dataset
        another machine published (``workspace_url``) within ``api.registry_poll_s``."""
        self.settings = settings
        self._follow = follow
        self._mirror = mirror
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

        if self._follow and self.mirror is not None:
            self.mirror.refresh(self.settings.api.registry_poll_s)
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
            if self.settings.registry_location is not None:
                import os

                from beryl.objectstore import S3Storage

                storage = S3Storage(self.settings.registry_location, os.environ)
            self._registry = Registry(self.settings.model_folder, self._keyring, storage=storage)
        return self._registry

    @property
    def mirror(self) -> WorkspaceMirror | None:
        """The bucket of ``workspace_url`` and this machine's state of it; None without one."""
        if self._mirror is None and self.settings.workspace_url is not None:
            import os

            from beryl.data.remote import WorkspaceMirror
            from beryl.objectstore import S3Storage

            storage = S3Storage(self.settings.workspace_url, os.environ)
            self._mirror = WorkspaceMirror(self.settings, storage)
        return self._mirror

    @contextlib.contextmanager
    def synced(self) -> Iterator[None]:
        """Around a command that changes the workspace (under its lock): take the input files
        and what other machines published from ``workspace_url`` first, and publish what the
        command changed at the end, also when it failed. Without ``workspace_url``, nothing."""
        if self.mirror is None:
            yield
            return
        with self.mirror.turn():
            self.mirror.pull_inputs()
            self.mirror.sync()
        self.forget_dataset()
        try:
            yield
        except BaseException:
            with contextlib.suppress(Exception):  # the command's own error is the one to show
                self.publish()
            raise
        self.publish()

    def publish(self) -> None:
        """With ``workspace_url``: upload what this machine changed (new batches, then the
        manifest by compare-and-swap; the report); without, nothing."""
        if self.mirror is not None:
            with self.mirror.turn():
                self.mirror.sync(publishing=True)
            self.forget_dataset()

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
