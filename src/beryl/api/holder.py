"""The production model as the API sees it, reloaded when the production pointer moves."""

from __future__ import annotations

import threading
from dataclasses import dataclass

from beryl.data.schema import Schema
from beryl.errors import ModelNotFoundError
from beryl.model.compiled import CompiledModel
from beryl.model.linear import LinearModel
from beryl.model.registry import ModelCard, Registry


@dataclass(frozen=True)
class LoadedModel:
    """One immutable snapshot: a request keeps the snapshot it started with."""

    version: str
    model: LinearModel  # the signed data-only model
    schema: Schema
    card: ModelCard
    compiled: CompiledModel | None = None  # its folded fast path; None: score with ``model``


class ModelHolder:
    """Holds the production model; a cheap ``stat`` per request notices a promotion."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self._lock = threading.Lock()
        self._current: LoadedModel | None = None
        self._pointer_key: tuple[int, int, int] | None = None
        self._pointer = registry.pointer_path  # stat'ed on every request: made once

    def _key(self) -> tuple[int, int, int] | None:
        try:
            info = self._pointer.stat()
        except FileNotFoundError:
            return None
        return (info.st_ino, info.st_mtime_ns, info.st_size)

    def get(self) -> LoadedModel:
        """The current production model, loading it first if the pointer moved."""
        key = self._key()
        current = self._current
        if current is not None and key == self._pointer_key:
            return current
        with self._lock:
            key = self._key()
            if self._current is not None and key == self._pointer_key:
                return self._current
            version = self.registry.production()
            if version is None:
                raise ModelNotFoundError(
                    "no model is in production yet", hint="run `beryl run` or `beryl deploy`"
                )
            if self._current is None or self._current.version != version:
                card = self.registry.card(version)
                model = self.registry.model(version)
                self._current = LoadedModel(version, model, model.schema, card, model.compiled())
            else:
                # Same version, pointer rewritten (e.g. promoted again): refresh the card only.
                card = self.registry.card(version)
                previous = self._current
                self._current = LoadedModel(
                    version, previous.model, previous.schema, card, previous.compiled
                )
            self._pointer_key = key
            return self._current

    def peek(self) -> LoadedModel | None:
        """The current model if the pointer has not moved (one ``stat``); None: load first."""
        current = self._current
        if current is not None and self._key() == self._pointer_key:
            return current
        return None

    async def aget(self) -> LoadedModel:
        """``get`` for the event loop: loading a model (reading and checking its files) runs
        on a worker thread."""
        current = self.peek()
        if current is not None:
            return current
        from starlette.concurrency import run_in_threadpool

        return await run_in_threadpool(self.get)
