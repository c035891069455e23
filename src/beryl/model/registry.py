"""Model registry: immutable versions with model cards, a production pointer and its log.

Layout of ``output_model_path``::

    versions/<id>/model.json   the data-only model Beryl serves and scores with (signed)
    versions/<id>/model.pkl    the fitted pipeline as a pickle (original layout; never loaded)
    versions/<id>/card.json    the model card (sha256 of model.pkl, metrics, provenance)
    production.json            the pointer: which version is in production (signed)
    promotions.jsonl           append-only log of every pointer move (each line signed)
    trainedmodel.pkl           copy of the latest trained model (original layout)
    latestscore.txt            F1 of the latest scored model (original layout)

Promotion and rollback only move the pointer (``beryl.model.pointer``: a compare-and-swap on the
registry's ``Storage``, so two processes cannot both move it). Beryl never unpickles: it loads
``model.json``, whose signature (``beryl.model.signing``, a key kept outside the workspace)
covers everything that changes an answer, and the version id it belongs to; a pointer or log
line without a valid signature is refused.

On object storage (``storage`` another than the folder, e.g. ``beryl.objectstore.S3Storage``)
the same keys live in the bucket, a version is written create-only with its card last, and
model files are downloaded into a local cache (``beryl.model.registry_objects``);
``trainedmodel.pkl`` and ``latestscore.txt`` stay in the folder.

Damage stays local: a version whose card cannot be read is left out of ``ids`` and ``cards``
(``damaged`` names it and why), a log line that is not a valid move is skipped, and a damaged
pointer is restored from the log by ``repair`` (``beryl.model.registry_repair``). Reading never
writes, not even a new key.
"""

from __future__ import annotations

import json
import os
import pickle
import secrets
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from beryl._io import (
    atomic_write_bytes,
    fsync_dir,
    sha256_bytes,
    sha256_file,
)
from beryl.data.schema import Schema
from beryl.errors import (
    IntegrityError,
    ModelError,
    ModelNotFoundError,
    TrainingError,
)
from beryl.model.card import ModelCard
from beryl.model.pointer import LOG_FILE, POINTER_FILE, VERSION_RE, Move, ProductionPointer
from beryl.model.registry_objects import (
    CACHE_FOLDER,
    ModelCache,
    check_model_file,
    create_version,
)
from beryl.model.signing import KEY_ENV, KEY_FILE_ENV, Keyring, default_key_path, default_keyring
from beryl.storage import LocalStorage, Storage

if TYPE_CHECKING:  # the model's module loads pandas: imported where a model is built
    from beryl.model.linear import LinearModel

__all__ = [
    "CARD_FILE",
    "DATA_MODEL_FILE",
    "LATEST_MODEL_FILE",
    "LATEST_SCORE_FILE",
    "LOG_FILE",
    "MODEL_FILE",
    "POINTER_FILE",
    "ModelCard",
    "Move",
    "Registry",
]

MODEL_FILE = "model.pkl"
DATA_MODEL_FILE = "model.json"
CARD_FILE = "card.json"
LATEST_MODEL_FILE = "trainedmodel.pkl"
LATEST_SCORE_FILE = "latestscore.txt"
_CARD_HINT = "restore it from a backup; until then this version cannot be used (the others can)"


class Registry:
    """Model versions in ``output_model_path`` and the production pointer.

    ``keyring`` signs and checks the data-only models, the pointer and the log; by default the
    key the environment names (``beryl.model.signing``). ``storage`` holds the versions, the
    pointer and the log (by default the folder itself, ``beryl.storage.LocalStorage``); on other
    storage, model files are downloaded into ``cache`` (by default ``.registry-cache/`` in the
    folder).
    """

    def __init__(
        self,
        folder: Path,
        keyring: Keyring | None = None,
        *,
        storage: Storage | None = None,
        cache: Path | None = None,
    ) -> None:
        self.folder = folder
        self.storage: Storage = storage if storage is not None else LocalStorage(folder)
        self._keyring = keyring
        self.pointer = ProductionPointer(self)
        # The folder itself, where a version appears by a rename; else object storage.
        self.local = isinstance(self.storage, LocalStorage) and self.storage.root == folder
        self.cache: ModelCache | None = None
        if not self.local:
            self.cache = ModelCache(cache if cache is not None else folder / CACHE_FOLDER)

    def where(self, key: str) -> str:
        """How messages name a registry key: its path, or its URL on object storage."""
        return self.storage.where(key)

    @property
    def keyring(self) -> Keyring:
        """The key that signs (the default key file is made on first use)."""
        if self._keyring is None:
            self._keyring = default_keyring()
            self._keyring.check_outside(self.folder)
        return self._keyring

    def checking_keyring(self, where: Path | str) -> Keyring:
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
        if not VERSION_RE.match(version):
            raise ModelNotFoundError(
                f"{version!r} is not a model version id",
                hint="ids look like v0001; see `beryl models list`",
            )
        return self.versions_folder / version

    def has_version(self, version: str) -> bool:
        """Whether a folder of that id is here (usable or not)."""
        if not self.local:
            return version in self.version_dirs()
        return (self.versions_folder / version).is_dir()

    def version_dirs(self) -> list[str]:
        """Every folder named like a version, usable or not, oldest first."""
        if not self.local:
            parts = (key.split("/") for key in self.storage.keys("versions/"))
            found = list({p[1] for p in parts if len(p) == 3 and VERSION_RE.match(p[1])})
        elif not self.versions_folder.is_dir():
            return []
        else:
            found = [p.name for p in self.versions_folder.iterdir() if VERSION_RE.match(p.name)]
        return sorted(found, key=lambda v: int(v[1:]))

    # -- versions -----------------------------------------------------------------------------
    def ids(self) -> list[str]:
        """The versions that can be used, oldest first (``damaged`` lists the others)."""
        return [card.id for card in self.cards()]

    def cards(self) -> list[ModelCard]:
        """The card of every version that has a readable one, oldest first."""
        cards = []
        for version in self.version_dirs():
            try:
                cards.append(self.card(version))
            except ModelError:
                continue  # no card yet (an empty claim, a writer at work), or see ``damaged``
        return cards

    def damaged(self) -> dict[str, str]:
        """Versions that cannot be used because their card is missing or unreadable, each
        with the reason (naming the file)."""
        found = {}
        for version in self.version_dirs():
            try:
                self.card(version)
            except ModelNotFoundError:
                continue  # an empty folder: no version
            except ModelError as exc:
                found[version] = exc.message
        return found

    def card(self, version: str) -> ModelCard:
        self.version_folder(version)  # a version id, or ModelNotFoundError
        path = self.where(_key(version, CARD_FILE))
        raw = self.storage.read(_key(version, CARD_FILE))
        if raw is None:
            if any(self.storage.exists(_key(version, n)) for n in (DATA_MODEL_FILE, MODEL_FILE)):
                raise ModelError(f"model card {path} is missing", hint=_CARD_HINT)
            raise ModelNotFoundError(
                f"no model version {version} in {self.where('versions')}",
                hint="see `beryl models list`",
            )
        try:
            data = json.loads(raw.decode("utf-8"))
        except ValueError as exc:  # not JSON, or not UTF-8
            raise ModelError(f"model card {path} is unreadable: {exc}", hint=_CARD_HINT) from exc
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

    def create(
        self,
        pipeline: Any,
        card: ModelCard,
        *,
        model: LinearModel | None = None,
        latest: bool = True,
    ) -> ModelCard:
        """Store a fitted pipeline as a new immutable version; returns its card with the new id.

        The version holds the data-only model (signed; what Beryl loads: ``model``, by default
        read from the pipeline) and the pipeline's pickle (the original layout's artifact). Its
        id is claimed create-only, so two writers never share one.
        """
        schema = Schema.from_dict(card.schema)
        from beryl.model.linear import LinearModel, NotLinearError

        try:
            model = model if model is not None else LinearModel.from_pipeline(pipeline, schema)
        except NotLinearError as exc:
            raise TrainingError(f"the fitted model cannot be stored as data: {exc}") from exc
        if model.schema != schema or list(model.classes) != list(card.classes):
            raise TrainingError("the model's schema or classes are not its card's")
        payload = pickle.dumps(pipeline, protocol=pickle.HIGHEST_PROTOCOL)
        card.model_sha256 = sha256_bytes(payload)
        if not self.local:
            create_version(self, payload, card, lambda c: self.signed_model(c, model))
            if latest:
                atomic_write_bytes(self.folder / LATEST_MODEL_FILE, payload)
            return card
        self.versions_folder.mkdir(parents=True, exist_ok=True)
        staging = self.versions_folder / f".staging-{os.getpid()}-{secrets.token_hex(6)}"
        staging.mkdir()
        try:
            (staging / MODEL_FILE).write_bytes(payload)
            while True:
                existing = [int(v[1:]) for v in self.version_dirs()]
                card.id = f"v{(max(existing) + 1) if existing else 1:04d}"
                target = self.versions_folder / card.id
                try:
                    target.mkdir()  # the claim: only one writer makes the folder of an id
                except FileExistsError:
                    continue
                (staging / DATA_MODEL_FILE).write_text(
                    json.dumps(self.signed_model(card, model), indent=1) + "\n"
                )
                (staging / CARD_FILE).write_text(json.dumps(card.to_dict(), indent=2) + "\n")
                for name in (MODEL_FILE, DATA_MODEL_FILE, CARD_FILE):
                    with (staging / name).open("rb") as handle:
                        os.fsync(handle.fileno())
                try:
                    staging.rename(target)  # replaces the empty folder this writer claimed
                except OSError:  # something was put into it meanwhile: claim the next id
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

    def signed_model(self, card: ModelCard, model: LinearModel) -> dict[str, Any]:
        """What ``model.json`` holds: the model bound to its version id and its pickle."""
        return self.keyring.sign(
            {"version": card.id, "model_sha256": card.model_sha256, "model": model.to_dict()}
        )

    def repair(self) -> list[str]:
        """After a crash or damage (under the workspace lock): move unfinished versions to
        ``.recovered/``, take unreadable lines out of the log (kept there too), and finish a
        logged move or restore a damaged pointer from the log (``beryl.model.registry_repair``).

        A damaged pointer the log cannot restore is left for the user: ``production`` (of any
        other ``Registry``) names both files and ``beryl models promote V``, while this one
        reports no production, so that the repairs after this one (the deployment, the
        records) go on, and a command that does not need production is not refused. Returns
        what was repaired.
        """
        from beryl.model.registry_repair import repair

        return repair(self)

    def model_path(self, version: str) -> Path:
        """The pickle of a version (the original layout's artifact; Beryl never loads it); on
        object storage its copy in the cache, downloaded and checked first."""
        if self.cache is not None:
            sha256 = self._signed(version)[1]
            return self.cache.fetch(self, _key(version, MODEL_FILE), sha256)
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
        check_model_file(path, payload, sha256)
        return pickle.loads(payload)

    def _signed(self, version: str) -> tuple[LinearModel, str]:
        """The verified data-only model of a version and the sha256 of its pickle."""
        card = self.card(version)
        path = self.where(_key(version, DATA_MODEL_FILE))
        raw = self.storage.read(_key(version, DATA_MODEL_FILE))
        if raw is None:
            raise IntegrityError(
                f"model file {path} is missing",
                hint="a version made by an older Beryl: `beryl models sign --all` makes it "
                "from the pickle (only for a models folder you trust), or retrain",
            )
        try:
            data = json.loads(raw.decode("utf-8"))
        except ValueError as exc:
            raise IntegrityError(f"model file {path} is unreadable: {exc}") from exc
        body = self.checking_keyring(path).verify(data, path)
        if body.get("version") != version:
            raise IntegrityError(
                f"model file {path} belongs to version {body.get('version')!r}, not {version}",
                hint="a model file was copied between versions; restore it or retrain",
            )
        from beryl.model.linear import LinearModel, NotLinearError

        try:
            model = LinearModel.from_dict(body.get("model"))
        except NotLinearError as exc:
            raise IntegrityError(f"model file {path} holds no valid model: {exc}") from exc
        if card.schema != model.schema.to_dict() or list(card.classes) != list(model.classes):
            raise IntegrityError(
                f"model card {self.where(_key(version, CARD_FILE))} disagrees with its signed "
                "model file "
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
            if self.cache is not None:
                return self.cache.fetch(self, _key(version, MODEL_FILE), sha256).is_file()
            path = self.model_path(version)
            return path.is_file() and sha256_file(path) == sha256
        except (ModelError, OSError):
            return False

    def sign(self, version: str) -> Literal["signed", "already signed"]:
        """Make a version's signed data-only model from its pickle (a version an older Beryl
        made). This unpickles the file: run it only on a models folder you trust."""
        from beryl.model.registry_repair import sign_version

        return sign_version(self, version)

    def sign_records(self) -> list[str]:
        """Re-sign the pointer and every log line with this key (after ``sign``)."""
        from beryl.model.registry_repair import sign_records

        return sign_records(self)

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
        self.write_json(_key(version, CARD_FILE), card.to_dict())
        return card

    def write_json(self, key: str, data: Any) -> None:
        """Replace a key with JSON, atomically (as ``atomic_write_json`` writes it)."""
        text = json.dumps(data, indent=2, sort_keys=False, default=str) + "\n"
        self.storage.write(key, text.encode("utf-8"))

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
        return self.pointer.version()

    def require_production(self) -> str:
        version = self.production()
        if version is None:
            raise ModelNotFoundError(
                "no model is in production yet", hint="run `beryl deploy` (or `beryl run`)"
            )
        return version

    def moves(self) -> list[Move]:
        """The logged moves: lines whose signature holds, shaped as a move to a version that is
        here (a torn, foreign or garbage line, a move to a version that is gone, or a move that
        lost to another process's, is none)."""
        return self.pointer.moves()

    def unsigned_moves(self) -> int:
        """How many complete log lines are no usable move (counted by ``repair``)."""
        return self.pointer.unusable()

    def promote(
        self,
        version: str,
        reason: str = "promoted by hand",
        scores: tuple[float | None, float | None] | None = None,
        *,
        run_id: int | None = None,
    ) -> Move:
        """Point production at ``version`` and log the move.

        ``scores`` (production's F1, the candidate's F1) are the figures the decision compared;
        by default each card's recorded F1. ``run_id``: the pass that decided it. A move that
        loses to another process's (both read the same pointer) is a ``ModelError``.
        """
        return self.pointer.move("promote", version, reason, scores, run_id)

    def rollback(self, reason: str = "rolled back by hand", *, run_id: int | None = None) -> Move:
        """Point production back at the version it replaced."""
        return self.pointer.rollback(reason, run_id)


def _a_key_exists() -> bool:
    """Whether the environment names a key, or the default key file exists."""
    if os.environ.get(KEY_ENV) or os.environ.get(KEY_FILE_ENV):
        return True
    return default_key_path(os.environ).exists()


def _key(version: str, name: str) -> str:
    return f"versions/{version}/{name}"
