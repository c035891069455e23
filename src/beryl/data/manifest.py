"""What the dataset records: the manifest (``dataset.json``) and each batch's own record.

``Manifest`` is the whole record (schema, classes, batches, the ingestion record of every file,
the state of ``finaldata.csv``); ``BatchRecord`` is what ``batches/<id>.batch.json`` repeats of
it for one batch, so that a lost manifest can be rebuilt from the batches. Both are plain data
with their JSON form; ``beryl.data.dataset`` reads and publishes them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from beryl.data import rowhash
from beryl.data.schema import Schema

FORMAT_VERSION = 1
RECORD_FORMAT_VERSION = 1
SET_ASIDE = "set-aside"  # the status of a file record whose batch was set aside
_BATCH_ID = re.compile(r"^[A-Za-z0-9_-]+$")


@dataclass
class FileRecord:
    """What happened to one input file (the ingestion record)."""

    name: str
    sha256: str
    status: str  # ingested | duplicate-file | quarantined | set-aside
    time: str
    rows_read: int = 0
    rows_kept: int = 0
    batch: str | None = None
    reason: str | None = None
    size: int = 0
    note: str | None = None
    # The file's identity when it was read (``os.stat``): a file whose device, inode, size,
    # modification and change times all match is not read again. A time within the settle
    # period of the read is not recorded (None: the file is read again next time).
    mtime_ns: int | None = None
    ctime_ns: int | None = None
    dev: int | None = None
    ino: int | None = None
    # For a file refused for its content: the key of the schema it was judged against
    # (``Schema.key``); it is judged again once the dataset's schema has another key.
    schema_key: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v is not None}

    @classmethod
    def from_dict(cls, data: Any) -> FileRecord:
        """A file record as JSON holds it; ValueError or TypeError if it is not one."""
        if not isinstance(data, dict):
            raise TypeError("a file record is not a JSON object")
        record = cls(**data)
        if not all(isinstance(v, str) for v in (record.name, record.sha256, record.status)):
            raise ValueError("a file record has no name, sha256 or status")
        return record


@dataclass
class BatchInfo:
    """One immutable batch of rows new to the dataset.

    ``sizes``: the bytes of its files on disk (``parquet``, ``hashes``, ``record``), so that a
    repair finds a cut or swapped file with one ``stat``.
    """

    id: str
    created: str
    rows: int
    files: list[str]
    sizes: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        data = dict(self.__dict__)
        data["sizes"] = dict(self.sizes)
        return data

    @classmethod
    def from_dict(cls, data: Any) -> BatchInfo:
        """A batch as a manifest or a batch record holds it; ValueError or TypeError if not."""
        if not isinstance(data, dict):
            raise TypeError("a batch is not a JSON object")
        batch = cls(**data)
        if not isinstance(batch.id, str) or not _BATCH_ID.match(batch.id):
            raise ValueError(f"{batch.id!r} is not a batch id")
        if not _is_count(batch.rows) or not isinstance(batch.created, str):
            raise ValueError(f"batch {batch.id} has no row count or time")
        if not isinstance(batch.files, list) or not all(isinstance(f, str) for f in batch.files):
            raise ValueError(f"batch {batch.id}: files is not a list of names")
        if not isinstance(batch.sizes, dict) or not all(map(_is_count, batch.sizes.values())):
            raise ValueError(f"batch {batch.id}: sizes is not a mapping of byte counts")
        return batch


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


@dataclass(frozen=True)
class SnapshotState:
    """What the manifest knows of ``finaldata.csv``: the batches it holds, in order, and its
    length in bytes when they were published (rows appended after that were never published)."""

    batches: tuple[str, ...]
    bytes: int

    def holds(self, batches: list[BatchInfo]) -> bool:
        """Whether the snapshot was written for exactly these batches."""
        return self.batches == tuple(b.id for b in batches)

    def to_dict(self) -> dict[str, Any]:
        return {"batches": list(self.batches), "bytes": self.bytes}

    @classmethod
    def from_dict(cls, data: Any) -> SnapshotState | None:
        """The recorded state, or None when there is none (or one this Beryl cannot use, which
        makes the snapshot be written again)."""
        if not isinstance(data, dict):
            raise TypeError("snapshot is not a JSON object")
        batches, size = data.get("batches"), data.get("bytes")
        if not isinstance(batches, list) or not all(isinstance(b, str) for b in batches):
            return None
        if not isinstance(size, int) or not _is_count(size):
            return None
        return cls(tuple(batches), size)


@dataclass
class Manifest:
    """The dataset's record (``dataset.json``)."""

    schema: Schema | None = None
    batches: list[BatchInfo] = field(default_factory=list)
    files: list[FileRecord] = field(default_factory=list)
    snapshot: SnapshotState | None = None
    classes: list[Any] = field(default_factory=list)
    row_hash: int = rowhash.VERSION

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT_VERSION,
            "schema": self.schema.to_dict() if self.schema else None,
            "classes": self.classes,
            "batches": [b.to_dict() for b in self.batches],
            "files": [f.to_dict() for f in self.files],
            "snapshot": self.snapshot.to_dict() if self.snapshot else {},
            "row_hash": self.row_hash,
        }

    @classmethod
    def from_dict(cls, data: Any) -> Manifest:
        """The manifest ``data`` describes; ValueError, KeyError or TypeError when it is not one."""
        if not isinstance(data, dict):
            raise TypeError("not a JSON object")
        schema = Schema.from_dict(data["schema"]) if data.get("schema") else None
        batches, files = data.get("batches", []), data.get("files", [])
        classes = data.get("classes", [])
        if not isinstance(batches, list) or not isinstance(files, list):
            raise TypeError("batches and files are not lists")
        if not isinstance(classes, list):
            raise TypeError("classes is not a list")
        manifest = cls(
            schema=schema,
            batches=[BatchInfo.from_dict(b) for b in batches],
            files=[FileRecord.from_dict(f) for f in files],
            snapshot=SnapshotState.from_dict(data.get("snapshot", {})),
            classes=list(classes),
            row_hash=int(data.get("row_hash", 1)),
        )
        if len({b.id for b in manifest.batches}) != len(manifest.batches):
            raise ValueError("a batch is named twice")
        return manifest

    @property
    def header(self) -> tuple[Any, ...]:
        """What every batch record repeats from the manifest."""
        return (self.schema, self.classes, self.row_hash)

    @property
    def rows(self) -> int:
        return sum(b.rows for b in self.batches)


@dataclass(frozen=True)
class BatchRecord:
    """What ``batches/<id>.batch.json`` holds: enough to rebuild the manifest's part on it."""

    batch: BatchInfo
    files: list[FileRecord]
    schema: Schema | None
    classes: list[Any]
    row_hash: int

    def to_dict(self) -> dict[str, Any]:
        sizes = {k: v for k, v in self.batch.sizes.items() if k != "record"}
        return {
            "format": RECORD_FORMAT_VERSION,
            "batch": {**self.batch.to_dict(), "sizes": sizes},
            "files": [f.to_dict() for f in self.files],
            "schema": self.schema.to_dict() if self.schema else None,
            "classes": self.classes,
            "row_hash": self.row_hash,
        }

    @classmethod
    def from_dict(cls, data: Any) -> BatchRecord:
        if not isinstance(data, dict):
            raise TypeError("not a JSON object")
        version = data.get("format")
        if not isinstance(version, int) or version > RECORD_FORMAT_VERSION:
            raise ValueError(f"format {version!r} is not one this Beryl reads")
        files, classes = data["files"], data["classes"]
        if not isinstance(files, list) or not isinstance(classes, list):
            raise TypeError("files or classes is not a list")
        return cls(
            batch=BatchInfo.from_dict(data["batch"]),
            files=[FileRecord.from_dict(f) for f in files],
            schema=Schema.from_dict(data["schema"]) if data.get("schema") else None,
            classes=classes,
            row_hash=int(data["row_hash"]),
        )


def records_by_batch(manifest: Manifest) -> dict[str, list[FileRecord]]:
    """The file records each batch's record carries: those of the ingestion that made it.

    Records are in the order ingestions appended them; a batch takes the records since the
    previous batch's (files of passes that added no rows, then its own ingestion's), so the
    records taken together, in batch order, are the manifest's up to its last batch.
    """
    named = {b.id for b in manifest.batches}
    groups: dict[str, list[FileRecord]] = {}
    pending: list[FileRecord] = []
    for record in manifest.files:
        pending.append(record)
        if record.batch in named:
            groups.setdefault(record.batch, []).extend(pending)
            pending = []
    return groups
