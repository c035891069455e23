"""The production model as the API sees it, reloaded when the production pointer moves.

On the models folder every request checks the pointer with one ``stat`` and a promotion is
served by the next request. On object storage (``registry_url``) no request waits for the
network: a thread of each worker asks whether the pointer changed (one HEAD, its ETag) every
``api.registry_poll_s`` seconds and loads the new model beside the one being served; requests
keep the old one until the new one is loaded and checked, then get the new one. A promotion is
served within ``registry_poll_s`` plus the time to load it; a failed check or load (the server
unreachable for a moment) keeps the model being served and is tried again at the next tick.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass

from beryl.data.schema import Schema
from beryl.errors import ModelNotFoundError
from beryl.model.compiled import CompiledModel
from beryl.model.linear import LinearModel
from beryl.model.pointer import POINTER_FILE
from beryl.model.registry import ModelCard, Registry

_LOG = logging.getLogger("uvicorn.error")


@dataclass(frozen=True)
class LoadedModel:
    """One immutable snapshot: a request keeps the snapshot it started with."""

    version: str
    model: LinearModel  # the signed data-only model
    schema: Schema
    card: ModelCard
    compiled: CompiledModel | None = None  # its folded fast path; None: score with ``model``


class ModelHolder:
    """Holds the production model (see the module docstring for how it notices a promotion)."""

    def __init__(self, registry: Registry, *, poll_s: float = 2.0) -> None:
        self.registry = registry
        self.poll_s = poll_s
        self._lock = threading.Lock()
        self._current: LoadedModel | None = None
        self._pointer_key: tuple[int, int, int] | str | None = None
        self._pointer = os.fspath(registry.pointer_path)  # stat'ed on every request: made once
        self._polled = not registry.local  # object storage: a thread polls, requests never
        self._poller_pid = 0
        self._stop = threading.Event()
        self._last_problem: str | None = None

    def _key(self) -> tuple[int, int, int] | str | None:
        if self._polled:
            return self.registry.storage.stamp(POINTER_FILE)
        try:
            info = os.stat(self._pointer)  # noqa: PTH116  (a str: no pathlib cost per request)
        except FileNotFoundError:
            return None
        return (info.st_ino, info.st_mtime_ns, info.st_size)

    def get(self) -> LoadedModel:
        """The current production model, loading it first if the pointer moved (on object
        storage: if none is loaded yet; the poller notices later moves)."""
        if self._polled:
            self._start_polling()
            current = self._current
            if current is not None:
                return current
        else:
            key = self._key()
            current = self._current
            if current is not None and key == self._pointer_key:
                return current
        with self._lock:
            key = self._key()
            if self._current is not None and key == self._pointer_key:
                return self._current
            return self._load(key)

    def _load(self, key: tuple[int, int, int] | str | None) -> LoadedModel:
        """Load what the pointer names (under the lock); the snapshot served from now on."""
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
        """The current model if the pointer has not moved (one ``stat``; on object storage no
        check at all); None: load first."""
        current = self._current
        if self._polled:
            self._start_polling()
            return current
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

    def close(self) -> None:
        """Stop polling (the thread is a daemon: a process that exits needs no call)."""
        self._stop.set()

    # -- object storage: the poller -------------------------------------------------------------
    def _start_polling(self) -> None:
        """Start this process's poller once (again in a forked child, which has no thread)."""
        if self._poller_pid == os.getpid() or self._stop.is_set():
            return
        with self._lock:
            if self._poller_pid != os.getpid():
                self._poller_pid = os.getpid()
                name = "beryl-registry-poll"
                threading.Thread(target=self._poll, name=name, daemon=True).start()

    def _poll(self) -> None:
        while not self._stop.wait(self.poll_s):
            try:
                key = self._key()
                if key != self._pointer_key:
                    with self._lock:
                        self._load(key)
                self._last_problem = None
            except Exception as exc:  # keep serving what is loaded; try again next tick
                if str(exc) != self._last_problem:
                    self._last_problem = str(exc)
                    _LOG.warning("production model not reloaded: %s", exc)
