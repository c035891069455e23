"""Deployment: materialise ``prod_deployment_path`` from the production pointer, atomically.

``prod_deployment_path`` is a symbolic link to a complete, immutable folder under
``.<name>.d/``; switching production replaces the link in one ``rename``, so a reader sees the
old deployment or the new one, never a mix. The folder holds the original layout
(``trainedmodel.pkl``, ``ingestedfiles.txt``, ``latestscore.txt``) plus ``manifest.json``.
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
from beryl.errors import IntegrityError, ModelNotFoundError
from beryl.registry import LATEST_MODEL_FILE, LATEST_SCORE_FILE, Move, Registry

MANIFEST_FILE = "manifest.json"
INGESTED_FILES = "ingestedfiles.txt"
_KEEP = 3


@dataclass(frozen=True)
class Deployment:
    """What production_deployment holds after a deploy."""

    version: str
    folder: Path
    move: Move | None


def _store(prod: Path) -> Path:
    return prod.parent / f".{prod.name}.d"


def materialise(settings: Settings, registry: Registry) -> Path:
    """Write the production version's files to a fresh folder and switch the link to it."""
    version = registry.require_production()
    card = registry.card(version)
    if not registry.verify(version):
        raise IntegrityError(f"model files of {version} do not match their signature")
    prod = settings.prod_folder
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
    folders = sorted(
        (p for p in store.iterdir() if p.is_dir() and not p.name.startswith(".")),
        key=lambda p: p.stat().st_mtime,
    )
    for old in folders[:-_KEEP]:
        if old != keep:
            shutil.rmtree(old, ignore_errors=True)


def repair(settings: Settings, registry: Registry) -> list[str]:
    """After a crash: make prod_deployment_path match the production pointer again."""
    repaired = []
    prod = settings.prod_folder
    store = _store(prod)
    if store.is_dir():
        for staging in store.glob(".staging-*"):
            shutil.rmtree(staging, ignore_errors=True)
            repaired.append(f"removed unfinished deployment {staging.name}")
    for link_tmp in prod.parent.glob(f".{prod.name}.link-tmp-*"):
        link_tmp.unlink(missing_ok=True)
    version = registry.production()
    if version is None:
        return repaired
    try:
        deployed = read_manifest(settings).get("version")
        intact = check_deployment(settings)
    except (ModelNotFoundError, ValueError, OSError):
        deployed, intact = None, False
    if deployed != version or not intact:
        materialise(settings, registry)
        repaired.append(f"materialised {version} in {prod}")
    return repaired


def read_manifest(settings: Settings) -> dict[str, Any]:
    """The manifest of the current deployment."""
    path = settings.prod_folder / MANIFEST_FILE
    try:
        return dict(read_json(path))
    except FileNotFoundError as exc:
        raise ModelNotFoundError(
            f"nothing is deployed at {settings.prod_folder}", hint="run `beryl deploy`"
        ) from exc


def check_deployment(settings: Settings) -> bool:
    """True when the deployed model file matches its manifest."""
    manifest = read_manifest(settings)
    model = settings.prod_folder / LATEST_MODEL_FILE
    return model.exists() and sha256_file(model) == manifest["model_sha256"]


def deploy(
    settings: Settings, version: str | None = None, reason: str = "deployed by hand"
) -> Deployment:
    """Promote ``version`` (default: the latest trained) and materialise the deployment."""
    registry = Registry(settings.model_folder)
    version = version or registry.latest()
    if registry.card(version).f1 is None:
        from beryl.scoring import score

        score(settings, version)
    move = None
    if registry.production() != version:
        move = registry.promote(version, reason)
    folder = materialise(settings, registry)
    return Deployment(version=version, folder=folder, move=move)


def rollback(settings: Settings, reason: str = "rolled back by hand") -> Deployment:
    """Move production back to the version it replaced and materialise it."""
    registry = Registry(settings.model_folder)
    move = registry.rollback(reason)
    folder = materialise(settings, registry)
    return Deployment(version=move.to_version, folder=folder, move=move)
