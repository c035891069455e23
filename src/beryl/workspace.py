"""One workspace: its settings and the stores under them, built once by an entry point.

The CLI, the API factory and the scheduler each build a ``Workspace`` from the loaded
``Settings`` and hand it to the stages; no stage builds a store from paths. It owns:

- ``dataset``: the consolidated dataset (``beryl.data.dataset.Dataset``), read once and read
  again only when ``dataset.json`` changed on disk;
- ``registry``: the model versions, the production pointer and its log;
- ``history``: the history database (``beryl.monitoring.history.HistoryStore``);
- ``lock``: the single-flight lock around a pass (``beryl.loop.lock.PassLock``);
- ``engine``: what trains a model (``beryl.model.engine.TrainingEngine``).

Each backend is a seam with one implementation today (a folder, SQLite, a lock file,
scikit-learn) and can be handed in instead::

    workspace = Workspace(config.load("ws/config.json"))
    workspace.dataset.rows, workspace.registry.production()
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import TYPE_CHECKING

from beryl.config import Settings

if TYPE_CHECKING:
    from beryl.data.dataset import Dataset
    from beryl.loop.lock import PassLock
    from beryl.model.engine import TrainingEngine
    from beryl.model.registry import Registry
    from beryl.model.signing import Keyring
    from beryl.monitoring.history import HistoryStore


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
        self._dataset_key: tuple[int, int, int] | None = None

    @classmethod
    def of(cls, value: Workspace | Settings) -> Workspace:
        """``value`` itself, or a workspace for these settings (library calls take either)."""
        return value if isinstance(value, Workspace) else cls(value)

    @property
    def root(self) -> Path:
        return self.settings.root

    @property
    def dataset(self) -> Dataset:
        """The dataset, as ``dataset.json`` is now (one ``stat`` to know; read when it moved)."""
        from beryl.data.dataset import MANIFEST_NAME, Dataset

        key = _identity(self.settings.output_folder / MANIFEST_NAME)
        if self._dataset is None or key != self._dataset_key:
            self._dataset = Dataset(self.settings.output_folder)
            self._dataset_key = key
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
            from beryl.loop.lock import FileLock

            self._lock = FileLock(self.settings.lock_file)
        return self._lock

    @property
    def engine(self) -> TrainingEngine:
        if self._engine is None:
            from beryl.model.engine import SklearnEngine

            self._engine = SklearnEngine()
        return self._engine


def _identity(path: Path) -> tuple[int, int, int] | None:
    with contextlib.suppress(OSError):
        info = path.stat()
        return (info.st_ino, info.st_mtime_ns, info.st_size)
    return None
