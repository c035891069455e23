"""Tests for beryl.model.deployment: materialising production_deployment atomically from the
pointer."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import threading
from pathlib import Path

import pandas as pd
import pytest

from beryl.config import Settings
from beryl.data.ingestion import ingest
from beryl.errors import IntegrityError, ModelNotFoundError
from beryl.model.deployment import check_deployment, deploy, read_manifest, rollback
from beryl.model.registry import Registry
from beryl.model.scoring import score
from beryl.model.training import train

DEPLOYED_FILES = {"trainedmodel.pkl", "ingestedfiles.txt", "latestscore.txt", "manifest.json"}


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def snapshot(folder: Path) -> dict[str, str]:
    return {p.name: sha256(p) for p in folder.iterdir() if p.is_file()}


@pytest.fixture
def trained(workspace: Settings) -> Settings:
    ingest(workspace)
    train(workspace)
    return workspace


def test_deploy_materialises_the_original_layout(trained: Settings) -> None:
    result = deploy(trained)
    prod = trained.prod_folder
    assert result.version == "v0001"
    assert result.move is not None and result.move.to_version == "v0001"
    assert {p.name for p in prod.iterdir()} == DEPLOYED_FILES

    registry = Registry(trained.model_folder)
    card = registry.card("v0001")
    assert card.f1 is not None  # deploy scores an unscored version first
    manifest = read_manifest(trained)
    assert manifest["version"] == "v0001"
    assert manifest["model_sha256"] == card.model_sha256 == sha256(prod / "trainedmodel.pkl")
    assert manifest["f1"] == card.f1
    assert check_deployment(trained) is True

    assert float((prod / "latestscore.txt").read_text().strip()) == card.f1
    source_names = sorted(p.name for p in trained.input_folder.glob("*.csv"))
    assert (prod / "ingestedfiles.txt").read_text().splitlines() == source_names
    assert (prod / "trainedmodel.pkl").read_bytes() == registry.model_path("v0001").read_bytes()
    with (prod / "trainedmodel.pkl").open("rb") as handle:
        model = pickle.load(handle)
    test = pd.read_csv(trained.test_data / "testdata.csv")
    assert len(model.predict(test)) == len(test)


def test_check_deployment_detects_a_changed_model_file(trained: Settings) -> None:
    deploy(trained)
    deployed = trained.prod_folder / "trainedmodel.pkl"
    deployed.write_bytes(deployed.read_bytes() + b"\0")
    assert check_deployment(trained) is False
    deployed.unlink()
    assert check_deployment(trained) is False


def test_nothing_deployed_is_model_not_found(trained: Settings) -> None:
    with pytest.raises(ModelNotFoundError, match="nothing is deployed"):
        read_manifest(trained)


def test_second_deploy_switches_the_link_to_a_complete_folder(trained: Settings) -> None:
    first = deploy(trained)
    prod = trained.prod_folder
    assert prod.is_symlink()
    assert prod.resolve() == first.folder.resolve()
    old_files = snapshot(first.folder)

    train(trained)
    second = deploy(trained)
    assert second.version == "v0002"
    assert second.move is not None and second.move.from_version == "v0001"
    assert prod.is_symlink()
    assert not os.path.isabs(os.readlink(prod))  # relative: the workspace can move
    assert prod.resolve() == second.folder.resolve()
    assert second.folder != first.folder
    assert read_manifest(trained)["version"] == "v0002"
    assert check_deployment(trained)

    # the old deployment is untouched and complete until pruned
    assert snapshot(first.folder) == old_files
    assert set(old_files) == DEPLOYED_FILES
    assert json.loads((first.folder / "manifest.json").read_text())["version"] == "v0001"
    leftovers = [p.name for p in prod.parent.iterdir() if ".link-tmp" in p.name]
    assert leftovers == []
    staging = [p.name for p in first.folder.parent.iterdir() if p.name.startswith(".staging")]
    assert staging == []


def test_readers_never_see_a_missing_or_mixed_deployment(trained: Settings) -> None:
    for _ in range(3):
        train(trained)
    registry = Registry(trained.model_folder)
    for version in registry.ids():
        score(trained, version)
    deploy(trained, "v0001")
    prod = trained.prod_folder
    problems: list[str] = []
    consistent = 0
    stop = threading.Event()

    def reader() -> None:
        nonlocal consistent
        while not stop.is_set():
            if not prod.exists():
                problems.append("production_deployment is missing")
                continue
            folder = prod.resolve()  # one folder per read, as a careful reader does
            try:
                manifest = json.loads((folder / "manifest.json").read_text())
                model_sha = sha256(folder / "trainedmodel.pkl")
            except FileNotFoundError:
                continue  # pruned after resolving: the reader must resolve again
            if manifest["model_sha256"] != model_sha:
                problems.append(f"{folder.name}: manifest and model differ")
            consistent += 1

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for index in range(24):
            deploy(trained, registry.ids()[index % 4])
    finally:
        stop.set()
        thread.join(timeout=30)
    assert problems == []
    assert consistent > 0
    assert read_manifest(trained)["version"] == "v0004"
    assert check_deployment(trained)


def test_old_deployments_are_pruned_but_the_live_one_is_kept(trained: Settings) -> None:
    folders = []
    for _ in range(5):
        train(trained)
        folders.append(deploy(trained).folder)
    store = folders[-1].parent
    kept = sorted(p for p in store.iterdir() if not p.name.startswith("."))
    assert len(kept) <= 3
    assert folders[-1] in kept
    assert trained.prod_folder.resolve() == folders[-1].resolve()
    for folder in kept:
        assert {p.name for p in folder.iterdir()} == DEPLOYED_FILES


def test_deploying_the_production_version_again_does_not_log_a_move(trained: Settings) -> None:
    deploy(trained)
    again = deploy(trained, "v0001")
    assert again.move is None
    assert len(Registry(trained.model_folder).moves()) == 1
    assert check_deployment(trained)


def test_plain_prod_folder_with_user_files_is_moved_aside(trained: Settings) -> None:
    prod = trained.prod_folder
    prod.mkdir()
    (prod / "trainedmodel.pkl").write_bytes(b"an old hand-made model")
    (prod / "notes.md").write_text("keep me\n")
    deploy(trained)
    assert prod.is_symlink()
    aside = [p for p in prod.parent.iterdir() if p.name.startswith(prod.name + ".before-beryl")]
    assert len(aside) == 1
    assert (aside[0] / "notes.md").read_text() == "keep me\n"
    assert (aside[0] / "trainedmodel.pkl").read_bytes() == b"an old hand-made model"
    assert check_deployment(trained)

    train(trained)
    deploy(trained)
    assert (aside[0] / "notes.md").read_text() == "keep me\n"


def test_rollback_re_materialises_the_previous_version(trained: Settings) -> None:
    deploy(trained)
    v1_sha = Registry(trained.model_folder).card("v0001").model_sha256
    train(trained)
    deploy(trained)
    assert read_manifest(trained)["version"] == "v0002"

    result = rollback(trained, reason="v0002 misbehaves")
    assert result.version == "v0001"
    assert result.move is not None and result.move.action == "rollback"
    assert result.move.reason == "v0002 misbehaves"
    manifest = read_manifest(trained)
    assert manifest["version"] == "v0001"
    assert sha256(trained.prod_folder / "trainedmodel.pkl") == v1_sha
    assert check_deployment(trained)
    assert Registry(trained.model_folder).production() == "v0001"

    with pytest.raises(ModelNotFoundError):
        rollback(trained)
    assert read_manifest(trained)["version"] == "v0001"


def test_tampered_version_is_not_deployed(trained: Settings) -> None:
    deploy(trained)
    train(trained)
    score(trained, "v0002")
    model = Registry(trained.model_folder).model_path("v0002")
    model.write_bytes(model.read_bytes()[:-1] + b"!")
    with pytest.raises(IntegrityError):
        deploy(trained, "v0002")
    assert read_manifest(trained)["version"] == "v0001"
    assert check_deployment(trained)
