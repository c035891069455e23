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
whose signature (``beryl.model.signing``, a key kept outside the workspace) covers everything that
changes an answer, and the version id it belongs to; a pointer or log line without a valid
signature is refused.

Damage stays local: a version whose card cannot be read is left out of ``ids`` and ``cards``
(``damaged`` names it and why), a log line that is not a valid move is skipped, and a damaged
pointer is restored from the log by ``repair``. Reading never writes, not even a new key.
"""

from __future__ import annotations

import json
import os
import pickle
import re
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
from beryl.data.schema import Schema
from beryl.errors import (
    IntegrityError,
    ModelError,
    ModelNotFoundError,
    StateError,
    TrainingError,
    describe_os_error,
)
from beryl.model.linear import LinearModel, NotLinearError
from beryl.model.signing import KEY_ENV, KEY_FILE_ENV, Keyring, default_key_path, default_keyring
from beryl.recovery import Aside

MODEL_FILE = "model.pkl"
DATA_MODEL_FILE = "model.json"
CARD_FILE = "card.json"
POINTER_FILE = "production.json"
LOG_FILE = "promotions.jsonl"
LATEST_MODEL_FILE = "trainedmodel.pkl"
LATEST_SCORE_FILE = "latestscore.txt"
_VERSION_RE = re.compile(r"^v(\d{4,})$")
_CARD_HINT = "restore it from a backup; until then this version cannot be used (the others can)"


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
    def from_dict(cls, data: Any) -> ModelCard:
        """The card ``data`` describes; TypeError or ValueError when it is not one."""
        if not isinstance(data, dict):
            raise TypeError("not a JSON object")
        card = cls(**data)
        for name, kind in _CARD_FIELDS:
            if not isinstance(getattr(card, name), kind):
                raise TypeError(f"{name} is not a {kind.__name__}")
        f1 = card.metrics.get("f1")
        if f1 is not None and (isinstance(f1, bool) or not isinstance(f1, int | float)):
            raise ValueError(f"metrics.f1 {f1!r} is not a number")
        return card

    @property
    def f1(self) -> float | None:
        value = self.metrics.get("f1")
        return float(value) if value is not None else None


_CARD_FIELDS: tuple[tuple[str, type], ...] = (
    ("id", str),
    ("created", str),
    ("schema", dict),
    ("parameters", dict),
    ("classes", list),
    ("training", dict),
    ("libraries", dict),
    ("model_sha256", str),
    ("metrics", dict),
    ("decision", dict),
)


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
    key the environment names (``beryl.model.signing``).
    """

    def __init__(self, folder: Path, keyring: Keyring | None = None) -> None:
        self.folder = folder
        self._keyring = keyring
        # set by ``repair`` when the pointer is damaged beyond what the log restores: this
        # registry then reports no production, so the rest of the repair goes on
        self._left_for_the_user: IntegrityError | None = None

    @property
    def keyring(self) -> Keyring:
        """The key that signs (the default key file is made on first use)."""
        if self._keyring is None:
            self._keyring = default_keyring()
            self._keyring.check_outside(self.folder)
        return self._keyring

    def _checking_key(self, where: Path) -> Keyring:
        """The key that checks ``where``'s signature: never made here (reading writes nothing,
        and a key made now could check nothing signed before)."""
        if self._keyring is None and not _a_key_exists():
            raise IntegrityError(
                f"{where} is signed, but there is no signing key "
                f"({default_key_path(os.environ)} does not exist and neither ${KEY_ENV} nor "
                f"${KEY_FILE_ENV} is set)",
                hint="give Beryl the key this models folder was signed with",
            )
        return self.keyring

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
        """The versions that can be used, oldest first (``damaged`` lists the others)."""
        return [card.id for card in self.cards()]

    def cards(self) -> list[ModelCard]:
        """The card of every version that has a readable one, oldest first."""
        cards = []
        for version in self._all_version_dirs():
            if (self.versions_folder / version / CARD_FILE).exists():
                try:
                    cards.append(self.card(version))
                except ModelError:
                    continue  # see ``damaged``
        return cards

    def damaged(self) -> dict[str, str]:
        """Versions that cannot be used because their card is missing or unreadable, each
        with the reason (naming the file)."""
        found = {}
        for version in self._all_version_dirs():
            folder = self.versions_folder / version
            if not (folder / CARD_FILE).exists():
                if (folder / DATA_MODEL_FILE).exists() or (folder / MODEL_FILE).exists():
                    found[version] = f"model card {folder / CARD_FILE} is missing"
                continue
            try:
                self.card(version)
            except ModelError as exc:
                found[version] = exc.message
        return found

    def card(self, version: str) -> ModelCard:
        folder = self.version_folder(version)
        path = folder / CARD_FILE
        try:
            data = read_json(path)
        except FileNotFoundError as exc:
            if (folder / DATA_MODEL_FILE).exists() or (folder / MODEL_FILE).exists():
                raise ModelError(f"model card {path} is missing", hint=_CARD_HINT) from exc
            raise ModelNotFoundError(
                f"no model version {version} in {self.versions_folder}",
                hint="see `beryl models list`",
            ) from exc
        except ValueError as exc:  # not JSON, or not UTF-8
            raise ModelError(f"model card {path} is unreadable: {exc}", hint=_CARD_HINT) from exc
        except OSError as exc:
            raise _unavailable(path, exc) from exc
        try:
            card = ModelCard.from_dict(data)
        except (TypeError, ValueError) as exc:
            raise ModelError(f"model card {path} is unreadable: {exc}", hint=_CARD_HINT) from exc
        if card.id != version:
            raise ModelError(
                f"model card {path} is unreadable: it describes {card.id!r}, not {version}",
                hint=_CARD_HINT,
            )
        return card

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
        """After a crash or damage (under the workspace lock): move unfinished versions to
        ``.recovered/``, take unreadable lines out of the log (kept there too), and finish a
        logged move or restore a damaged pointer from the log.

        A damaged pointer the log cannot restore is left for the user: ``production`` (of any
        other ``Registry``) names both files and ``beryl models promote V``, while this one
        reports no production, so that the repairs after this one (the deployment, the
        records) go on, and a command that does not need production is not refused. Returns
        what was repaired.
        """
        aside = Aside(self.folder)
        try:
            return self._repair(aside)
        except OSError as exc:
            message, hint = describe_os_error(exc)
            raise StateError(f"cannot repair the models folder: {message}", hint=hint) from exc

    def _repair(self, aside: Aside) -> list[str]:
        repaired = []
        if remove_stale_temporaries(self.folder):
            repaired.append(f"removed temporary files in {self.folder}")
        if self.versions_folder.is_dir():
            for staging in sorted(self.versions_folder.glob(".staging-*")):
                moved = aside.move(staging)
                repaired.append(f"moved unfinished version {staging.name} to {aside.shown(moved)}")
            for version in self._all_version_dirs():
                if remove_stale_temporaries(self.versions_folder / version):
                    repaired.append(f"removed temporary files in {version}")
        repaired += self._repair_log(aside)
        repaired += self._repair_pointer(aside)
        return repaired

    def _repair_log(self, aside: Aside) -> list[str]:
        """Move lines that are not JSON objects (torn, garbage, not UTF-8) out of the log, into
        the recovery folder; count the lines that are objects but no usable move."""
        try:
            data = self.log_path.read_bytes()
        except FileNotFoundError:
            return []
        kept: list[bytes] = []
        cut: list[bytes] = []
        for line in data.split(b"\n"):
            if line.strip():
                (kept if _log_entry(line) is not None else cut).append(line)
        repaired = []
        if cut:
            saved = aside.keep(LOG_FILE, b"".join(line + b"\n" for line in cut))
            atomic_write_bytes(self.log_path, b"".join(line + b"\n" for line in kept))
            repaired.append(
                f"moved {len(cut)} unreadable line(s) of {LOG_FILE} to {aside.shown(saved)}"
            )
        skipped = len(kept) - len(self.moves())
        if skipped:
            repaired.append(
                f"skipped {skipped} line(s) of {LOG_FILE} that are not signed with this key or "
                "name a version that is not here (they move nothing)"
            )
        return repaired

    def _repair_pointer(self, aside: Aside) -> list[str]:
        """Finish a logged move the pointer missed, or restore a damaged pointer from the log."""
        moves = self.moves()
        try:
            pointer, damage = self._pointer(), None
        except IntegrityError as exc:
            pointer, damage = None, exc
        if damage is None:
            last = moves[-1] if moves else None
            current, since = pointer if pointer else (None, None)
            # a move logged after the pointer was written (killed in between); a log that
            # lost lines is behind the pointer, and is never followed back
            ahead = last is not None and (since is None or last.time > since)
            if last and ahead and last.to_version != current and self.verify(last.to_version):
                self._write_pointer(last.to_version, last.time)
                return [f"finished the logged {last.action} to {last.to_version}"]
            return []
        restore = self._restorable(moves)
        if restore is None:  # the user chooses; every other Registry says so (``production``)
            self._left_for_the_user = damage
            return []
        kept = aside.keep(POINTER_FILE, self.pointer_path.read_bytes())
        self._write_pointer(restore.to_version, restore.time)
        return [
            f"restored {POINTER_FILE} from {LOG_FILE}: {restore.to_version} ({damage.message}; "
            f"the damaged file is in {aside.shown(kept)})"
        ]

    def _restorable(self, moves: list[Move]) -> Move | None:
        """The last logged move to a version that is here and intact."""
        return next((m for m in reversed(moves) if self.verify(m.to_version)), None)

    def _all_version_dirs(self) -> list[str]:
        """Every folder named like a version, usable or not, oldest first."""
        if not self.versions_folder.is_dir():
            return []
        found = [p.name for p in self.versions_folder.iterdir() if _VERSION_RE.match(p.name)]
        return sorted(found, key=lambda v: int(v[1:]))

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
        body = self._checking_key(path).verify(data, str(path))
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
        ``prod_deployment_path`` for the original layout). False for a version that is not
        here or whose card is damaged."""
        try:
            _, sha256 = self._signed(version)
            path = self.model_path(version)
            return path.is_file() and sha256_file(path) == sha256
        except (ModelError, OSError):
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
        """The production version id, or None before the first promotion.

        A damaged pointer (unreadable, unsigned, naming no version or one that is not here) is
        an ``IntegrityError`` naming it and what restores it.
        """
        if self._left_for_the_user is not None:
            return None  # the repair found it damaged and left it for the user
        pointer = self._pointer()
        return pointer[0] if pointer else None

    def _pointer(self) -> tuple[str, str | None] | None:
        """The pointer's version and the time of the move that wrote it (``production``)."""
        path = self.pointer_path
        try:
            data = read_json(path)
        except FileNotFoundError:
            return None
        except ValueError as exc:  # not JSON, or not UTF-8
            raise self._damaged_pointer(f"production pointer {path} is unreadable: {exc}") from exc
        except OSError as exc:
            raise _unavailable(path, exc) from exc
        try:
            body = self._checking_key(path).verify(data, str(path))
        except IntegrityError as exc:
            raise self._damaged_pointer(exc.message, exc.hint) from exc
        version = body.get("version")
        if not isinstance(version, str) or not _VERSION_RE.match(version):
            raise self._damaged_pointer(f"production pointer {path} names no version")
        if not (self.versions_folder / version).is_dir():
            raise self._damaged_pointer(
                f"production pointer {path} names {version}, which is not in {self.versions_folder}"
            )
        since = body.get("since")
        return version, since if isinstance(since, str) else None

    def _damaged_pointer(self, message: str, hint: str | None = None) -> IntegrityError:
        """What a damaged pointer is reported as: restored by the next repair when the log
        allows it, else the user chooses (``beryl models promote``)."""
        if self._restorable(self.moves()) is not None:
            restore = (
                f"the next `beryl run` (or any command that changes the workspace) restores "
                f"it from {self.log_path}"
            )
        else:
            restore = (
                f"{self.log_path} holds no move to restore it from: put a version into "
                "production with `beryl models promote V` (`beryl models list` shows them)"
            )
        return IntegrityError(message, hint=f"{hint}; or {restore}" if hint else restore)

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
        """The logged moves: lines whose signature holds, shaped as a move to a version that is
        here (a torn, foreign or garbage line, or a move to a version that is gone, is none)."""
        entries = self._raw_log()
        if not entries:
            return []
        try:
            keyring = self._checking_key(self.log_path)
        except IntegrityError:
            return []
        moves = []
        for entry, _ in entries:
            try:
                move = Move(**keyring.verify(entry, str(self.log_path)))
            except (IntegrityError, TypeError):
                continue
            if _well_formed(move) and (self.versions_folder / move.to_version).is_dir():
                moves.append(move)
        return moves

    def unsigned_moves(self) -> int:
        """How many complete log lines are no usable move (counted by ``repair``)."""
        return len(self._raw_log()) - len(self.moves())

    def _raw_log(self) -> list[tuple[dict[str, Any], int]]:
        """Every JSON object line of the log, with its line number (a line torn by a crash
        mid-append, or garbage, is none)."""
        try:
            data = self.log_path.read_bytes()
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise _unavailable(self.log_path, exc) from exc
        entries = []
        for number, line in enumerate(data.split(b"\n"), start=1):
            entry = _log_entry(line) if line.strip() else None
            if entry is not None:
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
        try:
            current = self.production()
        except IntegrityError:  # a damaged pointer: this move replaces it (a copy is kept)
            current = None
            Aside(self.folder).keep(POINTER_FILE, self.pointer_path.read_bytes())
        if current == to_version:
            raise ModelError(
                f"{to_version} is already in production",
                hint="nothing to do; see `beryl models list`",
            )
        if scores is None:
            scores = (self._f1(current), self.card(to_version).f1)
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

    def _f1(self, version: str | None) -> float | None:
        """A version's recorded F1; None when there is none or its card cannot be read."""
        if version is None:
            return None
        try:
            return self.card(version).f1
        except ModelError:
            return None

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


def _log_entry(line: bytes) -> dict[str, Any] | None:
    """A log line as a JSON object, or None (torn, garbage, not UTF-8)."""
    try:
        entry = json.loads(line.decode("utf-8"))
    except ValueError:  # UnicodeDecodeError is one
        return None
    return entry if isinstance(entry, dict) else None


def _well_formed(move: Move) -> bool:
    def f1(value: Any) -> bool:
        return value is None or (isinstance(value, int | float) and not isinstance(value, bool))

    return (
        all(isinstance(v, str) for v in (move.time, move.action, move.reason, move.to_version))
        and bool(_VERSION_RE.match(move.to_version))
        and (move.from_version is None or isinstance(move.from_version, str))
        and f1(move.from_f1)
        and f1(move.to_f1)
    )


def _a_key_exists() -> bool:
    """Whether the environment names a key, or the default key file exists."""
    if os.environ.get(KEY_ENV) or os.environ.get(KEY_FILE_ENV):
        return True
    return default_key_path(os.environ).exists()


def _unavailable(path: Path, exc: OSError) -> StateError:
    message, hint = describe_os_error(exc, path)
    return StateError(f"cannot read {path}: {message}", hint=hint)
