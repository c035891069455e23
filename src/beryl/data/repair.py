"""Repairing the dataset without losing a row.

``Dataset.repair`` (at the start of every command that changes the workspace, under its lock):

1. removes temporary files of atomic writes that never finished (they hold nothing published);
2. rebuilds a missing or damaged ``dataset.json`` from the batch records
   (``batches/<id>.batch.json``): every batch with a record, in order, with the file records,
   schema and classes the records carry; batch files newer than every record (an ingestion
   killed before its record) are moved to ``.recovered/``. Batches without a record older than
   one with a record (made by an older Beryl) cannot be accounted for: refused, naming the
   folder and ``beryl dataset set-aside``;
3. moves what no manifest names (an ingestion killed before its manifest, foreign files) from
   ``batches/`` to ``.recovered/``;
4. checks each named batch by the sizes its manifest recorded (one ``stat`` per file): a damaged
   hash index is rebuilt from its batch, a missing or damaged batch record is written again
   from the manifest (so a dataset an older Beryl made can be rebuilt next time), and a damaged
   batch is refused, naming it and ``beryl dataset set-aside ID``;
5. rebuilds the derived files (``ingestedfiles.txt``, ``finaldata.csv``), keeping rows it cuts
   from the snapshot in ``.recovered/``.

What a repair refuses (a damaged batch, batches without records) is set aside with
``beryl.data.setaside`` (``beryl dataset set-aside``).
"""

from __future__ import annotations

from pathlib import Path

from beryl._io import atomic_write_text, remove_stale_temporaries
from beryl.data import rowhash, snapshot
from beryl.data.dataset import (
    INGESTED_FILES_NAME,
    MANIFEST_NAME,
    SNAPSHOT_NAME,
    DamagedFile,
    Dataset,
    damaged_batch,
)
from beryl.data.manifest import BatchInfo, BatchRecord, Manifest
from beryl.errors import StateError, describe_os_error
from beryl.recovery import RECOVERY_FOLDER, Aside


def repair(dataset: Dataset, write_snapshot: bool) -> list[str]:
    """``Dataset.repair`` (see the module docstring)."""
    aside = Aside(dataset.folder)
    try:
        return _repair(dataset, write_snapshot, aside)
    except OSError as exc:
        raise os_error(exc) from exc


def _repair(dataset: Dataset, write_snapshot: bool, aside: Aside) -> list[str]:
    repaired = []
    for folder in (dataset.folder, dataset.batch_folder):
        if remove_stale_temporaries(folder):
            repaired.append(f"removed temporary files in {folder}")
    if dataset.problem is not None:
        if not dataset.problem.rebuild:
            dataset.problem.raise_it()
        repaired += rebuild(dataset, aside)
    if not dataset.manifest_path.exists():  # nothing was published yet
        if dataset.snapshot_path.exists():
            moved = aside.move(dataset.snapshot_path)
            repaired.append(
                f"moved {SNAPSHOT_NAME} of an ingestion that never finished to {aside.shown(moved)}"
            )
        return repaired
    repaired += _move_unnamed(dataset, aside)
    repaired += _check_batches(dataset, aside)
    repaired += refresh_derived(dataset, write_snapshot, aside)
    return repaired


def rebuild(dataset: Dataset, aside: Aside) -> list[str]:
    """Publish a manifest made from the batch records (the manifest is missing or damaged)."""
    records: dict[str, BatchRecord] = {}
    unrecorded: set[str] = set()
    for batch_id in dataset.batch_ids_on_disk():
        try:
            records[batch_id] = dataset.read_record(batch_id)
        except DamagedFile:
            unrecorded.add(batch_id)
    newest = max(records) if records else None
    older = sorted(i for i in unrecorded if newest is not None and i < newest)
    published = dataset.manifest_path.exists() or (dataset.folder / INGESTED_FILES_NAME).exists()
    if older or (unrecorded and not records and published):
        raise _unaccounted(dataset, older or sorted(unrecorded), every=not records)
    repaired = []
    if dataset.manifest_path.exists():
        moved = aside.move(dataset.manifest_path)
        repaired.append(f"moved the damaged {MANIFEST_NAME} to {aside.shown(moved)}")
    for batch_id in sorted(unrecorded):  # newer than every record: an unfinished ingestion
        repaired.append(move_batch(dataset, batch_id, aside, "unfinished batch"))
    if not records:
        dataset.adopt(Manifest())
        return repaired
    ordered = [records[i] for i in sorted(records)]
    last = ordered[-1]
    manifest = Manifest(
        schema=last.schema,
        batches=[r.batch for r in ordered],
        files=[f for r in ordered for f in r.files],
        classes=list(last.classes),
        row_hash=last.row_hash,  # the last record follows every change of the manifest's
    )
    dataset.publish(manifest, manifest)  # every record is on disk already
    rows = manifest.rows
    repaired.append(
        f"rebuilt {MANIFEST_NAME} from the records of {len(ordered)} batch(es) ({rows} rows, "
        f"{len(manifest.files)} file records)"
    )
    return repaired


def _unaccounted(dataset: Dataset, ids: list[str], *, every: bool) -> StateError:
    state = "damaged" if dataset.manifest_path.exists() else "missing"
    chosen = "--all" if every else " ".join(ids)
    return StateError(
        f"dataset record {dataset.manifest_path} is {state} and {len(ids)} batch(es) in "
        f"{dataset.batch_folder} carry no record of their own to rebuild it from (written by an "
        "older Beryl)",
        hint=f"restore {MANIFEST_NAME} from a backup; or set those batches aside with "
        f"`beryl dataset set-aside {chosen}`, and the next `beryl ingest` reads the input "
        f"folder again (the batches are kept in {dataset.folder / RECOVERY_FOLDER})",
    )


def move_batch(dataset: Dataset, batch_id: str, aside: Aside, what: str) -> str:
    """Move every file of a batch to the recovery folder; says what moved where."""
    moved = [aside.move(p) for p in dataset.batch_files(batch_id)]
    names = ", ".join(p.name for p in moved) or "no files"
    where = aside.shown(moved[0].parent) if moved else "nowhere"
    return f"moved {what} {batch_id} ({names}) to {where}"


def _move_unnamed(dataset: Dataset, aside: Aside) -> list[str]:
    """Move files of ``batches/`` that no batch of the manifest names to ``.recovered/``."""
    named = {b.id for b in dataset.manifest.batches}
    own = {
        name
        for batch_id in named
        for name in (
            dataset.batch_path(batch_id).name,
            dataset.hashes_path(batch_id).name,
            dataset.record_path(batch_id).name,
        )
    }
    found: dict[str, list[Path]] = {}
    for path in dataset.files_on_disk():
        if path.name not in own:
            found.setdefault(path.name.split(".", 1)[0], []).append(path)
    repaired = []
    for batch_id, paths in found.items():
        moved = [aside.move(p) for p in paths]
        what = "files no batch owns, of" if batch_id in named else "unfinished batch"
        names = ", ".join(p.name for p in moved)
        repaired.append(
            f"moved {what} {batch_id or '(no id)'} ({names}) to {aside.shown(moved[0].parent)}"
        )
    return repaired


def _batch_problem(dataset: Dataset, batch: BatchInfo) -> str | None:
    """What is wrong with a batch's Parquet file, by its recorded size (or, when none is
    recorded yet, its footer, and then its size is recorded)."""
    path = dataset.batch_path(batch.id)
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return "the file is missing"
    recorded = batch.sizes.get("parquet")
    if recorded is not None:
        return None if size == recorded else f"{size} bytes where {recorded} were written"
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        rows = pq.read_metadata(path).num_rows
    except PermissionError:
        raise
    except (OSError, pa.ArrowException) as exc:
        return f"not a readable Parquet file: {exc}"
    if rows != batch.rows:
        return f"it holds {rows} rows where the manifest says {batch.rows}"
    batch.sizes["parquet"] = size
    return None


def _check_batches(dataset: Dataset, aside: Aside) -> list[str]:
    """Check every named batch's files; repair indexes and records; refuse damaged batches."""
    manifest = dataset.manifest
    before = [dict(b.sizes) for b in manifest.batches]
    damaged = [(b, why) for b in manifest.batches if (why := _batch_problem(dataset, b))]
    if damaged:
        if [b.sizes for b in manifest.batches] != before:
            dataset.publish(manifest, manifest)  # the sizes learnt so far
        first, why = damaged[0]
        others = tuple(b.id for b, _ in damaged[1:])
        raise damaged_batch(dataset.batch_path(first.id), first.id, why, others)
    repaired = []
    broken: list[tuple[BatchInfo, str]] = []
    for batch in manifest.batches:
        try:
            dataset.load_hashes(batch)
        except DamagedFile as damage:
            broken.append((batch, str(damage)))
    if broken and manifest.row_hash != rowhash.VERSION:
        dataset.rehash(manifest.batches)  # one version for all: hash everything again
        manifest.row_hash = rowhash.VERSION
    elif broken:
        dataset.rehash([b for b, _ in broken])
    repaired += [
        f"rebuilt the hash index {dataset.hashes_path(b.id).name} from its batch ({why})"
        for b, why in broken
    ]
    written = 0
    changed = bool(broken)
    for batch in manifest.batches:
        path = dataset.record_path(batch.id)
        recorded = batch.sizes.get("record")
        size = path.stat().st_size if path.exists() else None
        if size is not None and recorded is None:
            try:  # a record the manifest does not know the size of yet
                dataset.read_record(batch.id)
                batch.sizes["record"] = size
                changed = True
                continue
            except DamagedFile:
                pass
        elif size is not None and size == recorded:
            continue
        if size is not None:
            moved = aside.move(path)
            repaired.append(f"moved the damaged batch record {path.name} to {aside.shown(moved)}")
        batch.sizes.pop("record", None)
        written += 1
        changed = True
    if written:
        repaired.append(
            f"wrote the record of {written} batch(es) ({dataset.batch_folder.name}/<id>"
            f".batch.json): {MANIFEST_NAME} can be rebuilt from them if it is lost"
        )
    if changed or [b.sizes for b in manifest.batches] != before:
        dataset.publish(manifest, manifest)
    return repaired


def refresh_derived(dataset: Dataset, write_snapshot: bool, aside: Aside) -> list[str]:
    """Make ``ingestedfiles.txt`` and ``finaldata.csv`` match the manifest again."""
    manifest = dataset.manifest
    repaired = []
    names = "".join(n + "\n" for n in dataset.ingested_names()).encode("utf-8")
    listing = dataset.folder / INGESTED_FILES_NAME
    current = listing.read_bytes() if listing.exists() else None
    if current != names:
        atomic_write_text(listing, names.decode("utf-8"))
        repaired.append(f"rewrote {INGESTED_FILES_NAME}")
    path = dataset.snapshot_path
    if write_snapshot and manifest.batches:
        tail = snapshot.cut(dataset, manifest)
        if tail:  # rows appended by an ingestion that never published its manifest
            kept = aside.keep(f"{SNAPSHOT_NAME}.cut", tail)
            repaired.append(
                f"cut {SNAPSHOT_NAME} back to the published dataset (the {len(tail)} bytes cut "
                f"off are in {aside.shown(kept)})"
            )
        elif not snapshot.matches(dataset, manifest):
            manifest.snapshot = snapshot.write(dataset, Manifest(), manifest)
            dataset.publish(manifest, manifest)
            repaired.append(f"rewrote {SNAPSHOT_NAME}")
    elif not manifest.batches and path.exists():
        moved = aside.move(path)
        repaired.append(
            f"moved {SNAPSHOT_NAME} of an ingestion that never finished to {aside.shown(moved)}"
        )
    return repaired


def os_error(exc: OSError) -> StateError:
    """An OS error met while repairing the dataset (or setting batches aside), in one line."""
    message, hint = describe_os_error(exc)
    return StateError(f"cannot repair the dataset: {message}", hint=hint)
