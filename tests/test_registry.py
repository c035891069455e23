"""Tests for beryl.model.registry: versions, integrity checks, the production pointer and its
log."""

from __future__ import annotations

import hashlib
import itertools
import json
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from beryl.data.schema import Schema
from beryl.errors import IntegrityError, ModelError, ModelNotFoundError
from beryl.model.engine import build_pipeline
from beryl.model.registry import ModelCard, Move, Registry
from beryl.storage import LocalStorage, Storage

MOVE_KEYS = {"time", "action", "from_version", "to_version", "reason", "from_f1", "to_f1", "run_id"}


def blank_card() -> ModelCard:
    return ModelCard(
        id="",
        created="2024-01-01T00:00:00Z",
        schema=SCHEMA.to_dict(),
        parameters={"C": 1.0},
        classes=[0, 1],
        training={"rows": 10, "batches": ["b1"], "files": []},
        libraries={"python": "3"},
    )


SCHEMA = Schema(target="exited", positive_label=1, numeric=["x"])


def tiny_pipeline(seed: int = 0) -> Any:
    """A fitted Beryl pipeline on a few rows; ``seed`` changes its coefficients."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({"x": rng.normal(size=20)})
    return build_pipeline(SCHEMA, {}).fit(frame, (frame["x"] > 0).astype(int))


def add_version(registry: Registry, f1: float | None = None, seed: int = 0) -> str:
    """Store a small fitted pipeline as a new version, scored with ``f1`` when given."""
    card = registry.create(tiny_pipeline(seed), blank_card())
    if f1 is not None:
        registry.record_metrics(card.id, {"f1": f1})
    return card.id


def tree_hashes(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def log_lines(registry: Registry) -> list[dict[str, Any]]:
    return [json.loads(line) for line in registry.log_path.read_text().splitlines()]


def flip_one_byte(path: Path, offset: int = 20) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


@pytest.fixture
def registry(tmp_path: Path) -> Registry:
    return Registry(tmp_path / "models")


def test_versions_are_numbered_and_loadable(registry: Registry) -> None:
    assert registry.ids() == []
    with pytest.raises(ModelNotFoundError, match="no trained model"):
        registry.latest()
    first = add_version(registry, seed=1)
    second = add_version(registry, seed=2)
    assert (first, second) == ("v0001", "v0002")
    assert registry.ids() == ["v0001", "v0002"]
    assert registry.latest() == "v0002"
    for version, seed in (("v0001", 1), ("v0002", 2)):
        fitted = tiny_pipeline(seed).named_steps["model"]
        assert registry.model(version).coef.tolist() == fitted.coef_.tolist()
        assert registry.pipeline(version).named_steps["model"].coef_.tolist() == (
            fitted.coef_.tolist()
        )
    assert (
        registry.card("v0002").model_sha256
        == hashlib.sha256(registry.model_path("v0002").read_bytes()).hexdigest()
    )
    assert not [p for p in registry.versions_folder.iterdir() if p.name.startswith(".")]


def test_ids_ignore_foreign_folders_and_never_reuse_a_number(registry: Registry) -> None:
    add_version(registry)
    (registry.versions_folder / "notes").mkdir()
    (registry.versions_folder / "v0007").mkdir()  # a folder without a card is not a version
    assert registry.ids() == ["v0001"]
    assert add_version(registry) == "v0008"
    assert registry.ids() == ["v0001", "v0008"]


def test_record_metrics_changes_only_the_card(registry: Registry) -> None:
    version = add_version(registry)
    model_before = registry.model_path(version).read_bytes()
    card = registry.record_metrics(version, {"f1": 0.75, "recall": 0.5})
    assert card.f1 == 0.75
    assert registry.card(version).metrics == {"f1": 0.75, "recall": 0.5}
    assert registry.model_path(version).read_bytes() == model_before
    assert registry.verify(version)


def test_promote_moves_only_the_pointer_and_logs_the_move(registry: Registry) -> None:
    v1 = add_version(registry, f1=0.6)
    v2 = add_version(registry, f1=0.7)
    assert registry.production() is None
    (registry.folder / "latestscore.txt").write_text("0.7\n")
    versions_before = tree_hashes(registry.folder)

    first = registry.promote(v1, reason="first model")
    assert registry.production() == v1
    second = registry.promote(v2, reason="better F1")
    assert registry.production() == v2
    changed = {
        name
        for name, digest in tree_hashes(registry.folder).items()
        if versions_before.get(name) != digest
    }
    assert changed == {"production.json", "promotions.jsonl"}
    assert set(versions_before) <= set(tree_hashes(registry.folder))

    assert first == Move(
        time=first.time,
        action="promote",
        from_version=None,
        to_version=v1,
        reason="first model",
        from_f1=None,
        to_f1=0.6,
    )
    assert (second.from_version, second.to_version, second.from_f1, second.to_f1) == (
        v1,
        v2,
        0.6,
        0.7,
    )
    lines = log_lines(registry)
    assert len(lines) == 2
    assert all(set(line) == MOVE_KEYS | {"signature"} for line in lines)
    assert {k: v for k, v in lines[1].items() if k != "signature"} == {
        "time": second.time,
        "action": "promote",
        "from_version": "v0001",
        "to_version": "v0002",
        "reason": "better F1",
        "from_f1": 0.6,
        "to_f1": 0.7,
        "run_id": None,
    }
    assert lines[0]["time"] <= lines[1]["time"]
    assert registry.moves() == [first, second]
    pointer = json.loads(registry.pointer_path.read_text())
    assert pointer["version"] == v2


def test_rollback_goes_to_the_version_the_current_one_replaced(registry: Registry) -> None:
    v1, v2, v3 = (add_version(registry, f1=f1) for f1 in (0.5, 0.6, 0.7))
    for version in (v1, v2, v3):
        registry.promote(version)
    versions_before = tree_hashes(registry.versions_folder)

    move = registry.rollback(reason="v3 misbehaves")
    assert (move.action, move.from_version, move.to_version) == ("rollback", v3, v2)
    assert (move.from_f1, move.to_f1, move.reason) == (0.7, 0.6, "v3 misbehaves")
    assert registry.production() == v2
    assert registry.rollback().to_version == v1
    assert registry.production() == v1

    log_before = registry.log_path.read_bytes()
    with pytest.raises(ModelNotFoundError, match="no earlier production version"):
        registry.rollback()
    assert registry.production() == v1
    assert registry.log_path.read_bytes() == log_before
    assert [line["action"] for line in log_lines(registry)] == ["promote"] * 3 + ["rollback"] * 2
    assert tree_hashes(registry.versions_folder) == versions_before


def test_rollback_after_a_rollback_and_a_new_promotion(registry: Registry) -> None:
    v1, v2, v3 = (add_version(registry) for _ in range(3))
    registry.promote(v1)
    registry.promote(v2)
    registry.rollback()
    registry.promote(v3)
    assert registry.rollback().to_version == v1


def test_rollback_without_production_is_an_error(registry: Registry) -> None:
    add_version(registry)
    with pytest.raises(ModelNotFoundError, match="no model is in production"):
        registry.rollback()
    assert not registry.log_path.exists()


def test_rollback_after_promoting_the_current_version_again(registry: Registry) -> None:
    v1, v2 = add_version(registry), add_version(registry)
    registry.promote(v1)
    registry.promote(v2)
    log_before = registry.log_path.read_bytes()
    with pytest.raises(ModelError, match="already in production"):
        registry.promote(v2, reason="promoted twice")
    assert registry.log_path.read_bytes() == log_before
    assert registry.rollback().to_version == v1


def test_tampered_model_is_refused(registry: Registry) -> None:
    v1 = add_version(registry, f1=0.5)
    v2 = add_version(registry, f1=0.9)
    registry.promote(v1)
    flip_one_byte(registry.model_path(v2))
    log_before = registry.log_path.read_bytes()

    assert not registry.verify(v2)
    assert registry.verify(v1)
    with pytest.raises(IntegrityError, match="does not match its signed model file"):
        registry.pipeline(v2)
    with pytest.raises(IntegrityError):
        registry.promote(v2)
    assert registry.production() == v1
    assert registry.log_path.read_bytes() == log_before
    assert registry.pipeline(v1).named_steps["model"].coef_.tolist() == (
        tiny_pipeline().named_steps["model"].coef_.tolist()
    )


def test_rollback_to_a_tampered_version_is_refused(registry: Registry) -> None:
    v1, v2 = add_version(registry), add_version(registry)
    registry.promote(v1)
    registry.promote(v2)
    flip_one_byte(registry.model_path(v1), offset=-1)
    with pytest.raises(IntegrityError):
        registry.rollback()
    assert registry.production() == v2


def test_unreadable_card_is_a_model_error(registry: Registry) -> None:
    version = add_version(registry)
    (registry.versions_folder / version / "card.json").write_text('{"id": "v0001", "cre')
    with pytest.raises(ModelError, match="unreadable") as err:
        registry.card(version)
    assert not isinstance(err.value, ModelNotFoundError)
    with pytest.raises(ModelError):
        registry.model(version)


def test_missing_model_file_is_an_integrity_error(registry: Registry) -> None:
    version = add_version(registry)
    registry.model_path(version).unlink()
    assert not registry.verify(version)
    with pytest.raises(IntegrityError, match="missing"):
        registry.pipeline(version)
    registry.data_model_path(version).unlink()
    with pytest.raises(IntegrityError, match="missing"):
        registry.model(version)


@pytest.mark.parametrize("version", ["v0042", "latest", "1", "../v0001", "v01"])
def test_unknown_version_ids(registry: Registry, version: str) -> None:
    add_version(registry)
    for call in (registry.card, registry.model, registry.pipeline, registry.promote):
        with pytest.raises(ModelNotFoundError) as err:
            call(version)
        assert isinstance(err.value, LookupError)
        assert version in str(err.value)
    assert registry.production() is None


def test_torn_last_line_of_the_log_is_ignored(registry: Registry) -> None:
    v1, v2 = add_version(registry), add_version(registry)
    registry.promote(v1)
    registry.promote(v2)
    with registry.log_path.open("a", encoding="utf-8") as handle:
        handle.write('{"time": "2024-05-01T00:00:00Z", "action": "prom')
    moves = registry.moves()
    assert [m.to_version for m in moves] == [v1, v2]
    assert registry.rollback().to_version == v1


def test_move_after_a_torn_last_line_is_still_logged(registry: Registry) -> None:
    v1, v2 = add_version(registry), add_version(registry)
    registry.promote(v1)
    with registry.log_path.open("a", encoding="utf-8") as handle:
        handle.write('{"time": "2024-05-01T00:00:00Z", "action": "prom')
    registry.promote(v2)
    assert [m.to_version for m in registry.moves()] == [v1, v2]
    assert registry.rollback().to_version == v1


def test_a_log_that_lost_lines_is_never_followed_back(registry: Registry) -> None:
    """``repair`` finishes a move logged after the pointer was written (a kill in between),
    never one the pointer has gone past (a log that lost its last lines)."""
    v1, v2 = add_version(registry), add_version(registry)
    registry.promote(v1)
    pointer = registry.pointer_path.read_bytes()
    registry.promote(v2)
    registry.pointer_path.write_bytes(pointer)  # killed between the log line and the pointer
    assert registry.repair() == [f"finished the logged promote to {v2}"]
    assert registry.production() == v2

    first_line = registry.log_path.read_bytes().split(b"\n")[0] + b"\n"
    registry.log_path.write_bytes(first_line)  # the move to v2 is gone from the log
    assert registry.repair() == []
    assert registry.production() == v2


def test_damaged_names_versions_whose_card_cannot_be_read(registry: Registry) -> None:
    v1, v2, v3 = (add_version(registry) for _ in range(3))
    (registry.version_folder(v1) / "card.json").write_text("{")
    (registry.version_folder(v3) / "card.json").unlink()
    (registry.versions_folder / "v0009").mkdir()  # an empty folder is no version
    assert registry.ids() == [v2]
    assert registry.latest() == v2
    assert set(registry.damaged()) == {v1, v3}
    assert "is missing" in registry.damaged()[v3]
    assert add_version(registry) == "v0010"  # numbers are never reused


def test_a_move_from_a_version_whose_card_is_damaged_still_goes_ahead(registry: Registry) -> None:
    v1, v2 = add_version(registry, f1=0.5), add_version(registry, f1=0.6)
    registry.promote(v1)
    (registry.version_folder(v1) / "card.json").write_text("[]")
    move = registry.promote(v2)
    assert (move.from_version, move.from_f1, move.to_f1) == (v1, None, 0.6)
    assert registry.production() == v2


@pytest.mark.parametrize(
    "card",
    [
        {"metrics": "high"},
        {"metrics": {"f1": "0.9"}},
        {"classes": "01"},
        {"id": 1},
    ],
)
def test_a_card_of_the_wrong_shape_is_unreadable(registry: Registry, card: dict[str, Any]) -> None:
    version = add_version(registry)
    path = registry.version_folder(version) / "card.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **card}))
    with pytest.raises(ModelError, match="unreadable"):
        registry.card(version)
    assert registry.ids() == []


# -- the pointer and the log on the storage seam --------------------------------------------------
class MemoryStorage:
    """``Storage`` in a dict: what the registry keeps there never touches the models folder."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.lock = threading.Lock()

    def read(self, key: str) -> bytes | None:
        return self.files.get(key)

    def write(self, key: str, data: bytes) -> None:
        self.files[key] = data

    def create(self, key: str, data: bytes) -> bool:
        with self.lock:
            return self.files.setdefault(key, data) is data

    def swap(self, key: str, data: bytes, *, expected: bytes | None) -> bool:
        with self.lock:
            if self.files.get(key) != expected:
                return False
            self.files[key] = data
            return True

    def append(self, key: str, line: str) -> None:
        with self.lock:
            self.files[key] = self.files.get(key, b"") + line.encode() + b"\n"

    def keys(self, prefix: str = "") -> list[str]:
        return sorted(k for k in self.files if k.startswith(prefix))

    def exists(self, key: str) -> bool:
        return key in self.files

    def stamp(self, key: str) -> str | None:
        return str(hash(self.files[key])) if key in self.files else None

    def where(self, key: str) -> str:
        return f"memory:{key}"

    def delete(self, key: str) -> None:
        with self.lock:
            self.files.pop(key, None)


def test_the_versions_the_pointer_and_the_log_live_in_the_registry_storage(
    tmp_path: Path,
) -> None:
    storage = MemoryStorage()
    registry = Registry(tmp_path / "models", storage=storage)
    assert isinstance(storage, Storage)
    v1, v2 = add_version(registry), add_version(registry)
    registry.promote(v1)
    registry.promote(v2)
    assert registry.production() == v2
    files = {f"versions/{v}/{name}" for v in (v1, v2) for name in ("model.json", "model.pkl")}
    files |= {f"versions/{v}/card.json" for v in (v1, v2)}
    assert set(storage.files) == {"production.json", "promotions.jsonl", *files}
    assert not registry.pointer_path.exists() and not registry.log_path.exists()
    assert not registry.versions_folder.exists()  # the folder holds the cache and the latest
    assert (
        registry.verify(v1)
        and registry.model_path(v1).read_bytes() == (storage.files[f"versions/{v1}/model.pkl"])
    )
    assert [m.to_version for m in registry.moves()] == [v1, v2]
    assert registry.rollback().to_version == v1
    assert Registry(tmp_path / "models").production() is None  # the folder holds no pointer


class Meanwhile(LocalStorage):
    """The models folder, where another process moves production just before this one's
    ``append`` or ``swap`` of the pointer (both read the pointer before either moved it)."""

    def __init__(self, root: Path, at: str, other: Callable[[], object]) -> None:
        super().__init__(root)
        self.at = at
        self.other: Callable[[], object] | None = other

    def _now(self, step: str) -> None:
        if step == self.at and self.other is not None:
            other, self.other = self.other, None
            other()

    def append(self, key: str, line: str) -> None:
        self._now("append")
        super().append(key, line)

    def swap(self, key: str, data: bytes, *, expected: bytes | None) -> bool:
        self._now("swap")
        return super().swap(key, data, expected=expected)


@pytest.mark.parametrize("at", ["append", "swap"])
def test_two_promotions_from_the_same_reading_one_wins_the_other_raises(
    registry: Registry, at: str
) -> None:
    v1, v2, v3 = (add_version(registry, f1=f1) for f1 in (0.5, 0.6, 0.7))
    registry.promote(v1)
    other = Registry(registry.folder)
    won: list[Move] = []
    racing = Registry(
        registry.folder,
        storage=Meanwhile(registry.folder, at, lambda: won.append(other.promote(v3))),
    )
    with pytest.raises(ModelError, match=r"production moved while promoting; run again") as err:
        racing.promote(v2, reason="this process")
    assert v3 in str(err.value) and err.value.hint is not None and v2 in err.value.hint
    assert [(m.from_version, m.to_version) for m in won] == [(v1, v3)]
    assert registry.production() == v3
    assert [m.to_version for m in registry.moves()] == [v1, v3]
    assert [line["action"] for line in log_lines(registry)][-1] == "void"
    assert registry.unsigned_moves() == 0
    assert registry.repair() == []  # the move that lost is never rolled forward
    assert registry.production() == v3
    assert registry.rollback().to_version == v1


def test_a_move_that_lost_is_not_rolled_forward_even_without_its_void_line(
    registry: Registry,
) -> None:
    """A process killed after its swap lost, before it logged the void line."""
    v1, v2, v3 = (add_version(registry) for _ in range(3))
    registry.promote(v1)
    other = Registry(registry.folder)
    racing = Registry(
        registry.folder, storage=Meanwhile(registry.folder, "append", lambda: other.promote(v3))
    )
    with pytest.raises(ModelError, match="production moved"):
        racing.promote(v2)
    lines = registry.log_path.read_bytes().splitlines(keepends=True)
    registry.log_path.write_bytes(b"".join(lines[:-1]))  # the void line never made it
    assert [m.to_version for m in registry.moves()] == [v1, v3, v2]
    assert registry.repair() == []
    assert registry.production() == v3


def test_promotions_at_once_each_win_or_raise_and_the_log_is_a_chain(registry: Registry) -> None:
    versions = [add_version(registry, seed=seed) for seed in range(6)]
    registry.promote(versions[0])
    barrier = threading.Barrier(5)

    def promote(version: str) -> Move | None:
        barrier.wait()
        try:
            return Registry(registry.folder).promote(version)
        except ModelError as exc:
            assert "production moved while promoting" in exc.message
            return None

    with ThreadPoolExecutor(max_workers=5) as pool:
        done = [m for m in pool.map(promote, versions[1:]) if m is not None]
    assert done
    moves = registry.moves()
    assert len(moves) == len(done) + 1 and set(moves[1:]) == set(done)
    for before, after in itertools.pairwise(moves):
        assert after.from_version == before.to_version  # nobody moved it from a stale reading
    assert registry.production() == moves[-1].to_version


def test_a_move_records_the_pass_that_made_it(registry: Registry) -> None:
    v1, v2 = add_version(registry), add_version(registry)
    first = registry.promote(v1, reason="a pass: no production model yet", run_id=7)
    second = registry.promote(v2)
    assert (first.run_id, second.run_id) == (7, None)
    assert [line["run_id"] for line in log_lines(registry)] == [7, None]
    assert registry.moves() == [first, second]
    back = registry.rollback(run_id=8)
    assert back.run_id == 8 and registry.moves()[-1] == back
    lines = registry.log_path.read_text().splitlines()
    edited = json.loads(lines[0]) | {"run_id": 9}  # the signature covers it
    registry.log_path.write_text("\n".join([json.dumps(edited), *lines[1:]]) + "\n")
    assert [m.run_id for m in registry.moves()] == [None, 8]
    assert registry.unsigned_moves() == 1


def test_log_lines_from_before_run_ids_still_load(registry: Registry) -> None:
    v1 = add_version(registry)
    old = {
        "time": "2024-01-01T00:00:00.000000Z",
        "action": "promote",
        "from_version": None,
        "to_version": v1,
        "reason": "run 3: no production model yet",
        "from_f1": None,
        "to_f1": 0.5,
    }
    wrong = old | {"time": "2024-01-02T00:00:00.000000Z", "run_id": "3"}
    with registry.log_path.open("w") as handle:
        for body in (old, wrong):
            handle.write(json.dumps(registry.keyring.sign(body)) + "\n")
    assert registry.moves() == [Move(**old)]
    assert registry.moves()[0].run_id is None
    assert registry.unsigned_moves() == 1  # a run id that is not a number is no move


def test_writers_at_once_never_share_a_version_id(registry: Registry) -> None:
    with ThreadPoolExecutor(max_workers=6) as pool:
        ids = list(pool.map(lambda s: add_version(Registry(registry.folder), seed=s), range(6)))
    assert sorted(ids) == [f"v{i:04d}" for i in range(1, 7)]
    for version, seed in zip(ids, range(6), strict=True):
        fitted = tiny_pipeline(seed).named_steps["model"]
        assert registry.model(version).coef.tolist() == fitted.coef_.tolist()
        assert registry.card(version).id == version
    assert not [p for p in registry.versions_folder.iterdir() if p.name.startswith(".")]
