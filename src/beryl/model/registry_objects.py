"""The model registry on storage that has no folders and no rename (object storage): how a
version is written, and the local cache of the model files it downloads.

A version on a local disk appears whole, by renaming a finished folder. In object storage each
file is its own object, so a version is written in three create-only steps:

1. ``versions/<id>/model.json`` (the signed data-only model, bound to its id) claims the id: of
   two writers that chose the same id, the server lets one create it and the other takes the
   next id;
2. ``versions/<id>/model.pkl``, the pickle the signed model names by sha256;
3. ``versions/<id>/card.json`` last: a version is listed (``Registry.ids``) only once its card
   is there, so a reader never sees half a version. A writer killed before its card leaves an id
   that ``Registry.damaged`` names ("model card ... is missing"); no later version reuses it.

Model files are downloaded into ``ModelCache``, a folder named by each pickle's sha256 (so a
cached file can never be another version's, or stale) and checked against that sha256 every
time it is used, as the local registry checks its own files.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from beryl._io import atomic_write_bytes, sha256_bytes, sha256_file
from beryl.errors import IntegrityError, StateError, describe_os_error

if TYPE_CHECKING:
    from beryl.model.card import ModelCard
    from beryl.model.registry import Registry

CACHE_FOLDER = ".registry-cache"


def check_model_file(where: object, payload: bytes, sha256: str) -> None:
    """Refuse a pickled model file whose bytes are not the ones its signed model file names."""
    digest = sha256_bytes(payload)
    if digest != sha256:
        raise IntegrityError(
            f"model file {where} does not match its signed model file "
            f"(sha256 {digest[:12]}… ≠ {sha256[:12]}…); refusing to load it",
            hint="the file was changed after training; retrain or restore it",
        )


class ModelCache:
    """Model files downloaded from a registry, each named by its sha256."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def path(self, sha256: str) -> Path:
        if len(sha256) != 64 or not all(c in "0123456789abcdef" for c in sha256):
            raise IntegrityError(f"{sha256[:80]!r} is not a sha256 of a model file")
        return self.folder / f"{sha256}.pkl"

    def keep(self, data: bytes) -> Path:
        """Put a model file this process has (it just wrote it) into the cache."""
        path = self.path(sha256_bytes(data))
        if not self._holds(path, path.stem):
            atomic_write_bytes(path, data)
        return path

    def fetch(self, registry: Registry, key: str, sha256: str) -> Path:
        """The cached file of ``key`` whose content has ``sha256``, downloaded when it is not
        here (or no longer matches); an ``IntegrityError`` when the stored file does not match."""
        path = self.path(sha256)
        if self._holds(path, sha256):
            return path
        where = registry.where(key)
        data = registry.storage.read(key)
        if data is None:
            raise IntegrityError(f"model file {where} is missing")
        check_model_file(where, data, sha256)
        atomic_write_bytes(path, data)
        return path

    def _holds(self, path: Path, sha256: str) -> bool:
        try:
            return path.is_file() and sha256_file(path) == sha256
        except OSError as exc:
            message, hint = describe_os_error(exc, path)
            raise StateError(f"cannot read the model cache: {message}", hint=hint) from exc


def create_version(registry: Registry, payload: bytes, card: ModelCard, signed: Any) -> ModelCard:
    """Store a version in three create-only steps (see the module docstring); ``signed(card)``
    is its signed data-only model once ``card.id`` is chosen. Returns the card."""
    storage = registry.storage
    while True:
        existing = [int(v[1:]) for v in registry.version_dirs()]
        card.id = f"v{(max(existing) + 1) if existing else 1:04d}"
        model = (json.dumps(signed(card), indent=1) + "\n").encode("utf-8")
        if storage.create(_key(card.id, "model.json"), model):
            break  # the claim: this writer owns the id
    for name, data in (
        ("model.pkl", payload),
        ("card.json", (json.dumps(card.to_dict(), indent=2) + "\n").encode("utf-8")),
    ):
        if not storage.create(_key(card.id, name), data):
            raise StateError(
                f"{registry.where(_key(card.id, name))} was written by another writer while "
                f"this one was storing {card.id}",
                hint="something other than Beryl writes into the registry; train again",
            )
    if registry.cache is not None:
        registry.cache.keep(payload)
    return card


def _key(version: str, name: str) -> str:
    return f"versions/{version}/{name}"
