"""Model registry: immutable versions with model cards, a production pointer and its log.

Layout of ``output_model_path``::

    versions/<id>/model.json   the data-only model Beryl serves and scores with (signed)
    versions/<id>/model.pkl    the fitted pipeline as a pickle (original layout; never loaded)
    versions/<id>/card.json    the model card (sha256 of model.pkl, metrics, provenance)
    production.json            the pointer: which version is in production (signed)
    promotions.jsonl           append-only log of every pointer move (each line signed)
    trainedmodel.pkl           copy of the latest trained model (original layout)
    latestscore.txt            F1 of the latest scored model (original layout)

Promotion and rollback only move the pointer. Beryl never unpickles: it loads ``model.json``,
whose signature (``beryl.signing``, a key kept outside the workspace) covers everything that
changes an answer, and the version id it belongs to; a pointer or log line without a valid
signature is refused.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

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
from beryl.errors import IntegrityError, ModelError, ModelNotFoundError, TrainingError
from beryl.linear import LinearModel, NotLinearError
from beryl.schema import Schema
from beryl.signing import Keyring, default_keyring

MODEL_FILE = "model.pkl"
DATA_MODEL_FILE = "model.json"
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
    """Model versions in ``output_model_path`` and the production pointer.

    ``keyring`` signs and checks the data-only models, the pointer and the log; by default the
    key the environment names (``beryl.signing``).
    """

    def __init__(self, folder: Path, keyring: Keyring | None = None) -> None:
        self.folder = folder
        self._keyring = keyring

    @property
    def keyring(self) -> Keyring:
        if self._keyring is None:
            self._keyring = default_keyring()
            self._keyring.check_outside(self.folder)
        return self._keyring

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

    def create(self, pipeline: Any, card: ModelCard, *, latest: bool = True) -> ModelCard:
        """Store a fitted pipeline as a new immutable version; returns its card with the new id.

        The version holds the pipeline's data-only form (signed; what Beryl loads) and its
        pickle (the original layout's artifact).
        """
        try:
            model = LinearModel.from_pipeline(pipeline, Schema.from_dict(card.schema))
        except NotLinearError as exc:
            raise TrainingError(f"the fitted model cannot be stored as data: {exc}") from exc
        payload = pickle.dumps(pipeline, protocol=pickle.HIGHEST_PROTOCOL)
        card.model_sha256 = sha256_bytes(payload)
        self.versions_folder.mkdir(parents=True, exist_ok=True)
        staging = self.versions_folder / f".staging-{os.getpid()}-{utc_now().replace(':', '')}"
        staging.mkdir()
        try:
            (staging / MODEL_FILE).write_bytes(payload)
            while True:
                existing = [int(v[1:]) for v in self._all_version_dirs()]
                card.id = f"v{(max(existing) + 1) if existing else 1:04d}"
                (staging / DATA_MODEL_FILE).write_text(
                    json.dumps(self._signed_model(card, model), indent=1) + "\n"
                )
                (staging / CARD_FILE).write_text(json.dumps(card.to_dict(), indent=2) + "\n")
                for name in (MODEL_FILE, DATA_MODEL_FILE, CARD_FILE):
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

    def _signed_model(self, card: ModelCard, model: LinearModel) -> dict[str, Any]:
        """What ``model.json`` holds: the model bound to its version id and its pickle."""
        return self.keyring.sign(
            {"version": card.id, "model_sha256": card.model_sha256, "model": model.to_dict()}
        )

    def repair(self) -> list[str]:
        """After a crash: remove half-written versions and temporary files (under the lock)."""
        repaired = []
        if remove_stale_temporaries(self.folder):
            repaired.append(f"removed temporary files in {self.folder}")
        moves = self.moves()
        try:
            current = self.production()
        except IntegrityError:
            current = None  # a damaged pointer: restored from the log below
        if moves and moves[-1].to_version != current and self.verify(moves[-1].to_version):
            last = moves[-1]
            self._write_pointer(last.to_version, last.time)
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
        """The pickle of a version (the original layout's artifact; Beryl never loads it)."""
        return self.version_folder(version) / MODEL_FILE

    def data_model_path(self, version: str) -> Path:
        return self.version_folder(version) / DATA_MODEL_FILE

    def model(self, version: str) -> LinearModel:
        """A version's data-only model, after checking its signature; never unpickles."""
        return self._signed(version)[0]

    def pipeline(self, version: str) -> Any:
        """A version's scikit-learn pipeline, for exporting it to other tools: unpickled only
        after the pickle matches the sha256 its signed model file names. Beryl itself serves,
        predicts and scores with ``model``."""
        path = self.model_path(version)
        _, sha256 = self._signed(version)
        try:
            payload = path.read_bytes()
        except FileNotFoundError as exc:
            raise IntegrityError(f"model file {path} is missing") from exc
        digest = sha256_bytes(payload)
        if digest != sha256:
            raise IntegrityError(
                f"model file {path} does not match its signed model file "
                f"(sha256 {digest[:12]}… ≠ {sha256[:12]}…); refusing to load it",
                hint="the file was changed after training; retrain or restore it",
            )
        return pickle.loads(payload)

    def _signed(self, version: str) -> tuple[LinearModel, str]:
        """The verified data-only model of a version and the sha256 of its pickle."""
        card = self.card(version)
        path = self.data_model_path(version)
        try:
            data = read_json(path)
        except FileNotFoundError as exc:
            raise IntegrityError(
                f"model file {path} is missing",
                hint="a version made by an older Beryl: `beryl models sign --all` makes it "
                "from the pickle (only for a models folder you trust), or retrain",
            ) from exc
        except (OSError, ValueError) as exc:
            raise IntegrityError(f"model file {path} is unreadable: {exc}") from exc
        body = self.keyring.verify(data, str(path))
        if body.get("version") != version:
            raise IntegrityError(
                f"model file {path} belongs to version {body.get('version')!r}, not {version}",
                hint="a model file was copied between versions; restore it or retrain",
            )
        try:
            model = LinearModel.from_dict(body.get("model"))
        except NotLinearError as exc:
            raise IntegrityError(f"model file {path} holds no valid model: {exc}") from exc
        if card.schema != model.schema.to_dict() or list(card.classes) != list(model.classes):
            raise IntegrityError(
                f"model card {path.parent / CARD_FILE} disagrees with its signed model file "
                "(schema or classes changed); refusing to load it",
                hint="restore card.json, or retrain",
            )
        return model, str(body.get("model_sha256", ""))

    def verify(self, version: str) -> bool:
        """The version's signed data-only model holds, and so does its pickle (which goes to
        ``prod_deployment_path`` for the original layout)."""
        try:
            _, sha256 = self._signed(version)
            path = self.model_path(version)
            return path.is_file() and sha256_file(path) == sha256
        except IntegrityError:
            return False

    def sign(self, version: str) -> Literal["signed", "already signed"]:
        """Make a version's signed data-only model from its pickle (a version an older Beryl
        made). This unpickles the file: run it only on a models folder you trust."""
        card = self.card(version)
        path = self.data_model_path(version)
        if path.exists() and self.verify(version):
            return "already signed"
        pickled = self.model_path(version)
        try:
            payload = pickled.read_bytes()
        except OSError as exc:
            raise IntegrityError(f"cannot read {pickled}: {exc.strerror}") from exc
        if sha256_bytes(payload) != card.model_sha256:
            raise IntegrityError(
                f"model file {pickled} does not match its model card; refusing to sign it",
                hint="the file was changed after training; retrain",
            )
        pipeline = pickle.loads(payload)  # the user vouched for this folder
        try:
            model = LinearModel.from_pipeline(pipeline, Schema.from_dict(card.schema))
        except NotLinearError as exc:
            raise IntegrityError(f"{pickled} is not a model Beryl can serve: {exc}") from exc
        atomic_write_json(path, self._signed_model(card, model))
        return "signed"

    def sign_records(self) -> list[str]:
        """Re-sign the pointer and every log line with this key (after ``sign``)."""
        done = []
        raw = self._raw_log()
        if raw:
            lines = [json.dumps(self.keyring.sign(entry)) for entry, _ in raw]
            atomic_write_bytes(self.log_path, "".join(line + "\n" for line in lines).encode())
            done.append(f"signed {len(lines)} line(s) of {self.log_path.name}")
        if self.pointer_path.exists():
            try:
                pointer = read_json(self.pointer_path)
                version = str(pointer["version"])
            except (OSError, ValueError, KeyError, TypeError) as exc:
                raise IntegrityError(f"{self.pointer_path} is unreadable: {exc}") from exc
            self._write_pointer(version, str(pointer.get("since", utc_now())))
            done.append(f"signed {self.pointer_path.name} ({version})")
        return done

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
        try:
            data = read_json(self.pointer_path)
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise IntegrityError(
                f"production pointer {self.pointer_path} is unreadable: {exc}"
            ) from exc
        body = self.keyring.verify(data, str(self.pointer_path))
        version = body.get("version")
        if not isinstance(version, str) or not _VERSION_RE.match(version):
            raise IntegrityError(f"production pointer {self.pointer_path} names no version")
        return version

    def _write_pointer(self, version: str, since: str) -> None:
        atomic_write_json(
            self.pointer_path, self.keyring.sign({"version": version, "since": since})
        )

    def require_production(self) -> str:
        version = self.production()
        if version is None:
            raise ModelNotFoundError(
                "no model is in production yet", hint="run `beryl deploy` (or `beryl run`)"
            )
        return version

    def moves(self) -> list[Move]:
        """The logged moves whose signature holds (a torn or foreign line is not a move)."""
        moves = []
        for entry, _ in self._raw_log():
            try:
                moves.append(Move(**self.keyring.verify(entry, str(self.log_path))))
            except (IntegrityError, TypeError):
                continue
        return moves

    def unsigned_moves(self) -> int:
        """How many complete log lines lack a valid signature (shown by ``repair``)."""
        return len(self._raw_log()) - len(self.moves())

    def _raw_log(self) -> list[tuple[dict[str, Any], int]]:
        """Every complete JSON object line of the log, with its line number."""
        try:
            text = self.log_path.read_bytes().decode("utf-8", errors="replace")
        except FileNotFoundError:
            return []
        entries = []
        for number, line in enumerate(text.splitlines(), start=1):
            if line.strip():
                try:
                    entry = json.loads(line)
                except ValueError:
                    continue  # a line torn by a crash mid-append
                if isinstance(entry, dict):
                    entries.append((entry, number))
        return entries

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
                f"model files of {to_version} do not match their signature; it cannot go to "
                "production",
                hint="retrain, or restore the original files",
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
        append_line(self.log_path, json.dumps(self.keyring.sign(asdict(move))))
        self._write_pointer(to_version, move.time)
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
