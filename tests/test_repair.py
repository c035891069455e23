"""Damaged state: every fault of a state file ends repaired, refused in one line naming the file
and the fix, or deferred; never a traceback, never a row lost.

One small workspace is built once (two batches, two model versions, v0002 in production); each
test damages a copy of it — a state file missing, empty, truncated, garbage, of the wrong shape
or pointing at nothing — runs the repair every workspace-changing command starts with
(``beryl.loop.passes.recover``, or the real CLI), and checks that the dataset holds the rows it
held (or that every row comes back from the input folder by the documented command) and that
the next pass works.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from tests.conftest import CliRunner

from beryl import config
from beryl.config import Settings
from beryl.data.dataset import Dataset
from beryl.data.demo import add_batch, init_workspace
from beryl.data.ingestion import ingest
from beryl.errors import BerylError, StateError
from beryl.loop.passes import run_pass
from beryl.loop.recover import recover
from beryl.model.deployment import check_deployment, deploy, read_manifest
from beryl.model.registry import Registry
from beryl.model.training import train

PROD = "v0002"


# -- the workspace and what it holds --------------------------------------------------------------
@pytest.fixture(scope="module")
def golden(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two batches (3 files, then 1), v0001 and v0002 trained and promoted in turn."""
    root = tmp_path_factory.mktemp("golden") / "ws"
    ws = init_workspace(root, rows=400, files=3, seed=3)
    settings = config.load(ws.config)
    ingest(settings)
    add_batch(settings.input_folder, "later", rows=60, seed=8)
    ingest(settings)
    for _ in range(2):
        train(settings)
        deploy(settings)
    recover(settings)
    return root


@pytest.fixture
def ws(golden: Path, tmp_path: Path) -> Settings:
    """A copy of the golden workspace."""
    root = tmp_path / "ws"
    shutil.copytree(golden, root, symlinks=True)
    return config.load(root / "config.json")


def rows(settings: Settings) -> list[tuple[Any, ...]]:
    """The dataset's rows, sorted (a multiset: a row held twice shows twice)."""
    frame = Dataset(settings.output_folder).read()
    return sorted(tuple(str(v) for v in row) for row in frame.itertuples(index=False))


@pytest.fixture(scope="module")
def golden_rows(golden: Path) -> list[tuple[Any, ...]]:
    return rows(config.load(golden / "config.json"))


def batches(settings: Settings) -> list[str]:
    return [b.id for b in Dataset(settings.output_folder).batches]


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def tree(root: Path) -> dict[str, tuple[int, int, str]]:
    """Every file under ``root`` with its size, modification time and content hash."""
    found = {}
    for path in sorted(root.rglob("*")):
        if path.is_file() and not path.is_symlink():
            info = path.stat()
            found[str(path.relative_to(root))] = (info.st_size, info.st_mtime_ns, digest(path))
    return found


def contents(root: Path) -> dict[str, str]:
    """Every file under ``root`` with its content hash."""
    return {name: sha for name, (_, _, sha) in tree(root).items()}


def recovered(store: Path) -> list[Path]:
    """What repairs moved aside in ``store``."""
    return sorted(p for p in (store / ".recovered").rglob("*") if p.is_file())


def damage(path: Path, how: str) -> None:
    """Damage a file: missing, empty, truncated (a third kept) or garbage."""
    if how == "missing":
        path.unlink()
    elif how == "empty":
        path.write_bytes(b"")
    elif how == "truncated":
        path.write_bytes(path.read_bytes()[: max(1, path.stat().st_size // 3)])
    elif how == "garbage":
        path.write_bytes(b"\x00garbage\xff" * 100)
    else:
        raise AssertionError(how)


FILE_DAMAGE = ["missing", "empty", "truncated", "garbage"]


def next_pass_has_nothing_new(settings: Settings) -> None:
    result = run_pass(settings, report=False)
    assert (result.outcome, result.exit_code) == ("no-new-data", 0), result.summary()


def one_clean_line(result: subprocess.CompletedProcess[str]) -> str:
    """A refusal: one line on stderr, no traceback."""
    assert "Traceback" not in result.stderr + result.stdout, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    return lines[0]


# -- dataset.json ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "how", [*FILE_DAMAGE, "not an object", "wrong shape", "a batch without its rows"]
)
def test_a_damaged_dataset_record_is_rebuilt_from_the_batches(
    ws: Settings, golden_rows: list[tuple[Any, ...]], how: str
) -> None:
    data = ws.output_folder
    manifest = data / "dataset.json"
    before = Dataset(data)
    listing = sorted(p.name for p in (data / "batches").iterdir())
    if how == "not an object":
        manifest.write_text("[1, 2, 3]\n")
    elif how == "wrong shape":
        manifest.write_text(json.dumps({**json.loads(manifest.read_text()), "batches": {"a": 1}}))
    elif how == "a batch without its rows":
        raw = json.loads(manifest.read_text())
        raw["batches"][0]["rows"] = "many"
        manifest.write_text(json.dumps(raw))
    else:
        damage(manifest, how)
    with pytest.raises(StateError, match=r"dataset\.json"):
        Dataset(data).read()  # readers say what is wrong; opening the dataset does not fail

    repaired = recover(ws)

    assert any(
        line.startswith("rebuilt dataset.json from the records of 2 batch") for line in repaired
    )
    after = Dataset(data)
    assert [b.id for b in after.batches] == [b.id for b in before.batches]
    assert after.files == before.files
    assert (after.schema, after.manifest.classes) == (before.schema, before.manifest.classes)
    assert rows(ws) == golden_rows
    assert sorted(p.name for p in (data / "batches").iterdir()) == listing  # nothing deleted
    if how != "missing":
        assert [p.name for p in recovered(data)] == ["dataset.json"]
    next_pass_has_nothing_new(ws)


def test_ingest_with_the_record_missing_keeps_every_batch(
    ws: Settings, golden_rows: list[tuple[Any, ...]], beryl_cli: CliRunner
) -> None:
    """The issue: `beryl ingest` said "No new files", exited 0 and deleted every batch."""
    batch_files = tree(ws.output_folder / "batches")
    (ws.output_folder / "dataset.json").unlink()

    out = beryl_cli("ingest", config=ws.root / "config.json")

    assert out.returncode == 0, out.stderr
    assert tree(ws.output_folder / "batches") == batch_files
    assert rows(ws) == golden_rows
    assert len(Dataset(ws.output_folder).files) == 4


def test_a_record_naming_a_batch_that_is_not_there_is_refused_then_set_aside(ws: Settings) -> None:
    from beryl.data.setaside import set_aside_batch

    manifest = ws.output_folder / "dataset.json"
    raw = json.loads(manifest.read_text())
    ghost = {**raw["batches"][1], "id": "20990101T000000000000Z", "sizes": {}}
    raw["batches"].append(ghost)
    manifest.write_text(json.dumps(raw))

    with pytest.raises(StateError) as refused:
        recover(ws)
    assert "20990101T000000000000Z.parquet" in str(refused.value)
    assert "beryl dataset set-aside 20990101T000000000000Z" in str(refused.value)

    set_aside_batch(ws, "20990101T000000000000Z")
    recover(ws)
    assert len(batches(ws)) == 2
    next_pass_has_nothing_new(ws)


# -- batches/<id>.parquet -------------------------------------------------------------------------
@pytest.mark.parametrize("how", [*FILE_DAMAGE, "another batch's rows"])
def test_a_damaged_batch_is_refused_then_set_aside_and_its_rows_come_back(
    ws: Settings, golden_rows: list[tuple[Any, ...]], how: str
) -> None:
    from beryl.data.setaside import set_aside_batch

    first, second = batches(ws)
    path = Dataset(ws.output_folder).batch_path(first)
    if how == "another batch's rows":
        shutil.copyfile(Dataset(ws.output_folder).batch_path(second), path)
    else:
        damage(path, how)

    with pytest.raises(StateError) as refused:
        recover(ws)
    message = str(refused.value)
    assert path.name in message and f"beryl dataset set-aside {first}" in message

    result = set_aside_batch(ws, first)

    assert result.batches == [first]
    assert sorted(result.files) == ["dataset1.csv", "dataset2.csv", "dataset3.csv"]
    assert batches(ws) == [second]
    if how != "missing":
        assert path.name in {p.name for p in recovered(ws.output_folder)}
    recover(ws)
    ingest(ws)  # the files that fed the batch are read again
    assert rows(ws) == golden_rows
    next_pass = run_pass(ws, report=False)
    assert next_pass.exit_code == 0 and next_pass.candidate is not None


@pytest.mark.parametrize("how", ["truncated", "garbage"])
def test_readers_name_a_damaged_batch_and_the_command(ws: Settings, how: str) -> None:
    first = batches(ws)[0]
    dataset = Dataset(ws.output_folder)
    damage(dataset.batch_path(first), how)
    with pytest.raises(StateError) as refused:
        dataset.read()
    assert f"{first}.parquet" in str(refused.value)
    assert f"beryl dataset set-aside {first}" in str(refused.value)


def test_a_damaged_batch_through_the_cli(
    ws: Settings, golden_rows: list[tuple[Any, ...]], beryl_cli: CliRunner
) -> None:
    cfg = ws.root / "config.json"
    first = batches(ws)[0]
    damage(Dataset(ws.output_folder).batch_path(first), "truncated")

    refused = beryl_cli("run", "--no-apicalls", config=cfg)
    assert refused.returncode == StateError.exit_code
    line = one_clean_line(refused)
    assert f"{first}.parquet" in line and f"beryl dataset set-aside {first}" in line

    aside = beryl_cli("dataset", "set-aside", first, config=cfg)
    assert aside.returncode == 0, aside.stderr
    assert first in aside.stdout

    again = beryl_cli("run", "--no-apicalls", config=cfg)
    assert again.returncode == 0, again.stderr
    assert rows(ws) == golden_rows


# -- batches/<id>.hashes.npy ----------------------------------------------------------------------
@pytest.mark.parametrize("how", [*FILE_DAMAGE, "too few hashes", "another batch's hashes"])
def test_a_damaged_hash_index_is_rebuilt_from_its_batch(
    ws: Settings, golden: Path, golden_rows: list[tuple[Any, ...]], how: str
) -> None:
    first, second = batches(ws)
    dataset = Dataset(ws.output_folder)
    path = dataset.hashes_path(first)
    if how == "too few hashes":
        np.save(path, np.arange(3, dtype=np.uint64))
    elif how == "another batch's hashes":
        shutil.copyfile(dataset.hashes_path(second), path)
    else:
        damage(path, how)
    with pytest.raises(StateError) as refused:
        Dataset(ws.output_folder).hash_runs()
    assert path.name in str(refused.value) and "beryl ingest" in str(refused.value)

    repaired = recover(ws)

    assert any(f"rebuilt the hash index {path.name}" in line for line in repaired)
    golden_index = golden / "ingesteddata" / "batches" / path.name
    assert path.read_bytes() == golden_index.read_bytes()
    # deduplication works again: a file repeating ingested rows adds only its new ones
    old = (ws.input_folder / "dataset1.csv").read_text().splitlines()
    (ws.input_folder / "again.csv").write_text("\n".join([*old[:50], *old[:1]]) + "\n")
    assert ingest(ws).rows_added == 0
    assert rows(ws) == golden_rows


# -- batches/<id>.batch.json ----------------------------------------------------------------------
@pytest.mark.parametrize("how", [*FILE_DAMAGE, "wrong shape"])
def test_a_damaged_batch_record_is_written_again_from_the_manifest(
    ws: Settings, golden: Path, how: str
) -> None:
    first = batches(ws)[0]
    path = Dataset(ws.output_folder).record_path(first)
    if how == "wrong shape":
        path.write_text(json.dumps({"format": 1, "batch": [], "files": {}}))
    else:
        damage(path, how)

    recover(ws)

    assert path.read_bytes() == (golden / "ingesteddata" / "batches" / path.name).read_bytes()
    (ws.output_folder / "dataset.json").unlink()  # and the manifest can be rebuilt from it
    recover(ws)
    assert Dataset(ws.output_folder).files == Dataset(golden / "ingesteddata").files


def test_a_lost_manifest_and_a_lost_record_are_refused_naming_the_folder(
    ws: Settings, golden_rows: list[tuple[Any, ...]]
) -> None:
    from beryl.data.setaside import set_aside_batch

    first = batches(ws)[0]
    Dataset(ws.output_folder).record_path(first).unlink()
    (ws.output_folder / "dataset.json").unlink()
    batch_files = tree(ws.output_folder / "batches")

    with pytest.raises(StateError) as refused:
        recover(ws)
    message = str(refused.value)
    assert str(ws.output_folder / "batches") in message
    assert f"beryl dataset set-aside {first}" in message and "backup" in message
    assert tree(ws.output_folder / "batches") == batch_files  # nothing moved, nothing lost

    set_aside_batch(ws, first)
    recover(ws)
    ingest(ws)
    assert rows(ws) == golden_rows


def _as_an_older_beryl_left_it(settings: Settings) -> None:
    """No batch records, no sizes in the manifest."""
    for record in (settings.output_folder / "batches").glob("*.batch.json"):
        record.unlink()
    manifest = settings.output_folder / "dataset.json"
    raw = json.loads(manifest.read_text())
    for batch in raw["batches"]:
        batch.pop("sizes")
    manifest.write_text(json.dumps(raw))


def test_an_older_dataset_gets_its_records_and_can_then_be_rebuilt(
    ws: Settings, golden: Path
) -> None:
    _as_an_older_beryl_left_it(ws)

    repaired = recover(ws)

    assert any(line.startswith("wrote the record of 2 batch(es)") for line in repaired)
    assert recover(ws) == []  # once
    (ws.output_folder / "dataset.json").unlink()
    recover(ws)
    assert Dataset(ws.output_folder).files == Dataset(golden / "ingesteddata").files


def test_an_older_dataset_without_its_manifest_is_refused_and_read_again(
    ws: Settings, golden_rows: list[tuple[Any, ...]]
) -> None:
    from beryl.data.setaside import set_aside_batches

    _as_an_older_beryl_left_it(ws)
    (ws.output_folder / "dataset.json").unlink()

    with pytest.raises(StateError) as refused:
        recover(ws)
    assert "beryl dataset set-aside --all" in str(refused.value)
    assert str(ws.output_folder / "batches") in str(refused.value)

    set_aside_batches(ws, None)
    recover(ws)
    ingest(ws)  # every input file again
    assert rows(ws) == golden_rows
    assert len(recovered(ws.output_folder)) >= 4  # two batches and their indexes


def test_batch_files_no_manifest_names_are_moved_aside_not_deleted(ws: Settings) -> None:
    first = batches(ws)[0]
    folder = ws.output_folder / "batches"
    orphan = "29990101T000000000000Z"  # an ingestion killed before its manifest
    shutil.copyfile(folder / f"{first}.parquet", folder / f"{orphan}.parquet")
    shutil.copyfile(folder / f"{first}.hashes.npy", folder / f"{orphan}.hashes.npy")
    (folder / "notes.txt").write_text("mine\n")

    repaired = recover(ws)

    assert any(orphan in line for line in repaired)
    assert {p.name for p in recovered(ws.output_folder)} == {
        f"{orphan}.parquet",
        f"{orphan}.hashes.npy",
        "notes.txt",
    }
    assert batches(ws) == [first, batches(ws)[1]]
    next_pass_has_nothing_new(ws)


def test_a_failed_commit_leaves_manifest_batches_and_snapshot_as_they_were(
    ws: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    import tempfile

    before = contents(ws.output_folder)
    add_batch(ws.input_folder, "new", rows=40, seed=21)
    real = tempfile.mkstemp

    def full_disk(*args: Any, **kwargs: Any) -> tuple[int, str]:
        if Path(kwargs["dir"]) == ws.output_folder and kwargs["suffix"] == ".json":
            raise OSError(28, "No space left on device")  # the manifest cannot be written
        return real(*args, **kwargs)

    monkeypatch.setattr(tempfile, "mkstemp", full_disk)
    with pytest.raises(StateError, match=r"dataset\.json"):
        ingest(ws)
    monkeypatch.undo()

    assert contents(ws.output_folder) == before  # the new batch's files went with the failure
    assert ingest(ws).rows_added == 40


# -- models/production.json -----------------------------------------------------------------------
def _signed(settings: Settings, body: dict[str, Any]) -> str:
    return json.dumps(Registry(settings.model_folder).keyring.sign(body))


@pytest.mark.parametrize(
    "how",
    # (a missing pointer was always restored from the log: tests/test_crash.py)
    ["empty", "truncated", "garbage", "{}", "not signed", "signed, naming a version not here"],
)
def test_a_damaged_pointer_is_restored_from_the_log(ws: Settings, how: str) -> None:
    registry = Registry(ws.model_folder)
    pointer = registry.pointer_path
    if how == "{}":
        pointer.write_text("{}")
    elif how == "not signed":
        pointer.write_text(json.dumps({"version": "v0001", "since": "2024-01-01"}))
    elif how.startswith("signed"):
        pointer.write_text(_signed(ws, {"version": "v0099", "since": "2024-01-01"}))
    else:
        damage(pointer, how)

    repaired = recover(ws)

    assert registry.production() == PROD
    assert any(PROD in line for line in repaired)
    assert read_manifest(ws)["version"] == PROD and check_deployment(ws)
    assert [p.name for p in recovered(ws.model_folder)] == ["production.json"]
    next_pass_has_nothing_new(ws)


def test_a_pointer_the_log_cannot_restore_is_refused_naming_both_files(
    ws: Settings, beryl_cli: CliRunner
) -> None:
    registry = Registry(ws.model_folder)
    damage(registry.pointer_path, "garbage")
    damage(registry.log_path, "garbage")

    refused = beryl_cli("run", "--no-apicalls", config=ws.root / "config.json")

    assert refused.returncode != 0
    line = one_clean_line(refused)
    assert "production.json" in line and "promotions.jsonl" in line
    assert "beryl models promote V" in line
    deploy(ws, "v0001", reason="chosen by hand")  # what `beryl models promote v0001` does
    assert registry.production() == "v0001"
    assert read_manifest(ws)["version"] == "v0001"
    recover(ws)
    assert registry.production() == "v0001"


# -- models/promotions.jsonl ----------------------------------------------------------------------
@pytest.mark.parametrize(
    "how",
    [  # (a missing or empty log was always read as no moves)
        "cut mid-line",
        "bytes that are not UTF-8",
        "a torn last line",
        "a signed move to a version that is not here",
        "a signed line that is no move",
    ],
)
def test_a_damaged_log_never_fails_a_command_and_moves_nothing(ws: Settings, how: str) -> None:
    registry = Registry(ws.model_folder)
    log = registry.log_path
    good = registry.moves()
    if how == "cut mid-line":
        log.write_bytes(log.read_bytes()[: log.read_bytes().index(b"\n") + 40])
    elif how == "bytes that are not UTF-8":
        log.write_bytes(log.read_bytes() + b'{"time": "\xff\xfe"}\n\x80\x81 garbage\n')
    elif how == "a torn last line":
        log.write_bytes(log.read_bytes() + b'{"time": "2030-01-01T00:00:00Z", "act')
    else:
        body: dict[str, Any] = {
            "time": "2030-01-01T00:00:00Z",
            "action": "promote",
            "from_version": PROD,
            "to_version": "v0099",
            "reason": "forged",
        }
        if how == "a signed line that is no move":
            body["to_version"] = 99
        log.write_text(log.read_text() + _signed(ws, body) + "\n")

    repaired = recover(ws)

    assert registry.production() == PROD  # never rolled forward to a version that is not here
    assert set(registry.moves()) <= set(good)
    if how in ("bytes that are not UTF-8", "a torn last line", "cut mid-line"):
        assert any("unreadable line(s) of promotions.jsonl" in line for line in repaired)
        assert [p.name for p in recovered(ws.model_folder)] == ["promotions.jsonl"]
        for line in log.read_bytes().splitlines():
            json.loads(line)  # what is left is whole lines
    if how.startswith("a signed"):
        assert any(line.startswith("skipped 1 line(s) of promotions.jsonl") for line in repaired)
    next_pass_has_nothing_new(ws)


# -- models/versions/<id>/card.json ---------------------------------------------------------------
@pytest.mark.parametrize("how", [*FILE_DAMAGE, "not an object", "another version's card"])
def test_a_damaged_card_makes_only_its_version_unusable(ws: Settings, how: str) -> None:
    registry = Registry(ws.model_folder)
    card = registry.version_folder("v0001") / "card.json"
    if how == "not an object":
        card.write_text('["v0001"]')
    elif how == "another version's card":
        shutil.copyfile(registry.version_folder(PROD) / "card.json", card)
    else:
        damage(card, how)

    assert registry.ids() == [PROD]
    assert [c.id for c in registry.cards()] == [PROD]
    assert str(card) in registry.damaged()["v0001"]
    with pytest.raises(BerylError, match=r"card\.json"):
        registry.card("v0001")
    assert not registry.verify("v0001")
    recover(ws)
    next_pass_has_nothing_new(ws)


def test_models_list_shows_the_good_versions_and_marks_the_damaged_one(
    ws: Settings, beryl_cli: CliRunner
) -> None:
    registry = Registry(ws.model_folder)
    damage(registry.version_folder("v0001") / "card.json", "garbage")

    listed = beryl_cli("models", "list", "--json", config=ws.root / "config.json")

    assert listed.returncode == 0, listed.stderr
    entries = {e["id"]: e for e in json.loads(listed.stdout)}
    assert entries[PROD]["production"] is True
    assert "card.json" in entries["v0001"]["damaged"]
    table = beryl_cli("models", "list", config=ws.root / "config.json")
    assert table.returncode == 0 and "damaged" in table.stdout and PROD in table.stdout


def test_a_damaged_production_card_is_refused_naming_it_and_listed(
    ws: Settings, beryl_cli: CliRunner
) -> None:
    card = Registry(ws.model_folder).version_folder(PROD) / "card.json"
    damage(card, "truncated")
    add_batch(ws.input_folder, "new", rows=30, seed=4)
    cfg = ws.root / "config.json"

    refused = beryl_cli("run", "--no-apicalls", config=cfg)

    assert refused.returncode != 0
    assert "card.json" in one_clean_line(refused)
    listed = beryl_cli("models", "list", "--json", config=cfg)
    assert listed.returncode == 0, listed.stderr
    assert {e["id"]: "damaged" in e for e in json.loads(listed.stdout)} == {
        "v0001": False,
        PROD: True,
    }


# -- production_deployment ------------------------------------------------------------------------
def _link_to_nowhere(settings: Settings) -> None:
    prod = settings.prod_folder
    prod.unlink()
    prod.symlink_to(".production_deployment.d/v0009-gone")


def _a_plain_folder(settings: Settings) -> None:
    prod = settings.prod_folder
    target = prod.resolve()
    prod.unlink()
    shutil.copytree(target, prod)


def _manifest(settings: Settings, text: str | None) -> None:
    path = settings.prod_folder / "manifest.json"
    if text is None:
        path.unlink()
    else:
        path.write_text(text)


DEPLOYMENT_DAMAGE: dict[str, Callable[[Settings], None]] = {
    "the link points nowhere": _link_to_nowhere,
    "the link is missing": lambda s: s.prod_folder.unlink(),
    "a plain folder where the link belongs": _a_plain_folder,
    "the manifest is missing": lambda s: _manifest(s, None),
    "the manifest is garbage": lambda s: _manifest(s, "\x00garbage"),
    "the manifest names no model": lambda s: _manifest(s, json.dumps({"version": PROD})),
    "the model is cut": lambda s: damage(s.prod_folder / "trainedmodel.pkl", "truncated"),
}


@pytest.mark.parametrize("how", DEPLOYMENT_DAMAGE)
def test_a_damaged_deployment_is_made_again_and_loses_no_file_of_the_user(
    ws: Settings, how: str
) -> None:
    (ws.prod_folder / "notes.md").write_text("mine\n")  # a user's file among Beryl's
    DEPLOYMENT_DAMAGE[how](ws)

    repaired = recover(ws)

    assert any(line.startswith(f"materialised {PROD}") for line in repaired)
    assert ws.prod_folder.is_symlink()
    assert read_manifest(ws)["version"] == PROD and check_deployment(ws)
    next_pass_has_nothing_new(ws)
    for version in ("v0001", PROD, "v0001", PROD):  # old deployments are pruned meanwhile
        deploy(ws, version)
    kept = [p for p in ws.root.rglob("notes.md") if p.read_text() == "mine\n"]
    assert len(kept) >= 1, "the user's file was deleted"


def test_files_a_user_put_into_a_deployment_are_never_pruned(ws: Settings) -> None:
    (ws.prod_folder / "notes.md").write_text("mine\n")
    for version in ("v0001", PROD, "v0001", PROD):
        deploy(ws, version)
    store = ws.root / ".production_deployment.d"
    kept = [p for p in recovered(store) if p.name == "notes.md"]
    assert len(kept) == 1 and kept[0].read_text() == "mine\n"


def test_unfinished_versions_and_deployments_are_moved_aside(ws: Settings) -> None:
    staging = ws.model_folder / "versions" / ".staging-1-killed"
    staging.mkdir()
    (staging / "model.pkl").write_bytes(b"half a model")
    store = ws.root / ".production_deployment.d"
    (store / ".staging-v0003-killed").mkdir()
    (store / ".staging-v0003-killed" / "manifest.json").write_text("{")

    recover(ws)

    assert not staging.exists()
    assert [p.read_bytes() for p in recovered(ws.model_folder)] == [b"half a model"]
    assert [p.name for p in recovered(store)] == ["manifest.json"]


# -- reading writes nothing -----------------------------------------------------------------------
def _read_everything(settings: Settings) -> None:
    dataset = Dataset(settings.output_folder)
    assert dataset.rows > 0 and len(dataset.read()) == dataset.rows
    assert len(dataset.hash_runs()) == 2
    registry = Registry(settings.model_folder)
    assert registry.production() == PROD
    assert len(registry.moves()) == 2
    assert registry.ids() == ["v0001", PROD] and registry.damaged() == {}
    assert registry.model(PROD) is not None
    assert check_deployment(settings)


def test_reading_state_writes_nothing(ws: Settings) -> None:
    before = tree(ws.root)
    _read_everything(ws)
    assert tree(ws.root) == before


def test_checking_a_signature_never_makes_a_key(
    ws: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from beryl.model.signing import reset_default_keyring

    home = tmp_path / "empty-config"
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home))
    reset_default_keyring()
    try:
        registry = Registry(ws.model_folder)
        with pytest.raises(BerylError, match="no signing key"):
            registry.production()
        assert registry.moves() == []
        assert not home.exists()
    finally:
        monkeypatch.undo()
        reset_default_keyring()


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting needs root")
def test_state_is_read_from_a_read_only_workspace(ws: Settings, tmp_path: Path) -> None:
    view = tmp_path / "ro"
    view.mkdir()
    try:
        subprocess.run(["mount", "--bind", str(ws.root), str(view)], check=True)
        subprocess.run(["mount", "-o", "remount,bind,ro", str(view)], check=True)
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("cannot mount here")
    try:
        _read_everything(config.load(view / "config.json"))
    finally:
        subprocess.run(["umount", "-l", str(view)], check=True)
