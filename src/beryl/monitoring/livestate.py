"""What live monitoring keeps, in memory and on disk: one process's hour and its file.

The files sit in the workspace at ``monitoring/live/<YYYY-MM-DDTHH>/<process>.json``, one per
process and UTC hour, each written whole and atomically by ``beryl.monitoring.live`` and read
back by ``beryl.monitoring.livereport``. A file holds, per model version, exact counters and a
histogram of the probabilities, and the hour's reservoir sample of inputs::

    {"format": 1, "hour": "2026-12-03T14", "process": "host-4242-1a2b3c4d", "pid": 4242,
     "source": "serve", "started": "...Z", "written": "...Z",
     "versions": {"v0002": {"features": [...], "records": 812, "predicted_positive": 301,
                            "probability_sum_positive": 240.7, "probability_sum_negative": 61.2,
                            "histogram": [10 counts]}},
     "sample": {"seen": 812, "cap": 2000,
                "versions": {"v0002": {"features": [...], "rows": [[value, ..., p], ...]}}}}
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import shutil
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from beryl._io import TMP_PREFIX
from beryl.config import Settings

if TYPE_CHECKING:
    from beryl.data.schema import Schema

FORMAT = 1
BINS = 10  # the probability histogram: [0, 0.1), [0.1, 0.2), ..., [0.9, 1.0]
HOUR_S = 3600
_HOUR_NAME = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}")
_STALE_TEMPORARY_S = 600  # a temporary file this old was left by a killed writer


def live_folder(settings: Settings) -> Path:
    """Where every process writes its live monitoring files."""
    return settings.root / "monitoring" / "live"


def hour_name(index: int) -> str:
    """The UTC hour ``index`` (hours since the epoch) as its folder name, ``2026-12-03T14``."""
    return datetime.fromtimestamp(index * HOUR_S, UTC).strftime("%Y-%m-%dT%H")


def hour_index(name: str) -> int | None:
    """The hour a folder name stands for (hours since the epoch); None for any other name."""
    if not _HOUR_NAME.fullmatch(name):
        return None
    try:
        moment = datetime.strptime(name, "%Y-%m-%dT%H").replace(tzinfo=UTC)
    except ValueError:
        return None
    return int(moment.timestamp()) // HOUR_S


# -- in memory: one process's hour ------------------------------------------------------------
class Counts:
    """One hour's exact counters for one model version (mutable: the recorder adds to it)."""

    __slots__ = ("features", "histogram", "negative_sum", "positive", "positive_sum", "positives")

    def __init__(self, schema: Schema) -> None:
        self.features: tuple[str, ...] = tuple(schema.features)
        self.positive: Any = schema.positive_label
        self.positives = 0
        self.positive_sum = 0.0  # sum of p over predicted positives: the expected true positives
        self.negative_sum = 0.0  # sum of p over predicted negatives: the expected false negatives
        self.histogram = [0] * BINS  # every record is in one bin: their sum is the records

    def add(
        self, positives: int, positive_sum: float, negative_sum: float, histogram: list[int]
    ) -> None:
        self.positives += positives
        self.positive_sum += positive_sum
        self.negative_sum += negative_sum
        for slot, count in enumerate(histogram):
            self.histogram[slot] += count

    def to_dict(self) -> dict[str, Any]:
        return {
            "features": list(self.features),
            "records": sum(self.histogram),
            "predicted_positive": self.positives,
            "probability_sum_positive": self.positive_sum,
            "probability_sum_negative": self.negative_sum,
            "histogram": list(self.histogram),
        }


# An hour's state copied for its file: records seen, the sample, the counters by version.
Frozen = tuple[int, list[tuple[str, Mapping[str, Any], float]], dict[str, dict[str, Any]]]


class Hour:
    """One hour of one process: counters by version and the reservoir of inputs, kept by
    Li's algorithm L (``weight`` and ``next``, the number of the next record it takes)."""

    __slots__ = ("changed", "counts", "file", "index", "next", "sample", "seen", "weight")

    def __init__(self, index: int, file: str, cap: int, draw: Callable[[], float]) -> None:
        self.index = index
        self.file = file  # the file's name without .json
        self.counts: dict[str, Counts] = {}
        self.seen = 0  # records offered to the reservoir
        self.sample: list[tuple[str, Mapping[str, Any], float]] = []  # (version, inputs, p)
        self.weight = math.exp(math.log(draw()) / cap)
        self.next = cap + skip(self.weight, draw) + 1
        self.changed = False

    def freeze(self) -> Frozen:
        """What the file needs, copied: under the recorder's lock, so no value is converted
        here (the sampled inputs are never changed once recorded)."""
        return self.seen, list(self.sample), {v: c.to_dict() for v, c in self.counts.items()}

    def snapshot(self, frozen: Frozen, cap: int, about: Mapping[str, Any]) -> dict[str, Any]:
        """The hour as its file holds it, from ``freeze``; ``about`` names the process."""
        seen, sample, counts = frozen
        samples: dict[str, dict[str, Any]] = {}
        for version, inputs, chance in sample:
            block = samples.get(version)
            if block is None:
                block = samples[version] = {"features": counts[version]["features"], "rows": []}
            block["rows"].append([*(plain(inputs.get(c)) for c in block["features"]), chance])
        return {
            "format": FORMAT,
            "hour": hour_name(self.index),
            "process": self.file,
            **about,
            "versions": counts,
            "sample": {"seen": seen, "cap": cap, "versions": samples},
        }

    def path(self, folder: Path) -> Path:
        return folder / hour_name(self.index) / f"{self.file}.json"


def skip(weight: float, draw: Callable[[], float]) -> int:
    """How many records algorithm L passes over before it takes the next one (``draw``: a
    uniform number in (0, 1])."""
    return math.floor(math.log(draw()) / math.log1p(-weight)) if weight < 1.0 else 0


def tally(labels: Any, chances: Any, positive: Any) -> tuple[int, float, float, list[int], Any]:
    """Many records at once (lists or arrays): predicted positives, the sums of p over them and
    over the others, the histogram, and the probabilities as an array."""
    import numpy as np

    probability = np.asarray(chances, dtype=float)
    if len(labels) != len(probability):
        raise ValueError(f"{len(labels)} labels for {len(probability)} probabilities")
    mask = positive_mask(labels, positive)
    slots = (probability * BINS).astype(np.intp)  # probabilities are in [0, 1]
    np.minimum(slots, BINS - 1, out=slots)
    positive_sum = float(np.dot(probability, mask))
    return (
        int(np.count_nonzero(mask)),
        positive_sum,
        float(probability.sum()) - positive_sum,
        np.bincount(slots, minlength=BINS).tolist(),
        probability,
    )


def positive_mask(labels: Any, positive: Any) -> Any:
    """Which labels (a list or an array) are the positive label, as a boolean array."""
    import numpy as np

    array = np.asarray(labels)
    kind = array.dtype.kind
    if (
        kind == "O"
        or (kind in "iu" and isinstance(positive, int))
        or (kind == "U" and isinstance(positive, str))
    ):
        return np.asarray(array == positive, dtype=bool)
    values = array.tolist()
    return np.fromiter((label == positive for label in values), dtype=bool, count=len(values))


def plain(value: Any) -> Any:
    """A JSON value: numbers and text as they are, missing (None, NaN) and infinities null."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, str | bool | int):
        return value
    item = getattr(value, "item", None)  # a numpy scalar
    if item is not None:
        return plain(item())
    return str(value)


# -- on disk: reading the files back ------------------------------------------------------------
@dataclass(frozen=True)
class Tally:
    """Counters as a file holds them, to add up across files."""

    records: int = 0
    positives: int = 0
    positive_sum: float = 0.0
    negative_sum: float = 0.0
    histogram: tuple[int, ...] = (0,) * BINS

    def __add__(self, other: Tally) -> Tally:
        return Tally(
            self.records + other.records,
            self.positives + other.positives,
            self.positive_sum + other.positive_sum,
            self.negative_sum + other.negative_sum,
            tuple(a + b for a, b in zip(self.histogram, other.histogram, strict=True)),
        )

    @property
    def mean_risk(self) -> float | None:
        return (self.positive_sum + self.negative_sum) / self.records if self.records else None


@dataclass(frozen=True)
class Sample:
    """One file's reservoir: ``seen`` records, of which ``rows`` (version, values) were kept."""

    seen: int
    features: Mapping[str, tuple[str, ...]]  # by version
    rows: tuple[tuple[str, tuple[Any, ...]], ...]

    @property
    def kept(self) -> int:
        return len(self.rows)


@dataclass(frozen=True)
class HourFile:
    """One process's file of one hour."""

    hour: int
    versions: Mapping[str, Tally]
    sample: Sample


def parse(data: Any, hour: int) -> HourFile:
    """A file's JSON; ``ValueError`` for anything that is not one of these files."""
    try:
        if data.get("format") != FORMAT:
            raise ValueError(f"format {data.get('format')!r}, not {FORMAT}")
        versions = {}
        for version, counts in data["versions"].items():
            histogram = tuple(int(c) for c in counts["histogram"])
            if len(histogram) != BINS or int(counts["records"]) != sum(histogram):
                raise ValueError("the histogram does not add up to the records")
            versions[str(version)] = Tally(
                int(counts["records"]),
                int(counts["predicted_positive"]),
                float(counts["probability_sum_positive"]),
                float(counts["probability_sum_negative"]),
                histogram,
            )
        sample = data["sample"]
        features: dict[str, tuple[str, ...]] = {}
        rows: list[tuple[str, tuple[Any, ...]]] = []
        for version, block in sample["versions"].items():
            names = tuple(str(c) for c in block["features"])
            features[str(version)] = names
            for row in block["rows"]:
                if len(row) != len(names) + 1:
                    raise ValueError("a sampled row does not match its features")
                rows.append((str(version), tuple(row[:-1])))
        return HourFile(hour, versions, Sample(int(sample["seen"]), features, tuple(rows)))
    except (AttributeError, KeyError, TypeError) as exc:
        raise ValueError(f"not a live monitoring file ({type(exc).__name__}: {exc})") from exc


def listing(folder: Path, first: int, last: int) -> dict[str, tuple[int, int, int]]:
    """Every process file of the hours ``first`` .. ``last``: path -> (mtime, size, hour);
    temporary files of writers are left out."""
    found: dict[str, tuple[int, int, int]] = {}
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return found
    for entry in entries:
        index = hour_index(entry.name)
        if index is None or not first <= index <= last:
            continue
        try:
            with os.scandir(entry.path) as items:
                listed = list(items)
            for item in listed:
                if item.name.startswith(TMP_PREFIX) or not item.name.endswith(".json"):
                    continue
                info = item.stat(follow_symlinks=False)
                found[item.path] = (info.st_mtime_ns, info.st_size, index)
        except OSError:
            continue
    return found


def sweep(folder: Path, now: int, retention_hours: int) -> None:
    """Remove hours beyond retention, and temporary files killed writers left (one being
    written now by another process is younger than ten minutes and stays)."""
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return
    oldest = now - retention_hours
    stale = time.time() - _STALE_TEMPORARY_S
    for entry in entries:
        index = hour_index(entry.name)
        if index is None or not entry.is_dir(follow_symlinks=False):
            continue
        if index <= oldest:
            shutil.rmtree(entry.path, ignore_errors=True)
            continue
        with contextlib.suppress(OSError), os.scandir(entry.path) as leftovers:
            for leftover in leftovers:
                if leftover.name.startswith(TMP_PREFIX) and leftover.stat().st_mtime < stale:
                    Path(leftover.path).unlink(missing_ok=True)
