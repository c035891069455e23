"""Setting aside batches Beryl cannot use, so that their rows come back from the input folder.

``set_aside_batches`` (``beryl dataset set-aside``) moves batches, with their indexes and
records, to ``.recovered/``, publishes a manifest without them and marks the files that fed them
as not ingested: the next pass reads those files again from the input folder. Nothing is
deleted. A repair refuses a damaged batch naming this command::

    set_aside_batch(workspace, "20240611T101500123456Z")
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

from beryl._io import remove_stale_temporaries
from beryl.config import Settings
from beryl.data.dataset import Dataset
from beryl.data.manifest import SET_ASIDE, FileRecord, Manifest
from beryl.data.repair import move_batch, os_error, rebuild, refresh_derived
from beryl.errors import DataError, StateError
from beryl.recovery import Aside
from beryl.workspace import Workspace


@dataclass(frozen=True)
class SetAside:
    """What a set-aside did."""

    batches: list[str]  # the batches moved aside
    folder: Path | None  # where they went
    rows: int  # rows the dataset no longer holds, until their files are read again
    files: list[str]  # input files the next pass reads again (when they are still there)
    rebuilt: bool = False  # no usable manifest: the next pass reads every input file again

    def summary(self) -> list[str]:
        if not self.batches:
            return ["nothing was set aside"]
        lines = [
            f"set aside {len(self.batches)} batch(es) ({', '.join(self.batches)}) to {self.folder}"
        ]
        if self.rebuilt:
            lines.append("the next `beryl ingest` or `beryl run` reads the input folder again")
        else:
            lines.append(
                f"the dataset holds {self.rows} row(s) fewer; the next `beryl ingest` or "
                f"`beryl run` reads {len(self.files)} file(s) again if they are still in the "
                f"input folder: {', '.join(self.files) or 'none'}"
            )
        return lines


def set_aside_batch(workspace: Workspace | Settings, batch_id: str) -> SetAside:
    """Set one batch aside (see the module docstring); call under the workspace lock."""
    return set_aside_batches(workspace, [batch_id])


def set_aside_batches(workspace: Workspace | Settings, batch_ids: list[str] | None) -> SetAside:
    """Set these batches aside (``None``: every batch); call under the workspace lock.

    No repair may run first: it refuses the very batches this sets aside.
    """
    workspace = Workspace.of(workspace)
    dataset = workspace.dataset
    aside = Aside(dataset.folder)
    try:
        return _set_aside(dataset, batch_ids, workspace.settings.write_csv_snapshot, aside)
    except OSError as exc:
        raise os_error(exc) from exc


def _set_aside(
    dataset: Dataset, batch_ids: list[str] | None, write_snapshot: bool, aside: Aside
) -> SetAside:
    remove_stale_temporaries(dataset.batch_folder)
    problem = dataset.problem
    if problem is not None and not problem.rebuild:
        problem.raise_it()
    if problem is not None:
        try:
            rebuild(dataset, aside)
        except StateError:  # batches without records and no manifest: move them as they are
            return _set_aside_unrecorded(dataset, batch_ids, aside)
    manifest = dataset.manifest
    named = [b.id for b in manifest.batches]
    chosen = named if batch_ids is None else list(dict.fromkeys(batch_ids))
    unknown = [i for i in chosen if i not in named and not dataset.batch_files(i)]
    if unknown:
        raise DataError(
            f"{dataset.batch_folder} holds no batch {unknown[0]}",
            hint="a batch id is the name of its files (batches/<id>.parquet), as the message "
            "that asked to set it aside shows",
        )
    removed = [b for b in manifest.batches if b.id in chosen]
    for batch_id in chosen:
        move_batch(dataset, batch_id, aside, "batch")
    originals = [r for r in manifest.files if r.batch in set(chosen)]
    if removed and dataset.snapshot_path.exists():  # the rows of the batches, as CSV
        aside.move(dataset.snapshot_path)
    files, again = _mark_set_aside(manifest.files, set(chosen), aside.shown(aside.folder))
    aside.keep(
        "set-aside.json",
        json.dumps(
            {
                "batches": [b.to_dict() for b in removed],
                "files": [r.to_dict() for r in originals],
            },
            indent=2,
        ).encode("utf-8"),
    )
    left = Manifest(
        schema=manifest.schema,
        batches=[b for b in manifest.batches if b.id not in set(chosen)],
        files=files,
        classes=list(manifest.classes),
        row_hash=manifest.row_hash,
    )
    dataset.publish(left, manifest)
    result = SetAside(chosen, aside.folder, sum(b.rows for b in removed), again)
    refresh_derived(dataset, write_snapshot, aside)  # a second damaged batch is named here
    return result


def _set_aside_unrecorded(dataset: Dataset, batch_ids: list[str] | None, aside: Aside) -> SetAside:
    """Without a manifest and with batches an older Beryl made: move the chosen batches."""
    on_disk = sorted(dataset.batch_ids_on_disk())
    chosen = on_disk if batch_ids is None else list(dict.fromkeys(batch_ids))
    unknown = [i for i in chosen if i not in on_disk]
    if unknown:
        raise DataError(f"{dataset.batch_folder} holds no batch {unknown[0]}")
    for batch_id in chosen:
        move_batch(dataset, batch_id, aside, "batch")
    with contextlib.suppress(StateError):  # others without records remain: repair names them
        rebuild(dataset, aside)
    return SetAside(chosen, aside.folder, 0, [], rebuilt=True)


def _mark_set_aside(
    records: list[FileRecord], batches: set[str], where: str
) -> tuple[list[FileRecord], list[str]]:
    """The file records with those of the set-aside batches marked as not ingested (and renamed
    copies of their content), and the names of the files to read again.

    A marked record keeps its name, size and time but no content hash the scan could match
    (``set-aside:<sha256>``), so the file is new to the next pass.
    """
    marked: set[str] = set()
    names = []
    out = []
    for record in records:
        if record.status == "ingested" and record.batch in batches:
            marked.add(record.sha256)
            names.append(record.name)
            record = _marked(record, f"its batch {record.batch} was set aside ({where})")
        out.append(record)
    gone = marked - {r.sha256 for r in out if r.status == "ingested"}
    for index, record in enumerate(out):
        if record.status == "duplicate-file" and record.sha256 in gone:
            out[index] = _marked(record, "the file it copies was set aside with its batch")
            names.append(record.name)
    return out, list(dict.fromkeys(names))


def _marked(record: FileRecord, why: str) -> FileRecord:
    # no recorded identity either (time, inode...): the scan must read the file, not skip it
    return dataclasses.replace(
        record,
        status=SET_ASIDE,
        sha256=f"{SET_ASIDE}:{record.sha256}",
        batch=None,
        reason=f"{why}; read again while it is in the input folder",
        mtime_ns=None,
        ctime_ns=None,
        dev=None,
        ino=None,
    )
