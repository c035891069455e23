"""The input folder against the ingestion record: which ``*.csv`` files are new.

A file is new when its name *and* content hash have not been seen: a renamed copy of an ingested
file is a ``duplicate-file``; a changed file is read again. A file whose identity (device, inode,
size, modification and change times) matches its record is not opened at all, so a scan of an
unchanged folder costs a directory listing. An entry that is never read for its name or kind
(not UTF-8, a control character, a link, a folder, a FIFO) is quarantined as it is listed; one
that vanished, or changes while it is read, is deferred to the next pass.
"""

from __future__ import annotations

import dataclasses
import os
import stat
import time
import unicodedata
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from beryl._io import is_utf8
from beryl.config import Settings
from beryl.data.dataset import Dataset
from beryl.data.inputfile import InputFile
from beryl.data.manifest import FileRecord
from beryl.data.safeopen import Identity, NotRegularFileError
from beryl.errors import DataError
from beryl.workspace import Workspace

# A file time this close to the listing may still change without changing the time (file
# times are coarse): it is not recorded, so the file is read again next pass.
_SETTLE_NS = 2_000_000_000


@dataclass(frozen=True)
class Candidate:
    """A file in the input folder that the dataset has not seen with this identity."""

    path: Path
    name: str
    sha256: str
    identity: Identity
    listed_ns: int  # when the folder was listed: a file time older than that is trusted

    @property
    def size(self) -> int:
        return self.identity.size

    @property
    def mtime_ns(self) -> int:
        return self.identity.mtime_ns

    def record(self, sha256: str, status: str, reason: str | None = None) -> FileRecord:
        """The ingestion record of this file, as of now.

        Its times are recorded only when they were older than the settle period when the
        folder was listed: file times are coarse (milliseconds, or seconds), so a file rewritten
        right after it was read could keep its size and times.
        """
        info = self.identity
        return FileRecord(
            self.name,
            sha256,
            status,
            record_time(),
            size=info.size,
            mtime_ns=_trusted(info.mtime_ns, self.listed_ns),
            ctime_ns=_trusted(info.ctime_ns, self.listed_ns),
            dev=info.dev,
            ino=info.ino,
            reason=reason,
        )


@dataclass
class Scan:
    """What is in the input folder compared with the ingestion record."""

    new: list[Candidate] = field(default_factory=list)
    duplicates: list[FileRecord] = field(default_factory=list)
    rejected: list[FileRecord] = field(default_factory=list)
    known: list[str] = field(default_factory=list)
    deferred: list[str] = field(default_factory=list)


def record_time() -> str:
    """The time a file record is made, to the second (UTC)."""
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _trusted(time_ns: int, listed_ns: int) -> int | None:
    """A file time to trust later, or None for one within the settle period of the listing."""
    return time_ns if listed_ns - time_ns > _SETTLE_NS else None


class Known:
    """What the ingestion record says about file contents: seen under a name, or ingested.

    A file refused for a column's type against another schema than the dataset's counts as
    unseen: it is judged again after a re-type.
    """

    def __init__(self, dataset: Dataset) -> None:
        key = dataset.schema.key() if dataset.schema is not None else None
        current = [
            r
            for r in dataset.files
            if not (r.status == "quarantined" and r.schema_key and r.schema_key != key)
        ]
        self.by_name_hash = {(r.name, r.sha256) for r in current}
        self.ingested = {r.sha256: r.name for r in dataset.files if r.status == "ingested"}
        self.identities = {
            identity for r in current if (identity := _recorded_identity(r)) is not None
        }
        self.latest = {(r.name, r.sha256): index for index, r in enumerate(dataset.files)}

    def recorded(self, record: FileRecord) -> bool:
        """Whether the ingestion record already holds this record's name and key."""
        return (record.name, record.sha256) in self.by_name_hash

    def unchanged(self, name: str, info: os.stat_result) -> bool:
        """Whether the file's identity matches a record: then it is not read."""
        return (name, Identity.of(info)) in self.identities

    def duplicate(self, candidate: Candidate, digest: str) -> FileRecord | None:
        """The record of a renamed copy of an ingested file, else None."""
        if digest not in self.ingested:
            return None
        reason = f"same content as {self.ingested[digest]}, already ingested"
        return candidate.record(digest, "duplicate-file", reason)


def _recorded_identity(record: FileRecord) -> tuple[str, Identity] | None:
    values = (record.dev, record.ino, record.mtime_ns, record.ctime_ns)
    if any(v is None for v in values):
        return None  # recorded by an older Beryl, or changed moments before it was read
    dev, ino, mtime_ns, ctime_ns = (int(v) for v in values if v is not None)
    return record.name, Identity(dev, ino, record.size, mtime_ns, ctime_ns)


def _is_control(char: str) -> bool:
    """Whether ``char`` ends a line for some reader of a line-based file (ingestedfiles.txt,
    logs, a terminal): C0 and C1 controls, DEL, and the Unicode line and paragraph separators."""
    return unicodedata.category(char) == "Cc" or char in "\u2028\u2029"


def _escaped(char: str) -> str:
    return char.encode("unicode_escape").decode("ascii")


def _shown(name: str) -> str:
    """``name`` with every control character escaped (``\\n``, ``\\x1b``), fit for one line."""
    return "".join(_escaped(c) if _is_control(c) else c for c in name)


def _name_problem(name: str) -> tuple[str, str] | None:
    """For a name that must not go into a line-based file: how it is shown and what is wrong."""
    if not is_utf8(name):
        shown = _shown(os.fsencode(name).decode("utf-8", errors="replace"))
        return shown, "the file name is not valid UTF-8; rename the file"
    control = next((c for c in name if _is_control(c)), None)
    if control is not None:
        return _shown(name), (
            f"the file name contains a control character ({_escaped(control)}): rename the file"
        )
    return None


def _rejection(name: str, info: os.stat_result) -> FileRecord | None:
    """The quarantine record of an entry that is never read for its name or kind, else None.

    Its key (in ``sha256``) changes with the entry, so an unchanged one is recorded once.
    """
    problem = _name_problem(name)
    if problem is not None:
        shown, why = problem
        key = f"bad-name:{info.st_ino}:{info.st_mtime_ns}"
        return FileRecord(shown, key, "quarantined", record_time(), reason=f"{shown}: {why}")
    if not stat.S_ISREG(info.st_mode):
        kind = "a symbolic link" if stat.S_ISLNK(info.st_mode) else "not a regular file"
        reason = f"{name} is {kind}: only regular files inside the input folder are read"
        key = f"not-a-file:{info.st_mode:o}:{info.st_mtime_ns}"
        return FileRecord(name, key, "quarantined", record_time(), reason=reason)
    return None


def _listing(settings: Settings) -> list[os.DirEntry[str]]:
    folder = settings.input_folder
    if not folder.is_dir():
        raise DataError(
            f"input folder {folder} does not exist",
            hint="create it or fix input_folder_path in config.json",
        )
    with os.scandir(folder) as entries:
        return sorted((e for e in entries if e.name.lower().endswith(".csv")), key=lambda e: e.name)


def scan_input(workspace: Workspace | Settings, *, read_new: bool = True) -> Scan:
    """Classify every ``*.csv`` entry of the input folder against the ingestion record.

    A file whose identity matches its record is not opened. ``read_new=False`` leaves the
    others unread (their ``sha256`` empty): ``ingest`` reads each once and hashes it as it goes.
    With ``read_new`` each is hashed (in blocks) and treated as ``ingest`` would treat it: one
    that vanished is deferred, one that cannot be read is rejected (quarantined) with the reason.
    """
    workspace = Workspace.of(workspace)
    scan = Scan()
    known = Known(workspace.dataset)
    listed_ns = time.time_ns()
    for entry in _listing(workspace.settings):
        try:
            info = entry.stat(follow_symlinks=False)
        except FileNotFoundError:
            scan.deferred.append(entry.name)  # gone since the listing: looked at next pass
            continue
        except OSError as exc:
            _refuse_unlisted(entry.name, exc, known, scan)
            continue
        rejected = _rejection(entry.name, info)
        if rejected is not None:
            if not known.recorded(rejected):
                scan.rejected.append(rejected)
            continue
        if known.unchanged(entry.name, info):
            scan.known.append(entry.name)
            continue
        candidate = Candidate(Path(entry.path), entry.name, "", Identity.of(info), listed_ns)
        if not read_new:
            scan.new.append(candidate)
            continue
        _hash_candidate(candidate, known, scan)
    return scan


def _refuse_unlisted(name: str, exc: OSError, known: Known, scan: Scan) -> None:
    """An entry that cannot even be looked at (``stat`` failed)."""
    key, reason = f"unreadable:{exc.errno}", f"{name}: cannot be read: {exc.strerror or exc}"
    record = FileRecord(name, key, "quarantined", record_time(), reason=reason)
    if not known.recorded(record):
        scan.rejected.append(record)


def _hash_candidate(candidate: Candidate, known: Known, scan: Scan) -> None:
    """Hash a file that may be new, as ``ingest`` would read it (``scan_input(read_new=True)``)."""
    try:
        with InputFile(candidate.path) as source:
            if source.identity != candidate.identity:
                scan.deferred.append(candidate.name)  # changed since the listing
                return
            source.drain()
            if not source.settled():
                scan.deferred.append(candidate.name)  # still being written
                return
            digest = source.digest
    except OSError as exc:
        record = unread(candidate, exc)
        if record is None:
            scan.deferred.append(candidate.name)
        elif not known.recorded(record):
            scan.rejected.append(record)
        return
    candidate = dataclasses.replace(candidate, sha256=digest)
    duplicate = known.duplicate(candidate, digest)
    if (candidate.name, digest) in known.by_name_hash:
        scan.known.append(candidate.name)
    elif duplicate is not None:
        scan.duplicates.append(duplicate)
    else:
        scan.new.append(candidate)


def unread(candidate: Candidate, exc: OSError) -> FileRecord | None:
    """What becomes of a candidate that could not be opened or read (``exc``): None to look
    at it next pass (it is gone, or a regular file again), else its quarantine record.

    An entry that became a link, folder or FIFO after the listing gets the record the listing
    makes of it (so the next pass does not record it again). A file that cannot be read is
    tried again once its identity changes (a change of permissions changes its ``ctime``).
    """
    if isinstance(exc, FileNotFoundError):
        return None
    if isinstance(exc, NotRegularFileError):
        try:
            return _rejection(candidate.name, os.lstat(candidate.path))
        except OSError:
            return None
    info = candidate.identity
    key = f"unreadable:{info.dev}:{info.ino}:{info.size}:{info.mtime_ns}:{info.ctime_ns}"
    if isinstance(exc, PermissionError):
        what = "give the user running Beryl read access to it"
    else:
        what = "check the file and the disk it is on"
    reason = (
        f"{candidate.name}: cannot be read: {exc.strerror or exc} ({what}; it is tried again "
        "once the file changes)"
    )
    return candidate.record(key, "quarantined", reason)


def outstanding_quarantine(workspace: Workspace | Settings) -> list[FileRecord]:
    """The quarantined files still in the input folder as they were refused: a problem stays
    listed (``beryl diagnose``, ``/diagnostics``, the dashboard, every pass's exit code) until
    the file is fixed (then read again) or removed. One listing; no file is opened."""
    workspace = Workspace.of(workspace)
    latest: dict[str, FileRecord] = {}
    for record in workspace.dataset.files:
        latest[record.name] = record
    try:
        present = {_shown(entry.name) for entry in _listing(workspace.settings)}
    except (DataError, OSError):  # no input folder to look in: nothing is waiting in it
        return []
    return [
        record
        for name, record in sorted(latest.items())
        if record.status == "quarantined" and name in present
    ]
