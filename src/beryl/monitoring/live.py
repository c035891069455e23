"""Live monitoring: a bounded, sampled summary of what Beryl is asked, by UTC hour.

Every answer of ``POST /prediction`` (the fast path and the route, both through ``respond``) and
every block ``beryl predict`` scores is handed to this process's ``LiveRecorder``. Per hour and
model version it keeps exact counters (records, predicted positives, the sums of the
probabilities of the predicted positives and of the predicted negatives) and a 10-bin histogram
of the probabilities; per hour a uniform sample of at most ``live.sample_per_hour`` inputs (the
model's features) with their probability, by reservoir sampling (Li's algorithm L: once the
sample is full, one comparison per record). A record costs a few list operations under a lock;
no I/O, no pandas for dict records.

The state goes to the process's own file per hour (``beryl.monitoring.livestate``), atomically:
every ``live.flush_seconds`` from a daemon thread started by the first record, and once more when
the recorder is dropped or the process exits; only hours that changed are written again. A
process killed with SIGKILL loses what it recorded since its last write, nothing before; a
restarted one writes under a new name, so nothing is counted twice. Hours older than
``live.retention_hours`` are removed. A write that fails (a full disk, a read-only workspace)
never fails a prediction: it is counted, logged once, and tried again at the next flush.

    recorder = LiveRecorder.for_settings(settings, source="serve")   # None when switched off
    recorder.observe(version, schema, rows, labels, probabilities)   # dict records or a frame
    recorder.flush()                                                 # how many files were written

``beryl.monitoring.livereport.live_summary`` merges every process's files.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import re
import secrets
import socket
import threading
import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from beryl._io import atomic_write_text, utc_now
from beryl.config import LiveSettings, Settings
from beryl.monitoring.livestate import (
    BINS,
    HOUR_S,
    Counts,
    Hour,
    live_folder,
    skip,
    sweep,
    tally,
)

if TYPE_CHECKING:
    import pandas as pd

    from beryl.data.schema import Schema

_LOG = logging.getLogger("beryl.live")


class LiveRecorder:
    """This process's live record of what it is asked (see the module docstring).

    A handle on the state: when it is dropped, or the process exits, what it recorded since
    the last flush is written (``weakref.finalize``), and its background writer stops.
    ``observe``, ``record``, ``record_frame`` and ``flush`` are the state's own methods.
    """

    def __init__(
        self,
        folder: Path,
        settings: LiveSettings,
        *,
        source: str,
        clock: Callable[[], float] = time.time,
        seed: int | None = None,
        background: bool = True,
    ) -> None:
        book = self._book = _Book(folder, settings, source, clock, seed, background)
        # Bound to the state itself: the hot path pays no call through the handle.
        self.observe = book.observe
        self.record = book.record
        self.record_frame = book.record_frame
        self.flush = book.flush
        self._final = weakref.finalize(self, book.close)

    @classmethod
    def for_settings(
        cls, settings: Settings, *, source: str, background: bool = True
    ) -> LiveRecorder | None:
        """The recorder of a workspace, or None when ``live.enabled`` is false; without
        ``background`` nothing is written until ``flush`` or ``close``."""
        if not settings.live.enabled:
            return None
        return cls(live_folder(settings), settings.live, source=source, background=background)

    def close(self) -> None:
        """Stop the background writer and write what is left (once)."""
        self._final()

    def discard(self) -> None:
        """Stop, and write nothing more: what was recorded since the last flush is dropped
        (``beryl predict`` that failed before its output was written)."""
        if self._final.detach() is not None:
            self._book._stop.set()

    @property
    def process(self) -> str:
        """This process's name in the files (host, pid and a random part)."""
        return self._book.process

    @property
    def failures(self) -> int:
        """Recordings and writes that failed (the first one is logged)."""
        return self._book.failures

    @property
    def last_error(self) -> str | None:
        return self._book.last_error


class _Book:
    """The recorder's state and its writer."""

    def __init__(
        self,
        folder: Path,
        settings: LiveSettings,
        source: str,
        clock: Callable[[], float],
        seed: int | None,
        background: bool,
    ) -> None:
        self.folder = folder
        self.cap = settings.sample_per_hour
        self.flush_seconds = settings.flush_seconds
        self.retention_hours = settings.retention_hours
        self.source = source
        self.failures = 0
        self.last_error: str | None = None
        self._clock = clock
        self._random = random.Random(seed)  # sampling, not secrets
        self._lock = threading.Lock()
        self._flushing = threading.Lock()  # one flush at a time: an older state never wins
        self._stop = threading.Event()
        self._started = not background  # without a background writer: ``flush`` by hand
        self._begin()

    def _begin(self) -> None:
        """A fresh identity and state (at start, and in a forked child)."""
        host = re.sub(r"[^A-Za-z0-9.-]", "-", socket.gethostname())[:40] or "host"
        self.pid = os.getpid()
        self.process = f"{host}-{self.pid}-{secrets.token_hex(4)}"
        self.started_at = utc_now()
        self._hours: dict[int, Hour] = {}
        self._opened: dict[int, int] = {}  # hour -> how many times this process opened it
        self._last: tuple[int, str, Hour, Counts] | None = None
        self._swept: int | None = None

    # -- recording (the hot path) --------------------------------------------------------------
    def observe(
        self,
        version: str,
        schema: Schema,
        data: Sequence[Mapping[str, Any]] | pd.DataFrame,
        labels: Sequence[Any],
        chances: Sequence[float],
    ) -> None:
        """Record one answer: validated dict records or a frame, its labels and probabilities."""
        if isinstance(data, list):
            self.record(version, schema, data, labels, chances)
        else:
            self.record_frame(version, schema, data, labels, chances)  # type: ignore[arg-type]

    def record(
        self,
        version: str,
        schema: Schema,
        rows: Sequence[Mapping[str, Any]],
        labels: Sequence[Any],
        chances: Sequence[float],
    ) -> None:
        """Record dict records (the model's features, as validated) and their answers."""
        try:
            many = None if len(chances) == 1 else tally(labels, chances, schema.positive_label)
            index = int(self._clock() // HOUR_S)
            with self._lock:
                last = self._last
                if last is None or last[0] != index or last[1] != version:
                    last = self._switch(index, version, schema)
                hour, counts = last[2], last[3]
                if many is None:  # one record, the common request: no loop, no array
                    chance = chances[0]
                    if labels[0] == counts.positive:
                        counts.positives += 1
                        counts.positive_sum += chance
                    else:
                        counts.negative_sum += chance
                    slot = int(chance * BINS)
                    counts.histogram[slot if slot < BINS else BINS - 1] += 1
                else:
                    counts.add(*many[:4])
                start = hour.seen
                hour.seen = end = start + len(rows)
                if start < self.cap or hour.next <= end:
                    self._sample(hour, version, rows, chances, start, end)
                hour.changed = True
            if not self._started:
                self.start()
        except Exception as exc:  # a fault here must never fail the answer
            self._failed("recording", exc)

    def record_frame(
        self,
        version: str,
        schema: Schema,
        frame: pd.DataFrame,
        labels: Any,
        chances: Any,
    ) -> None:
        """Record a frame holding the model's features and its labels and probabilities
        (lists or arrays: numpy, Arrow), vectorised."""
        try:
            self._record_frame(version, schema, frame, labels, chances)
        except Exception as exc:  # a fault here must never fail the answer
            self._failed("recording", exc)

    def _record_frame(
        self,
        version: str,
        schema: Schema,
        frame: pd.DataFrame,
        labels: Any,
        chances: Any,
    ) -> None:
        size = len(frame)
        if size == 0:
            return
        positives, positive_sum, negative_sum, histogram, probability = tally(
            labels, chances, schema.positive_label
        )
        index = int(self._clock() // HOUR_S)
        with self._lock:
            last = self._last
            if last is None or last[0] != index or last[1] != version:
                last = self._switch(index, version, schema)
            hour, counts = last[2], last[3]
            counts.add(positives, positive_sum, negative_sum, histogram)
            start = hour.seen
            hour.seen = end = start + size
            taken = self._taken(hour, start, end)
            if taken:
                picked = sorted({i for i, _ in taken})
                columns = [c for c in schema.features if c in frame.columns]
                chosen = frame.iloc[picked][columns].to_dict(orient="records")
                rows = cast("list[dict[str, Any]]", chosen)
                by_index = dict(zip(picked, rows, strict=True))
                for i, slot in taken:
                    entry = (version, by_index[i], float(probability[i]))
                    if slot < 0:
                        hour.sample.append(entry)
                    else:
                        hour.sample[slot] = entry
            hour.changed = True
        if not self._started:
            self.start()

    def _sample(
        self,
        hour: Hour,
        version: str,
        rows: Sequence[Mapping[str, Any]],
        chances: Sequence[float],
        start: int,
        end: int,
    ) -> None:
        for i, slot in self._taken(hour, start, end):
            entry = (version, rows[i], chances[i])
            if slot < 0:
                hour.sample.append(entry)
            else:
                hour.sample[slot] = entry

    def _taken(self, hour: Hour, start: int, end: int) -> list[tuple[int, int]]:
        """Which of the records ``start`` .. ``end`` - 1 of the hour enter its sample: their
        position in this batch and the slot they take (-1: appended while the sample fills)."""
        cap, draw = self.cap, self._random.random
        taken = [(i - start, -1) for i in range(start, min(end, cap))]
        while hour.next <= end:  # the record numbered ``next`` (1-based) replaces a random one
            taken.append((hour.next - 1 - start, int(draw() * cap)))
            hour.weight *= math.exp(math.log(1.0 - draw()) / cap)
            hour.next += skip(hour.weight, lambda: 1.0 - draw()) + 1
        return taken

    def _switch(self, index: int, version: str, schema: Schema) -> tuple[int, str, Hour, Counts]:
        """The hour and the version's counters a record goes to (made on first use)."""
        hour = self._hours.get(index)
        if hour is None:
            times = self._opened.get(index, 0)
            self._opened[index] = times + 1
            # An hour opened again (the clock went back after it was written and let go)
            # goes to a file of its own: the one written before still counts.
            file = self.process if times == 0 else f"{self.process}.{times}"
            hour = self._hours[index] = Hour(index, file, self.cap, self._draw)
        counts = hour.counts.get(version)
        if counts is None:
            counts = hour.counts[version] = Counts(schema)
        self._last = (index, version, hour, counts)
        return self._last

    def _draw(self) -> float:
        """A uniform number in (0, 1]: never 0, whose logarithm algorithm L takes."""
        return 1.0 - self._random.random()

    # -- writing -------------------------------------------------------------------------------
    def flush(self) -> int:
        """Write every hour that changed since it was last written; how many files were.

        Never raises: a failed write is counted, logged once and tried again next time.
        """
        try:
            with self._flushing:
                return self._flush()
        except Exception as exc:
            self._failed("writing", exc)
            return 0

    def _flush(self) -> int:
        if os.getpid() != self.pid:  # a forked child starts afresh: the parent writes its own
            with self._lock:
                self._begin()
            return 0
        now = int(self._clock() // HOUR_S)
        about = {"pid": self.pid, "source": self.source, "started": self.started_at}
        with self._lock:
            pending = [(hour, hour.freeze()) for hour in self._hours.values() if hour.changed]
            for hour, _ in pending:
                hour.changed = False
        written = 0
        for hour, frozen in pending:
            try:
                snapshot = hour.snapshot(frozen, self.cap, about | {"written": utc_now()})
                text = json.dumps(snapshot, allow_nan=False) + "\n"
                atomic_write_text(hour.path(self.folder), text)
            except Exception as exc:  # a full disk, a read-only workspace, a bug: never raised
                with self._lock:
                    hour.changed = True  # tried again at the next flush
                self._failed("writing", exc)
                continue
            written += 1
        with self._lock:
            for index in [i for i, h in self._hours.items() if i < now and not h.changed]:
                del self._hours[index]  # written, and no record goes to a past hour: let it go
                if self._last is not None and self._last[0] == index:
                    self._last = None
            oldest = now - self.retention_hours
            for index in [i for i in self._hours if i <= oldest]:
                del self._hours[index]  # beyond retention, written or not
            self._opened = {i: n for i, n in self._opened.items() if i > oldest}
        if written and self._swept != now:
            self._swept = now
            sweep(self.folder, now, self.retention_hours)
        return written

    def _failed(self, what: str, exc: BaseException) -> None:
        self.failures += 1
        self.last_error = f"{type(exc).__name__}: {exc}"
        if self.failures == 1:
            _LOG.warning(
                "live monitoring: %s failed (%s); predictions go on, and this is not logged "
                "again (%s)",
                what,
                self.last_error,
                self.folder,
            )

    # -- the background writer -----------------------------------------------------------------
    def start(self) -> None:
        """Start the background writer (the first record does)."""
        with self._lock:
            if self._started:
                return
            self._started = True
        thread = threading.Thread(
            target=_flush_every, args=(self,), name="beryl-live-flush", daemon=True
        )
        thread.start()

    def close(self) -> None:
        """Stop the background writer and write what is left."""
        self._stop.set()
        self.flush()


def _flush_every(book: _Book) -> None:
    """Flush every ``flush_seconds`` until the book is closed."""
    while not book._stop.wait(book.flush_seconds):
        book.flush()
