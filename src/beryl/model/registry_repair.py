"""Repairing a models folder after a crash or damage, and re-signing its pointer and log.

``repair`` (``Registry.repair``, under the workspace lock) removes the temporary files of killed
writers, moves unfinished versions to ``.recovered/`` (on object storage: a version whose card
was never written, whose objects are copied under ``.recovered/<time>/`` and then removed, so
that its id is free again), takes unreadable lines out of the promotion
log (kept there too), and finishes a logged move or restores a damaged pointer from the log.
``sign_version`` makes a signed data-only model from an older Beryl's pickle, and
``sign_records`` re-signs the pointer and every log line with the registry's key (after
``beryl models sign``). Nothing else is deleted.
"""

from __future__ import annotations

import json
import pickle
from typing import TYPE_CHECKING, Literal

from beryl._io import remove_stale_temporaries, sha256_bytes, utc_now
from beryl.data.schema import Schema
from beryl.errors import IntegrityError, StateError, describe_os_error
from beryl.model.pointer import LOG_FILE, POINTER_FILE, log_entry
from beryl.recovery import Aside

if TYPE_CHECKING:
    from beryl.model.registry import Registry


def repair(registry: Registry) -> list[str]:
    """What ``Registry.repair`` does; returns what was repaired."""
    aside = Aside(registry.folder)
    try:
        return _repair(registry, aside)
    except OSError as exc:
        message, hint = describe_os_error(exc)
        raise StateError(f"cannot repair the models folder: {message}", hint=hint) from exc


def _repair(registry: Registry, aside: Aside) -> list[str]:
    repaired = []
    if remove_stale_temporaries(registry.folder):
        repaired.append(f"removed temporary files in {registry.folder}")
    if registry.cache is not None and remove_stale_temporaries(registry.cache.folder):
        repaired.append(f"removed temporary files in {registry.cache.folder}")
    versions = registry.versions_folder
    if versions.is_dir():
        for staging in sorted(versions.glob(".staging-*")):
            moved = aside.move(staging)
            repaired.append(f"moved unfinished version {staging.name} to {aside.shown(moved)}")
        for version in registry.version_dirs():
            if remove_stale_temporaries(versions / version):
                repaired.append(f"removed temporary files in {version}")
    if not registry.local:
        repaired += _unfinished_objects(registry)
    repaired += _repair_log(registry, aside)
    repaired += _repair_pointer(registry, aside)
    return repaired


def _unfinished_objects(registry: Registry) -> list[str]:
    """On object storage: set aside each version whose writer was killed before its card (the
    last of its three create-only writes; ``beryl.model.registry_objects``)."""
    from datetime import UTC, datetime

    from beryl.recovery import RECOVERY_FOLDER

    storage, repaired = registry.storage, []
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    by_version: dict[str, list[str]] = {}
    for key in storage.keys("versions/"):
        parts = key.split("/")
        if len(parts) == 3:
            by_version.setdefault(parts[1], []).append(key)
    for version, keys in sorted(by_version.items()):
        if any(k.endswith("/card.json") for k in keys):
            continue
        for key in keys:
            data = storage.read(key)
            if data is not None:
                storage.create(f"{RECOVERY_FOLDER}/{stamp}/{key}", data)
            storage.delete(key)
        shown = registry.where(f"{RECOVERY_FOLDER}/{stamp}/versions/{version}")
        repaired.append(f"moved unfinished version {version} (no model card) to {shown}")
    return repaired


def _repair_log(registry: Registry, aside: Aside) -> list[str]:
    """Move lines that are not JSON objects (torn, garbage, not UTF-8) out of the log, into
    the recovery folder; count the lines that are objects but no usable move."""
    data = registry.storage.read(LOG_FILE)
    if data is None:
        return []
    kept: list[bytes] = []
    cut: list[bytes] = []
    for line in data.split(b"\n"):
        if line.strip():
            (kept if log_entry(line) is not None else cut).append(line)
    repaired = []
    kept_log = b"".join(line + b"\n" for line in kept)
    # Kept first, then a swap from what was read: a line another process appended meanwhile
    # is never lost (the next repair takes the unreadable lines out then).
    saved = aside.keep(LOG_FILE, b"".join(line + b"\n" for line in cut)) if cut else None
    if saved is not None and registry.storage.swap(LOG_FILE, kept_log, expected=data):
        repaired.append(
            f"moved {len(cut)} unreadable line(s) of {LOG_FILE} to {aside.shown(saved)}"
        )
    skipped = registry.pointer.unusable()
    if skipped:
        repaired.append(
            f"skipped {skipped} line(s) of {LOG_FILE} that are not signed with this key or "
            "name a version that is not here (they move nothing)"
        )
    return repaired


def _repair_pointer(registry: Registry, aside: Aside) -> list[str]:
    """Finish a logged move the pointer missed, or restore a damaged pointer from the log."""
    production = registry.pointer
    moves = production.moves()
    raw = registry.storage.read(POINTER_FILE)
    try:
        pointer, damage = production.parse(raw), None
    except IntegrityError as exc:
        pointer, damage = None, exc
    if damage is None:
        last = moves[-1] if moves else None
        if last is None:
            return []
        if pointer is not None:
            # A move logged after the pointer was written, from the version the pointer still
            # names (killed in between). A log that lost lines is behind the pointer and is
            # never followed back; a move that lost to another one is not from its version.
            ahead = pointer.since is None or last.time > pointer.since
            if not ahead or last.to_version == pointer.version:
                return []
            if last.from_version != pointer.version:
                return []
        if not registry.verify(last.to_version):
            return []
        if not production.swap(last.to_version, last.time, expected=raw):
            return []  # moved meanwhile: that move is the newer one
        return [f"finished the logged {last.action} to {last.to_version}"]
    restore = production.restorable(moves)
    if restore is None:  # the user chooses: ``production`` refuses, naming both files
        return []
    kept = aside.keep(POINTER_FILE, raw or b"")
    if not production.swap(restore.to_version, restore.time, expected=raw):
        return []
    return [
        f"restored {POINTER_FILE} from {LOG_FILE}: {restore.to_version} ({damage.message}; "
        f"the damaged file is in {aside.shown(kept)})"
    ]


def sign_version(registry: Registry, version: str) -> Literal["signed", "already signed"]:
    """What ``Registry.sign`` does (it unpickles: only for a models folder the user trusts)."""
    card = registry.card(version)
    model_key, pickle_key = f"versions/{version}/model.json", f"versions/{version}/model.pkl"
    if registry.storage.exists(model_key) and registry.verify(version):
        return "already signed"
    pickled = registry.where(pickle_key)
    payload = registry.storage.read(pickle_key)
    if payload is None:
        raise IntegrityError(f"cannot read {pickled}: it is missing")
    if sha256_bytes(payload) != card.model_sha256:
        raise IntegrityError(
            f"model file {pickled} does not match its model card; refusing to sign it",
            hint="the file was changed after training; retrain",
        )
    pipeline = pickle.loads(payload)  # the user vouched for this folder
    from beryl.model.linear import LinearModel, NotLinearError

    try:
        model = LinearModel.from_pipeline(pipeline, Schema.from_dict(card.schema))
    except NotLinearError as exc:
        raise IntegrityError(f"{pickled} is not a model Beryl can serve: {exc}") from exc
    registry.write_json(model_key, registry.signed_model(card, model))
    return "signed"


def sign_records(registry: Registry) -> list[str]:
    """Re-sign the pointer and every log line with the registry's key."""
    done = []
    raw_log = registry.storage.read(LOG_FILE)
    entries = registry.pointer.entries()
    if entries:
        lines = [json.dumps(registry.keyring.sign(entry)) for entry in entries]
        signed = "".join(line + "\n" for line in lines).encode()
        if not registry.storage.swap(LOG_FILE, signed, expected=raw_log):
            raise IntegrityError(f"{registry.where(LOG_FILE)} changed while it was being signed")
        done.append(f"signed {len(lines)} line(s) of {LOG_FILE}")
    raw = registry.storage.read(POINTER_FILE)
    if raw is not None:
        try:
            pointer = json.loads(raw.decode("utf-8"))
            version = str(pointer["version"])
            since = str(pointer.get("since", utc_now()))
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise IntegrityError(f"{registry.where(POINTER_FILE)} is unreadable: {exc}") from exc
        if not registry.pointer.swap(version, since, expected=raw):
            raise IntegrityError(
                f"{registry.where(POINTER_FILE)} changed while it was being signed"
            )
        done.append(f"signed {POINTER_FILE} ({version})")
    return done
