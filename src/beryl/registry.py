"""Model registry: immutable versions with model cards, a production pointer and its log.

Layout of ``output_model_path``::

    versions/<id>/model.pkl    the fitted pipeline (pickle)
    versions/<id>/card.json    the model card (sha256 of model.pkl, metrics, provenance)
    production.json            the pointer: which version is in production
    promotions.jsonl           append-only log of every pointer move
    trainedmodel.pkl           copy of the latest trained model (original layout)
    latestscore.txt            F1 of the latest scored model (original layout)

Promotion and rollback only move the pointer. A model file is unpickled only after its sha256
matches the card.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from beryl._io import (
    append_line,
    atomic_write_bytes,
    atomic_write_json,
    fsync_dir,
    read_json,
    remove_stale_temporaries,
    sha256_bytes,
    sha256_file,
    utc_now,
)
from beryl.errors import IntegrityError, ModelError, ModelNotFoundError

MODEL_FILE = "model.pkl"
CARD_FILE = "card.json"
POINTER_FILE = "production.json"
LOG_FILE = "promotions.jsonl"
LATEST_MODEL_FILE = "trainedmodel.pkl"
LATEST_SCORE_FILE = "latestscore.txt"
_VERSION_RE = re.compile(r"^v(\d{4,})$")


@dataclass
class ModelCard:
    """Everything known about one model version."""

    id: str
    created: str
    schema: dict[str, Any]
    parameters: dict[str, Any]
    classes: list[Any]
    training: dict[str, Any]
    libraries: dict[str, str]
    model_sha256: str = ""
    metrics: dict[str, Any] = field(default_factory=dict)
    decision: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelCard:
        return cls(**data)

    @property
    def f1(self) -> float | None:
        value = self.metrics.get("f1")
        return float(value) if value is not None else None


@dataclass(frozen=True)
class Move:
    """One entry of the promotion log."""

    time: str
    action: str
    from_version: str | None
    to_version: str
    reason: str
    from_f1: float | None = None
    to_f1: float | None = None


class Registry:
    """Model versions in ``output_model_path`` and the production pointer."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    @property
    def versions_folder(self) -> Path:
        return self.folder / "versions"

    def version_folder(self, version: str) -> Path:
        if not _VERSION_RE.match(version):
            raise ModelNotFoundError(
                f"{version!r} is not a model version id",
                hint="ids look like v0001; see `beryl models list`",
            )
        return self.versions_folder / version

    # -- versions -----------------------------------------------------------------------------
    def ids(self) -> list[str]:
        if not self.versions_folder.is_dir():
            return []
        found = [
            p.name
            for p in self.versions_folder.iterdir()
            if _VERSION_RE.match(p.name) and (p / CARD_FILE).exists()
        ]
        return sorted(found, key=lambda v: int(v[1:]))

    def cards(self) -> list[ModelCard]:
        return [self.card(v) for v in self.ids()]

    def card(self, version: str) -> ModelCard:
        path = self.version_folder(version) / CARD_FILE
        try:
            return ModelCard.from_dict(read_json(path))
        except FileNotFoundError as exc:
            raise ModelNotFoundError(
                f"no model version {version} in {self.versions_folder}",
                hint="see `beryl models list`",
            ) from exc
        except (ValueError, TypeError) as exc:
            raise ModelError(f"model card {path} is unreadable: {exc}") from exc

    def latest(self) -> str:
        ids = self.ids()
        if not ids:
            raise ModelNotFoundError(
                f"no trained model in {self.folder}", hint="run `beryl train` first"
            )
        return ids[-1]

    def create(self, model: Any, card: ModelCard, *, latest: bool = True) -> ModelCard:
        """Store a fitted model as a new immutable version; returns its card with the new id."""
        payload = pickle.dumps(model, protocol=pickle.HIGHEST_PROTOCOL)
        card.model_sha256 = sha256_bytes(payload)
        self.versions_folder.mkdir(parents=True, exist_ok=True)
        staging = self.versions_folder / f".staging-{os.getpid()}-{utc_now().replace(':', '')}"
        staging.mkdir()
        try:
            (staging / MODEL_FILE).write_bytes(payload)
            while True:
                existing = [int(v[1:]) for v in self._all_version_dirs()]
                card.id = f"v{(max(existing) + 1) if existing else 1:04d}"
                (staging / CARD_FILE).write_text(json.dumps(card.to_dict(), indent=2) + "\n")
                for name in (MODEL_FILE, CARD_FILE):
                    with (staging / name).open("rb") as handle:
                        os.fsync(handle.fileno())
                try:
                    staging.rename(self.versions_folder / card.id)
                except OSError:  # another writer took this id first: take the next one
                    continue
                break
            fsync_dir(self.versions_folder)
        finally:
            if staging.exists():
                for leftover in staging.iterdir():
                    leftover.unlink()
                staging.rmdir()
        if latest:
            atomic_write_bytes(self.folder / LATEST_MODEL_FILE, payload)
        return card

    def repair(self) -> list[str]:
        """After a crash: remove half-written versions and temporary files (under the lock)."""
        repaired = []
        if remove_stale_temporaries(self.folder):
            repaired.append(f"removed temporary files in {self.folder}")
        moves = self.moves()
        if (
            moves
            and moves[-1].to_version != self.production()
            and self.verify(moves[-1].to_version)
        ):
            last = moves[-1]
            atomic_write_json(self.pointer_path, {"version": last.to_version, "since": last.time})
            repaired.append(f"finished the logged {last.action} to {last.to_version}")
        if self.versions_folder.is_dir():
            for staging in self.versions_folder.glob(".staging-*"):
                shutil.rmtree(staging, ignore_errors=True)
                repaired.append(f"removed unfinished version {staging.name}")
            for version in self._all_version_dirs():
                if remove_stale_temporaries(self.versions_folder / version):
                    repaired.append(f"removed temporary files in {version}")
        return repaired

    def _all_version_dirs(self) -> list[str]:
        if not self.versions_folder.is_dir():
            return []
        return [p.name for p in self.versions_folder.iterdir() if _VERSION_RE.match(p.name)]

    def model_path(self, version: str) -> Path:
        return self.version_folder(version) / MODEL_FILE

    def load(self, version: str) -> Any:
        """Unpickle a version's model, after checking its sha256 against the card."""
        card = self.card(version)
        path = self.model_path(version)
        try:
            payload = path.read_bytes()
        except FileNotFoundError as exc:
            raise IntegrityError(f"model file {path} is missing") from exc
        digest = sha256_bytes(payload)
        if digest != card.model_sha256:
            raise IntegrityError(
                f"model file {path} does not match its model card "
                f"(sha256 {digest[:12]}… ≠ {card.model_sha256[:12]}…); refusing to load it",
                hint="the file was changed after training; retrain or restore it",
            )
        return pickle.loads(payload)

    def verify(self, version: str) -> bool:
        card = self.card(version)
        path = self.model_path(version)
        return path.exists() and sha256_file(path) == card.model_sha256

    def record_decision(self, version: str, decision: dict[str, Any]) -> ModelCard:
        """Record what a pass decided about a candidate (promoted or kept, and why)."""
        return self._update_card(version, decision=decision)

    def record_metrics(self, version: str, metrics: dict[str, Any]) -> ModelCard:
        """Attach evaluation metrics to a version's card (the model itself never changes)."""
        return self._update_card(version, metrics=metrics)

    def _update_card(self, version: str, **fields: dict[str, Any]) -> ModelCard:
        """Rewrite a card's evaluation fields atomically; the model file never changes."""
        card = self.card(version)
        for name, value in fields.items():
            setattr(card, name, value)
        atomic_write_json(self.version_folder(version) / CARD_FILE, card.to_dict())
        return card

    # -- production pointer ---------------------------------------------------------------------
    @property
    def pointer_path(self) -> Path:
        return self.folder / POINTER_FILE

    @property
    def log_path(self) -> Path:
        return self.folder / LOG_FILE

    def production(self) -> str | None:
        """The production version id, or None before the first promotion."""
        if not self.pointer_path.exists():
            return None
        return str(read_json(self.pointer_path)["version"])

    def require_production(self) -> str:
        version = self.production()
        if version is None:
            raise ModelNotFoundError(
                "no model is in production yet", hint="run `beryl deploy` (or `beryl run`)"
            )
        return version

    def moves(self) -> list[Move]:
        if not self.log_path.exists():
            return []
        moves = []
        for line in self.log_path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                try:
                    moves.append(Move(**json.loads(line)))
                except (ValueError, TypeError):
                    continue  # a line torn by a crash mid-append is not a move
        return moves

    def _move(
        self,
        action: str,
        to_version: str,
        reason: str,
        scores: tuple[float | None, float | None] | None = None,
    ) -> Move:
        self.card(to_version)
        if not self.verify(to_version):
            raise IntegrityError(
                f"model file of {to_version} does not match its model card; it cannot go to "
                "production",
                hint="retrain, or restore the original file",
            )
        current = self.production()
        if current == to_version:
            raise ModelError(
                f"{to_version} is already in production",
                hint="nothing to do; see `beryl models list`",
            )
        if scores is None:
            scores = (self.card(current).f1 if current else None, self.card(to_version).f1)
        move = Move(
            time=utc_now(),
            action=action,
            from_version=current,
            to_version=to_version,
            reason=reason,
            from_f1=scores[0],
            to_f1=scores[1],
        )
        # The log line first: a move that is logged but not yet on the pointer is finished by
        # ``repair`` (roll forward); a pointer that moved without its log line cannot happen.
        append_line(self.log_path, json.dumps(asdict(move)))
        atomic_write_json(self.pointer_path, {"version": to_version, "since": move.time})
        return move

    def promote(
        self,
        version: str,
        reason: str = "promoted by hand",
        scores: tuple[float | None, float | None] | None = None,
    ) -> Move:
        """Point production at ``version`` and log the move.

        ``scores`` (production's F1, the candidate's F1) are the figures the decision compared;
        by default each card's recorded F1.
        """
        return self._move("promote", version, reason, scores)

    def rollback(self, reason: str = "rolled back by hand") -> Move:
        """Point production back at the version it replaced."""
        current = self.require_production()
        for move in reversed(self.moves()):
            if (
                move.action == "promote"
                and move.to_version == current
                and move.from_version not in (None, current)
            ):
                return self._move("rollback", move.from_version, reason)
        raise ModelNotFoundError(f"{current} has no earlier production version to roll back to")
