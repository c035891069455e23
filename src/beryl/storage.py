"""The storage seam: where a store keeps its files, by key, with the guarantees stores rely on.

A store (the model registry first) names its files by keys relative to its folder
(``production.json``, ``versions/v0003/card.json``) and asks the storage for four things that a
folder on a local disk and an object store can both give:

- ``write`` replaces a key's content atomically (a reader sees the old bytes or the new ones);
- ``create`` writes a key only if it does not exist yet (two writers: one wins, the other learns
  it lost), which makes immutable things immutable;
- ``swap`` replaces a key only if it still holds what the caller read (compare-and-swap), so two
  processes moving the same pointer at once cannot both win;
- ``append`` adds one line to a log, durably, never tearing another writer's line.

``delete`` removes a key, for repairs that first keep a copy. Stores of large files (the
dataset's batches, the input files) move whole files by path (``FileStorage``): ``put_file``
(create-only, or only while the key keeps the stamp the caller saw, or outright) and
``get_file`` answer with the key's stamp, so a caller can tell later whether anyone changed the
key since; ``listing`` gives the keys of one folder with their sizes and stamps.

``LocalStorage`` (a folder: atomic renames, ``link`` for create-only, ``flock`` for swaps) is
the default; ``beryl.objectstore.S3Storage`` (a bucket: conditional PUTs) is the other. The
contract tests in ``tests/test_storage_contract.py`` are written against the protocol and run
against both::

    storage = LocalStorage(settings.model_folder)
    current = storage.read("production.json")
    if not storage.swap("production.json", new_pointer, expected=current):
        ...  # another process moved it first
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Protocol, runtime_checkable

from beryl._io import TMP_PREFIX, append_line, atomic_path, atomic_write_bytes, fsync_dir
from beryl.errors import StateError, describe_os_error


@dataclass(frozen=True)
class Entry:
    """One key of a listing: its size, stamp and modification time (ns since the epoch)."""

    key: str
    size: int
    stamp: str
    modified_ns: int


@runtime_checkable
class Storage(Protocol):
    """Files of one store by key (``a/b.json``, relative, ``/``-separated)."""

    def read(self, key: str) -> bytes | None:
        """The key's bytes, or None when it does not exist."""

    def write(self, key: str, data: bytes) -> None:
        """Replace the key's content atomically."""

    def create(self, key: str, data: bytes) -> bool:
        """Write the key only if it does not exist; False when it already did (nothing written)."""

    def swap(self, key: str, data: bytes, *, expected: bytes | None) -> bool:
        """Replace the key only if it holds ``expected`` (None: only if it does not exist);
        False, and nothing written, when another writer changed it first."""

    def append(self, key: str, line: str) -> None:
        """Add one line (without its newline) to the key, durably."""

    def keys(self, prefix: str = "") -> list[str]:
        """The keys below ``prefix`` (a folder-like prefix ending in ``/``, or ""), sorted."""

    def exists(self, key: str) -> bool: ...

    def stamp(self, key: str) -> str | None:
        """A cheap token that changes whenever the key's content does (a ``stat``, a HEAD);
        None when the key does not exist."""

    def where(self, key: str) -> str:
        """How messages name the key (a path, a URL)."""

    def delete(self, key: str) -> None:
        """Remove the key (nothing when it does not exist); only repairs remove, after keeping
        a copy under another key."""


@runtime_checkable
class FileStorage(Storage, Protocol):
    """``Storage`` that also moves whole files by path (the workspace mirror's needs)."""

    def put_file(
        self, key: str, path: Path, *, create: bool = False, expected: str | None = None
    ) -> str | None:
        """Store the file at ``path`` as the key and return the key's new stamp; None, and
        nothing written, when ``create`` and the key exists, or ``expected`` and the key's
        stamp is no longer that one."""

    def get_file(self, key: str, path: Path) -> str | None:
        """Write the key's content to ``path`` (atomically) and return the stamp of what was
        written; None when the key does not exist."""

    def listing(self, prefix: str) -> list[Entry]:
        """The keys directly in the folder-like ``prefix`` (``a/``, or "" for the top)."""


class LocalStorage:
    """``Storage`` in a folder on a local (or locally locking) file system."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, key: str) -> Path:
        """The file behind a key; keys never leave the root."""
        parts = PurePosixPath(key).parts
        if not parts or key.startswith("/") or any(p in ("..", ".") for p in parts):
            raise ValueError(f"not a storage key: {key!r}")
        return self.root.joinpath(*parts)

    def read(self, key: str) -> bytes | None:
        path = self.path(key)
        try:
            return path.read_bytes()
        except FileNotFoundError:
            return None
        except IsADirectoryError:
            return None
        except OSError as exc:
            message, hint = describe_os_error(exc, path)
            raise StateError(f"cannot read {path}: {message}", hint=hint) from exc

    def write(self, key: str, data: bytes) -> None:
        atomic_write_bytes(self.path(key), data)

    def create(self, key: str, data: bytes) -> bool:
        path = self.path(key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, name = tempfile.mkstemp(prefix=TMP_PREFIX, dir=path.parent)
            try:
                os.write(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)
            try:
                os.link(name, path)  # never replaces: the first writer wins
            except FileExistsError:
                return False
            finally:
                Path(name).unlink()
            fsync_dir(path.parent)
            return True
        except OSError as exc:
            message, hint = describe_os_error(exc, path)
            raise StateError(f"cannot write {path}: {message}", hint=hint) from exc

    def swap(self, key: str, data: bytes, *, expected: bytes | None) -> bool:
        with self._locked(key):
            if self.read(key) != expected:
                return False
            self.write(key, data)
            return True

    def append(self, key: str, line: str) -> None:
        path = self.path(key)
        try:
            with self._locked(key):
                append_line(path, line)
        except OSError as exc:
            message, hint = describe_os_error(exc, path)
            raise StateError(f"cannot write {path}: {message}", hint=hint) from exc

    def keys(self, prefix: str = "") -> list[str]:
        base = self.path(prefix.rstrip("/")) if prefix.strip("/") else self.root
        if not base.is_dir():
            return []
        found = []
        for path in base.rglob("*"):
            if path.is_file() and not path.name.startswith(TMP_PREFIX):
                found.append(path.relative_to(self.root).as_posix())
        return sorted(found)

    def exists(self, key: str) -> bool:
        return self.path(key).exists()

    def stamp(self, key: str) -> str | None:
        try:
            info = self.path(key).stat()
        except FileNotFoundError:
            return None
        return f"{info.st_ino}:{info.st_mtime_ns}:{info.st_size}"

    def where(self, key: str) -> str:
        return str(self.path(key))

    def put_file(
        self, key: str, path: Path, *, create: bool = False, expected: str | None = None
    ) -> str | None:
        target = self.path(key)
        try:
            with self._locked(key):
                if expected is not None and self.stamp(key) != expected:
                    return None
                if create and target.exists():
                    return None
                with atomic_path(target) as tmp:
                    shutil.copyfile(path, tmp)
                return self.stamp(key)
        except OSError as exc:
            message, hint = describe_os_error(exc, target)
            raise StateError(f"cannot write {target}: {message}", hint=hint) from exc

    def get_file(self, key: str, path: Path) -> str | None:
        source = self.path(key)
        stamp = self.stamp(key)
        if stamp is None:
            return None
        try:
            with atomic_path(path) as tmp:
                shutil.copyfile(source, tmp)
        except FileNotFoundError:
            return None
        except OSError as exc:
            message, hint = describe_os_error(exc, source)
            raise StateError(f"cannot read {source}: {message}", hint=hint) from exc
        return stamp

    def delete(self, key: str) -> None:
        path = self.path(key)
        try:
            path.unlink(missing_ok=True)
        except OSError as exc:
            message, hint = describe_os_error(exc, path)
            raise StateError(f"cannot remove {path}: {message}", hint=hint) from exc

    def listing(self, prefix: str) -> list[Entry]:
        folder = self.path(prefix.rstrip("/")) if prefix.strip("/") else self.root
        base = prefix.rstrip("/") + "/" if prefix.strip("/") else ""
        found = []
        try:
            with os.scandir(folder) as entries:
                for entry in entries:
                    if entry.name.startswith(TMP_PREFIX) or not entry.is_file(
                        follow_symlinks=False
                    ):
                        continue
                    info = entry.stat(follow_symlinks=False)
                    found.append(
                        Entry(
                            base + entry.name,
                            info.st_size,
                            f"{info.st_ino}:{info.st_mtime_ns}:{info.st_size}",
                            info.st_mtime_ns,
                        )
                    )
        except (FileNotFoundError, NotADirectoryError):
            return []
        except OSError as exc:
            message, hint = describe_os_error(exc, folder)
            raise StateError(f"cannot list {folder}: {message}", hint=hint) from exc
        return sorted(found, key=lambda e: e.key)

    @contextlib.contextmanager
    def _locked(self, key: str) -> Iterator[None]:
        """An exclusive lock of ``key``'s folder among processes on this machine (``flock`` on
        the folder itself: no lock file is left behind)."""
        folder = self.path(key).parent
        try:
            folder.mkdir(parents=True, exist_ok=True)
            fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
        except OSError as exc:
            message, hint = describe_os_error(exc, folder)
            raise StateError(f"cannot lock {folder}: {message}", hint=hint) from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing releases the lock
