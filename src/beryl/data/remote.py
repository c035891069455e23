"""The workspace on object storage (``workspace_url``): the input files, the dataset and the
reports in a bucket, shared by every machine that runs Beryl on it, with each machine's
workspace folders as its cache.

Layout under ``workspace_url``::

    input/*.csv                 the input files: drop them here
    dataset/dataset.json        the manifest; moved only by compare-and-swap
    dataset/batches/<id>.*      a batch's files, each written once, before a manifest names it
    dataset/finaldata.csv, dataset/ingestedfiles.txt   the original layout's files
    reports/                    the last report (report.html, its images, report.json)
    models/                     the registry (``beryl.model.registry_objects``), unless
                                ``registry_url`` names another place

``sync`` runs under the pass lock at the start and at the end of every command that changes the
workspace (``beryl.loop.commands.locked_run``), and after ingestion in a pass. Per file it keeps,
in ``.remote/state.json`` of the dataset folder, the bucket's stamp (ETag) and this machine's
(``stat``) as of the last time both held the same content. Then:

- the bucket's copy moved since: another machine changed it, and it is downloaded (for the
  manifest, the batches it names that are not here come first; its file records then get this
  machine's identities of the input files, so that none is read again). A change of this
  machine's that never reached the bucket (a command killed between the two) is dropped: the
  input files it came from are read again;
- only this machine's copy moved: it is uploaded (for the manifest, its new batches first, then
  the manifest by compare-and-swap against the stamp last seen, so that of two machines
  publishing at once without a shared lock one wins and the other stops with one line);
- neither: nothing moves.

Input files are downloaded, by ETag, into the input folder before a pass looks at it, and a file
removed from the bucket is removed here. ``refresh`` is the API's half: it pulls a changed
dataset (at most every ``api.registry_poll_s``) and never uploads. One machine's processes take
turns through a lock on ``.remote/``::

    mirror = WorkspaceMirror(settings, S3Storage(settings.workspace_url, os.environ))
    with mirror.turn():
        mirror.pull_inputs()
        mirror.sync()
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from beryl._io import TMP_PREFIX, atomic_write_json, sha256_file
from beryl.config import Settings
from beryl.errors import StateError, describe_os_error
from beryl.storage import FileStorage

log = logging.getLogger(__name__)

STATE_FOLDER = ".remote"
INPUT_PREFIX = "input/"
DATASET_PREFIX = "dataset/"
REPORT_PREFIX = "reports/"
REPORT_FILES = ("report.html", "confusionmatrix.png", "classificationreport.png", "report.json")
DERIVED_FILES = ("finaldata.csv", "ingestedfiles.txt")
_MANIFEST = "dataset.json"
_BATCH_SUFFIXES = (".parquet", ".hashes.npy", ".batch.json")


@dataclasses.dataclass
class SyncReport:
    """What one ``sync`` or ``pull_inputs`` moved (names of files, for the run's record)."""

    downloaded: list[str] = dataclasses.field(default_factory=list)
    uploaded: list[str] = dataclasses.field(default_factory=list)
    removed: list[str] = dataclasses.field(default_factory=list)
    dropped: list[str] = dataclasses.field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.downloaded or self.uploaded or self.removed or self.dropped)


class WorkspaceMirror:
    """This machine's workspace folders kept in step with ``workspace_url`` (module docstring)."""

    def __init__(self, settings: Settings, storage: FileStorage) -> None:
        self.settings = settings
        self.storage = storage
        self.folder = settings.output_folder / STATE_FOLDER
        self._checked = 0.0

    # -- the state of the last sync ---------------------------------------------------------
    @property
    def state_path(self) -> Path:
        return self.folder / "state.json"

    def _state(self) -> dict[str, Any]:
        try:
            data = json.loads(self.state_path.read_text("utf-8"))
        except FileNotFoundError:
            return {"files": {}, "inputs": {}}
        except (OSError, ValueError) as exc:
            # The state is only a record of what was in step: without it, every file counts as
            # moved in the bucket and is downloaded again (nothing is lost).
            log.warning("%s cannot be read (%s); starting the sync afresh", self.state_path, exc)
            return {"files": {}, "inputs": {}}
        if not isinstance(data, dict):
            return {"files": {}, "inputs": {}}
        data.setdefault("files", {})
        data.setdefault("inputs", {})
        return data

    def _save(self, state: dict[str, Any]) -> None:
        atomic_write_json(self.state_path, state)

    @contextlib.contextmanager
    def turn(self) -> Iterator[None]:
        """This machine's processes sync one at a time (``flock`` on the state folder)."""
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.folder, os.O_RDONLY | os.O_DIRECTORY)
        except OSError as exc:
            message, hint = describe_os_error(exc, self.folder)
            raise StateError(f"cannot use {self.folder}: {message}", hint=hint) from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    # -- input files ------------------------------------------------------------------------
    def pull_inputs(self) -> SyncReport:
        """Download the bucket's new or changed input files into the input folder, and remove
        those removed from the bucket (only files this mirror put there)."""
        report = SyncReport()
        state = self._state()
        inputs: dict[str, Any] = state["inputs"]
        folder = self.settings.input_folder
        listed = {}
        for entry in self.storage.listing(INPUT_PREFIX):
            name = entry.key[len(INPUT_PREFIX) :]
            if _usable_name(name):
                listed[name] = entry
        for name, entry in listed.items():
            known = inputs.get(name)
            path = folder / name
            if known and known.get("stamp") == entry.stamp and _identity(path) == known.get("id"):
                continue
            stamp = self.storage.get_file(entry.key, path)
            if stamp is None:
                continue  # removed since the listing: looked at next pass
            os.utime(path, ns=(entry.modified_ns, entry.modified_ns))
            inputs[name] = {"stamp": stamp, "sha256": sha256_file(path), "id": _identity(path)}
            report.downloaded.append(f"{INPUT_PREFIX}{name}")
        for name in sorted(set(inputs) - set(listed)):
            path = folder / name
            if _identity(path) == inputs[name].get("id"):
                path.unlink(missing_ok=True)
                report.removed.append(f"{INPUT_PREFIX}{name}")
            del inputs[name]
        if report:
            self._save(state)
        return report

    # -- the dataset and the derived files --------------------------------------------------
    def sync(self, *, upload: bool = True, publishing: bool = False) -> SyncReport:
        """Bring the manifest, the original-layout files and the report in step with the
        bucket (module docstring); ``upload=False`` only downloads (the API). ``publishing``:
        at the end of a command, whose change of the dataset must not be dropped: when another
        machine's came first, a ``StateError`` says so (at the start of the next command, the
        other machine's is taken)."""
        report = SyncReport()
        state = self._state()
        files: dict[str, Any] = state["files"]
        dataset = self.settings.output_folder
        self._sync_manifest(files, state["inputs"], upload, report, publishing)
        pairs = [(f"{DATASET_PREFIX}{n}", dataset / n) for n in DERIVED_FILES]
        pairs += [(f"{REPORT_PREFIX}{n}", self.settings.model_folder / n) for n in REPORT_FILES]
        for key, path in pairs:
            self._sync_file(key, path, files, upload, report)
        self._save(state)
        return report

    def refresh(self, every_s: float) -> bool:
        """The API's check (at most every ``every_s`` seconds): download a dataset another
        machine changed; whether anything was downloaded."""
        now = time.monotonic()
        if now - self._checked < every_s:
            return False
        self._checked = now
        with self.turn():
            return bool(self.sync(upload=False).downloaded)

    def _sync_manifest(
        self,
        files: dict[str, Any],
        inputs: dict[str, Any],
        upload: bool,
        report: SyncReport,
        publishing: bool,
    ) -> None:
        key = f"{DATASET_PREFIX}{_MANIFEST}"
        path = self.settings.output_folder / _MANIFEST
        last = files.get(key, {})
        remote, local = self.storage.stamp(key), _stamp(path)
        if remote is not None and remote != last.get("remote"):
            if publishing and _moved(local, last):
                raise self._conflict(key)
            self._download_manifest(key, path, files, inputs, report, dropped=_moved(local, last))
        elif local is not None and local != last.get("local") and upload:
            self._upload_manifest(key, path, files, last.get("remote"), report)

    def _download_manifest(
        self,
        key: str,
        path: Path,
        files: dict[str, Any],
        inputs: dict[str, Any],
        report: SyncReport,
        *,
        dropped: bool,
    ) -> None:
        staged = self.folder / _MANIFEST
        stamp = self.storage.get_file(key, staged)
        if stamp is None:
            return
        try:
            manifest = json.loads(staged.read_text("utf-8"))
            batches = [str(b["id"]) for b in manifest.get("batches", [])]
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise StateError(
                f"the dataset record {self.storage.where(key)} is damaged ({exc})",
                hint="restore it from the bucket's versions, or from this machine's "
                f"{path} (remove {self.state_path} and run `beryl ingest` here to upload it)",
            ) from exc
        folder = self.settings.output_folder / "batches"
        for batch in batches:
            for suffix in _BATCH_SUFFIXES:
                name = f"{batch}{suffix}"
                target = folder / name
                if target.exists():
                    continue  # immutable: a batch file here is the one the bucket holds
                if self.storage.get_file(f"{DATASET_PREFIX}batches/{name}", target) is None:
                    raise StateError(
                        f"the dataset at {self.storage.where(key)} names batch {batch}, but "
                        f"{self.storage.where(DATASET_PREFIX + 'batches/' + name)} is missing",
                        hint="restore the batch's files in the bucket (or set the batch aside "
                        "with `beryl set-aside` on the machine that made it)",
                    )
                report.downloaded.append(f"{DATASET_PREFIX}batches/{name}")
        manifest["files"] = [
            _localized(r, inputs, self.settings.input_folder) for r in manifest.get("files", [])
        ]
        atomic_write_json(path, manifest)
        staged.unlink(missing_ok=True)
        files[key] = {"remote": stamp, "local": _stamp(path)}
        report.downloaded.append(key)
        if dropped:
            report.dropped.append(key)
            log.warning(
                "this machine's last change of the dataset never reached %s and another "
                "machine's came first: its input files are read again",
                self.storage.where(key),
            )

    def _upload_manifest(
        self,
        key: str,
        path: Path,
        files: dict[str, Any],
        expected: str | None,
        report: SyncReport,
    ) -> None:
        try:
            manifest = json.loads(path.read_text("utf-8"))
            batches = [str(b["id"]) for b in manifest.get("batches", [])]
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return  # a damaged local manifest: the repair after this sync puts it right first
        folder = self.settings.output_folder / "batches"
        uploaded = {e.key for e in self.storage.listing(f"{DATASET_PREFIX}batches/")}
        for batch in batches:
            for suffix in _BATCH_SUFFIXES:
                name = f"{DATASET_PREFIX}batches/{batch}{suffix}"
                if name in uploaded:
                    continue
                source = folder / f"{batch}{suffix}"
                if not source.is_file():
                    return  # the repair after this sync restores or sets aside the batch
                self.storage.put_file(name, source, create=True)
                report.uploaded.append(name)
        if expected is None:
            stamp = self.storage.put_file(key, path, create=True)
        else:
            stamp = self.storage.put_file(key, path, expected=expected)
        if stamp is None:
            raise self._conflict(key)
        files[key] = {"remote": stamp, "local": _stamp(path)}
        report.uploaded.append(key)

    def _conflict(self, key: str) -> StateError:
        return StateError(
            f"another machine changed the dataset at {self.storage.where(key)} while this one "
            "was changing it",
            hint="give every machine the same history_url, so that their passes share one "
            "lock; the next command here takes the other machine's dataset and reads this "
            "one's new input files again",
        )

    def _sync_file(
        self, key: str, path: Path, files: dict[str, Any], upload: bool, report: SyncReport
    ) -> None:
        """One file that is replaced whole (no batches behind it): the same rule, by stamps."""
        last = files.get(key, {})
        remote, local = self.storage.stamp(key), _stamp(path)
        if remote is not None and remote != last.get("remote"):
            stamp = self.storage.get_file(key, path)
            if stamp is not None:
                files[key] = {"remote": stamp, "local": _stamp(path)}
                report.downloaded.append(key)
        elif local is not None and local != last.get("local") and upload:
            stamp = self.storage.put_file(key, path)
            files[key] = {"remote": stamp, "local": local}
            report.uploaded.append(key)


def _usable_name(name: str) -> bool:
    """A key directly in ``input/`` that can be a file name here (the scan judges the rest)."""
    return (
        bool(name)
        and "/" not in name
        and "\x00" not in name
        and name not in (".", "..")
        and not name.startswith((".", TMP_PREFIX))
    )


def _stamp(path: Path) -> str | None:
    try:
        info = path.stat()
    except OSError:
        return None
    return f"{info.st_ino}:{info.st_mtime_ns}:{info.st_size}"


def _identity(path: Path) -> list[int] | None:
    try:
        info = path.stat(follow_symlinks=False)
    except OSError:
        return None
    return [info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns]


def _moved(local: str | None, last: dict[str, Any]) -> bool:
    """Whether this machine's copy changed since the last sync (a change not uploaded)."""
    return local is not None and last.get("local") is not None and local != last["local"]


def _localized(record: Any, inputs: dict[str, Any], folder: Path) -> Any:
    """A file record with this machine's identity of the input file it describes, when that
    file is the one this mirror downloaded with the same content (else as it came: the file is
    read again, and its identity recorded then)."""
    if not isinstance(record, dict):
        return record
    known = inputs.get(str(record.get("name")))
    if not known or known.get("sha256") != record.get("sha256"):
        return record
    identity = _identity(folder / str(record["name"]))
    if identity is None or identity != known.get("id"):
        return record
    dev, ino, size, mtime_ns, ctime_ns = identity
    return {
        **record,
        "dev": dev,
        "ino": ino,
        "size": size,
        "mtime_ns": mtime_ns,
        "ctime_ns": ctime_ns,
    }
