"""One workspace: its settings and the stores under them, built once by an entry point.

The CLI, the API factory and the scheduler each build a ``Workspace`` from the loaded
``Settings`` and hand it to the stages; no stage builds a store from paths. It owns:

- ``dataset``: the consolidated dataset (``beryl.data.dataset.Dataset``), read once and read
  again only when ``dataset.json`` changed on disk;
- ``registry``: the model versions, the production pointer and its log;
- ``history``: the history database (``beryl.monitoring.store.HistoryStore``);
- ``lock``: the single-flight lock around a pass (``beryl.lock.PassLock``);
- ``engine``: what trains a model (``beryl.model.engine.TrainingEngine``).

Each backend is a seam with one implementation today (a folder, SQLite, a lock file,
scikit-learn) and can be handed in instead::

    workspace = Workspace(config.load("ws/config.json"))
    workspace.dataset.rows, workspace.registry.production()
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from beryl.config import Settings

if TYPE_CHECKING:
    from beryl.data.dataset import Dataset
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
        if self._registry is None:
            from beryl.model.registry import Registry

            self._registry = Registry(self.settings.model_folder, self._keyring)
        return self._registry

    @property
    def history(self) -> HistoryStore:
        if self._history is None:
            from beryl.monitoring.history import History

            self._history = History(self.settings.history_db)
        return self._history

    @property
    def lock(self) -> PassLock:
        if self._lock is None:
            from beryl.lock import FileLock

            self._lock = FileLock(self.settings.lock_file)
        return self._lock

    @property
    def engine(self) -> TrainingEngine:
        if self._engine is None:
            from beryl.model.engine import SklearnEngine

            self._engine = SklearnEngine()
        return self._engine
