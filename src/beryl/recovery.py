"""The recovery folder: where a repair puts what it cannot account for, instead of deleting it.

Each store (``output_folder_path``, ``output_model_path``, the deployment store) has a
``.recovered/`` folder. One repair moves everything it sets aside into one
``.recovered/<UTC time>/`` folder, each file at its path relative to the store, so moving it back
is a plain ``mv``; what it moved is named in what the repair reports. Nothing in a recovery
folder is ever read by Beryl.

    aside = Aside(settings.output_folder)
    kept = aside.move(settings.output_folder / "batches" / "20240101T000000000000Z.parquet")
    # kept: ingesteddata/.recovered/20240102T101500123456Z/batches/20240101T000000000000Z.parquet
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

from beryl._io import fsync_dir

RECOVERY_FOLDER = ".recovered"


class Aside:
    """One repair's folder under ``<store>/.recovered/``, made when the first thing is moved."""

    def __init__(self, store: Path) -> None:
        self.store = store
        self._folder: Path | None = None

    @property
    def folder(self) -> Path:
        if self._folder is None:
            stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
            folder = self.store / RECOVERY_FOLDER / stamp
            folder.mkdir(parents=True, exist_ok=True)
            self._folder = folder
        return self._folder

    @property
    def used(self) -> bool:
        return self._folder is not None

    def _target(self, relative: Path) -> Path:
        target = self.folder / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        number = 1
        while target.exists() or target.is_symlink():  # the same name set aside twice
            number += 1
            target = target.with_name(f"{relative.name}.{number}")
        return target

    def move(self, path: Path) -> Path:
        """Move ``path`` (a file, link or folder inside the store) here; returns where it went."""
        target = self._target(path.relative_to(self.store))
        path.rename(target)
        fsync_dir(path.parent)
        fsync_dir(target.parent)
        return target

    def keep(self, relative: str, data: bytes) -> Path:
        """Write ``data`` here under ``relative`` (bytes cut from a file, lines taken out)."""
        target = self._target(Path(relative))
        with target.open("wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        fsync_dir(target.parent)
        return target

    def shown(self, path: Path) -> str:
        """``path`` as reports name it: relative to the store's parent (the workspace)."""
        try:
            return str(path.relative_to(self.store.parent))
        except ValueError:
            return str(path)
