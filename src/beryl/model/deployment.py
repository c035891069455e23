"""Deployment: materialise ``prod_deployment_path`` from the production pointer, atomically.

``prod_deployment_path`` is a symbolic link to a complete, immutable folder under
``.<name>.d/``; switching production replaces the link in one ``rename``, so a reader sees the
old deployment or the new one, never a mix. The folder holds the original layout
(``trainedmodel.pkl``, ``ingestedfiles.txt``, ``latestscore.txt``) plus ``manifest.json``.

Nothing a user put there is deleted: a plain folder where the link belongs is renamed
``<name>.before-beryl-<time>``, and an old deployment folder holding files Beryl did not write
is moved to ``.<name>.d/.recovered/`` instead of being pruned.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from beryl._io import fsync_dir, read_json, sha256_file, utc_now
from beryl.config import Settings
from beryl.errors import IntegrityError, ModelNotFoundError, StateError, describe_os_error
from beryl.model.registry import LATEST_MODEL_FILE, LATEST_SCORE_FILE, Move
from beryl.recovery import Aside
from beryl.workspace import Workspace

MANIFEST_FILE = "manifest.json"
INGESTED_FILES = "ingestedfiles.txt"
DEPLOYED_FILES = frozenset({LATEST_MODEL_FILE, INGESTED_FILES, LATEST_SCORE_FILE, MANIFEST_FILE})
_KEEP = 3
_REWRITTEN = "the next `beryl run` (or `beryl deploy`) writes it again from the registry"


@dataclass(frozen=True)
class Deployment:
    """What production_deployment holds after a deploy."""

    version: str
    folder: Path
    move: Move | None


def _store(prod: Path) -> Path:
    return prod.parent / f".{prod.name}.d"


def materialise(workspace: Workspace | Settings) -> Path:
    """Write the production version's files to a fresh folder and switch the link to it."""
    workspace = Workspace.of(workspace)
    registry = workspace.registry
    version = registry.require_production()
    card = registry.card(version)
    if not registry.verify(version):
        raise IntegrityError(f"model files of {version} do not match their signature")
    prod = workspace.settings.prod_folder
    store = _store(prod)
    store.mkdir(parents=True, exist_ok=True)
    stamp = utc_now().replace(":", "").replace("-", "").replace(".", "")
    folder = store / f"{version}-{stamp}"
    staging = store / f".staging-{folder.name}"
    staging.mkdir()
    try:
        shutil.copyfile(registry.model_path(version), staging / LATEST_MODEL_FILE)
        names = [f["name"] for f in card.training.get("files", [])]
        unique = list(dict.fromkeys(names))
        _write(staging / INGESTED_FILES, "".join(n + "\n" for n in unique))
        f1 = card.f1
        _write(staging / LATEST_SCORE_FILE, f"{f1}\n" if f1 is not None else "")
        manifest: dict[str, Any] = {
            "version": version,
            "deployed_at": utc_now(),
            "model_sha256": card.model_sha256,
            "f1": f1,
            "metrics": {k: v for k, v in card.metrics.items() if k != "test_data"},
            "training": card.training,
        }
        _write(staging / MANIFEST_FILE, json.dumps(manifest, indent=2) + "\n")
        for item in staging.iterdir():
            with item.open("rb") as handle:
                os.fsync(handle.fileno())
        fsync_dir(staging)
        staging.rename(folder)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    _switch_link(prod, folder)
    _prune(store, keep=folder)
    return folder


def _write(path: Path, text: str) -> None:
    path.write_text(text, encoding="utf-8")


def _switch_link(prod: Path, folder: Path) -> None:
    if prod.exists() and not prod.is_symlink():
        # A plain folder from before Beryl managed it: keep it, never delete user files.
        aside = prod.with_name(f"{prod.name}.before-beryl-{utc_now().replace(':', '')}")
        prod.rename(aside)
    link_tmp = prod.with_name(f".{prod.name}.link-tmp-{os.getpid()}")
    link_tmp.unlink(missing_ok=True)
    link_tmp.symlink_to(os.path.relpath(folder, prod.parent))
    link_tmp.replace(prod)
    fsync_dir(prod.parent)


def _prune(store: Path, keep: Path) -> None:
    """Remove old deployments beyond the last few; one holding files Beryl did not write goes
    to ``.recovered/`` instead."""
    folders = sorted(
        (p for p in store.iterdir() if p.is_dir() and not p.name.startswith(".")),
        key=lambda p: p.stat().st_mtime,
    )
    aside = Aside(store)
    for old in folders[:-_KEEP]:
        if old == keep:
            continue
        if {p.name for p in old.iterdir()} <= DEPLOYED_FILES:
            shutil.rmtree(old, ignore_errors=True)  # Beryl's copies of registry files only
        else:
            aside.move(old)


def repair(workspace: Workspace | Settings) -> list[str]:
    """After a crash or damage: make prod_deployment_path match the production pointer again
    (a link to a complete folder whose model matches its manifest), moving aside, never
    deleting, what a user may have put there."""
    workspace = Workspace.of(workspace)
    try:
        return _repair(workspace)
    except OSError as exc:
        message, hint = describe_os_error(exc)
        prod = workspace.settings.prod_folder
        raise StateError(f"cannot repair {prod}: {message}", hint=hint) from exc


def _repair(workspace: Workspace) -> list[str]:
    repaired = []
    prod = workspace.settings.prod_folder
    store = _store(prod)
    if store.is_dir():
        aside = Aside(store)
        for staging in sorted(store.glob(".staging-*")):
            moved = aside.move(staging)
            repaired.append(f"moved unfinished deployment {staging.name} to {aside.shown(moved)}")
    for link_tmp in prod.parent.glob(f".{prod.name}.link-tmp-*"):
        link_tmp.unlink(missing_ok=True)  # a link being made: it holds nothing
    try:
        version = workspace.registry.production()
    except IntegrityError:
        return repaired  # the pointer itself is damaged: whatever needs production says so
    if version is None:
        return repaired
    problem = _deployment_problem(workspace.settings, version)
    if problem is not None:
        materialise(workspace)
        repaired.append(f"materialised {version} in {prod} ({problem})")
    return repaired


def _deployment_problem(settings: Settings, version: str) -> str | None:
    """What is wrong with the deployment of ``version``, or None."""
    prod = settings.prod_folder
    if not prod.is_symlink():
        return "it was not a link" if prod.exists() else "it was missing"
    if not prod.exists():
        return "the link pointed nowhere"
    try:
        deployed = read_manifest(settings)["version"]
        intact = check_deployment(settings)
    except (ModelNotFoundError, StateError) as exc:
        return exc.message
    if deployed != version:
        return f"it held {deployed}"
    return None if intact else "its model file did not match its manifest"


def read_manifest(workspace: Workspace | Settings) -> dict[str, Any]:
    """The manifest of the current deployment (``StateError`` when it is damaged)."""
    settings = Workspace.of(workspace).settings
    path = settings.prod_folder / MANIFEST_FILE
    try:
        data = read_json(path)
    except FileNotFoundError as exc:
        raise ModelNotFoundError(
            f"nothing is deployed at {settings.prod_folder}", hint="run `beryl deploy`"
        ) from exc
    except ValueError as exc:  # not JSON, or not UTF-8
        raise StateError(
            f"deployment manifest {path} is unreadable: {exc}", hint=_REWRITTEN
        ) from exc
    except OSError as exc:
        message, hint = describe_os_error(exc, path)
        raise StateError(
            f"cannot read the deployment manifest {path}: {message}", hint=hint
        ) from exc
    if not isinstance(data, dict) or not all(
        isinstance(data.get(key), str) for key in ("version", "model_sha256")
    ):
        raise StateError(
            f"deployment manifest {path} names no version and model sha256", hint=_REWRITTEN
        )
    return data


def check_deployment(workspace: Workspace | Settings) -> bool:
    """True when the deployed model file matches its manifest."""
    settings = Workspace.of(workspace).settings
    manifest = read_manifest(settings)
    model = settings.prod_folder / LATEST_MODEL_FILE
    try:
        return model.is_file() and sha256_file(model) == manifest["model_sha256"]
    except OSError:
        return False


def deploy(
    workspace: Workspace | Settings,
    version: str | None = None,
    reason: str = "deployed by hand",
    *,
    run_id: int | None = None,
) -> Deployment:
    """Promote ``version`` (default: the latest trained) and materialise the deployment.

    ``run_id``: the pass (or the command's run) that decided it, logged with the move.
    """
    from beryl.model.scoring import score

    workspace = Workspace.of(workspace)
    registry = workspace.registry
    version = version or registry.latest()
    if registry.card(version).f1 is None:
        score(workspace, version)
    move = None
    try:
        current = registry.production()
    except IntegrityError:  # a damaged pointer: the promotion below replaces it
        current = None
    if current != version:
        move = registry.promote(version, reason, run_id=run_id)
    folder = materialise(workspace)
    return Deployment(version=version, folder=folder, move=move)


def rollback(
    workspace: Workspace | Settings,
    reason: str = "rolled back by hand",
    *,
    run_id: int | None = None,
) -> Deployment:
    """Move production back to the version it replaced and materialise it."""
    workspace = Workspace.of(workspace)
    move = workspace.registry.rollback(reason, run_id=run_id)
    folder = materialise(workspace)
    return Deployment(version=move.to_version, folder=folder, move=move)
