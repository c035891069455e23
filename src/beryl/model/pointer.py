"""The production pointer and the log of its moves, kept on the registry's storage seam.

``production.json`` names the version in production; ``promotions.jsonl`` records every move of
it (when, why, from, to, both scores, and the pass that made it, ``run_id``). Both are signed
(``beryl.model.signing``) and both are keys of the registry's ``Storage`` (``beryl.storage``):

- a move appends its log line (``Storage.append``), then moves the pointer from the bytes it read
  to the new ones (``Storage.swap``, compare-and-swap);
- two processes moving production from the same reading cannot both win: the loser raises
  ``ModelError`` ("production moved while promoting; run again") and appends a ``void`` line
  for its move, which takes both lines out of ``moves``; nothing is silently overwritten.

The log line goes first, so a kill between the two leaves a move that is logged but not on the
pointer: ``repair`` finishes it while the pointer still names the version it moved from. A
pointer ahead of the log (a log that lost lines) is never followed back.
"""

from __future__ import annotations

import contextlib
import json
import re
from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING, Any

from beryl._io import utc_now
from beryl.errors import IntegrityError, ModelError, ModelNotFoundError
from beryl.recovery import Aside

if TYPE_CHECKING:
    from beryl.model.registry import Registry
    from beryl.storage import Storage

POINTER_FILE = "production.json"
LOG_FILE = "promotions.jsonl"
VERSION_RE = re.compile(r"^v(\d{4,})$")
VOID = "void"  # the action of a line saying that the move logged at its time did not happen


@dataclass(frozen=True)
class Move:
    """One entry of the promotion log; ``run_id`` is the pass that made it (None: not a pass)."""

    time: str
    action: str
    from_version: str | None
    to_version: str
    reason: str
    from_f1: float | None = None
    to_f1: float | None = None
    run_id: int | None = None


@dataclass(frozen=True)
class Pointer:
    """What the production pointer says: the version, and the time of the move that wrote it."""

    version: str
    since: str | None


class ProductionPointer:
    """The pointer and the log of one registry (see the module docstring)."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry

    @property
    def storage(self) -> Storage:
        return self.registry.storage

    # -- the pointer ------------------------------------------------------------------------------
    def version(self) -> str | None:
        """The production version, or None before the first promotion (``Registry.production``)."""
        pointer = self.read()[0]
        return pointer.version if pointer else None

    def read(self) -> tuple[Pointer | None, bytes | None]:
        """The pointer and the bytes it was read from (what a move swaps from); a damaged one is
        an ``IntegrityError`` naming it and what restores it."""
        raw = self.storage.read(POINTER_FILE)
        return self.parse(raw), raw

    def parse(self, raw: bytes | None) -> Pointer | None:
        if raw is None:
            return None
        path = self.registry.where(POINTER_FILE)
        try:
            data = json.loads(raw.decode("utf-8"))
        except ValueError as exc:  # not JSON, or not UTF-8
            raise self.damaged(f"production pointer {path} is unreadable: {exc}") from exc
        try:
            body = self.registry.checking_keyring(path).verify(data, path)
        except IntegrityError as exc:
            raise self.damaged(exc.message, exc.hint) from exc
        version = body.get("version")
        if not isinstance(version, str) or not VERSION_RE.match(version):
            raise self.damaged(f"production pointer {path} names no version")
        if not self.registry.has_version(version):
            raise self.damaged(
                f"production pointer {path} names {version}, which is not in "
                f"{self.registry.where('versions')}"
            )
        since = body.get("since")
        return Pointer(version, since if isinstance(since, str) else None)

    def damaged(self, message: str, hint: str | None = None) -> IntegrityError:
        """What a damaged pointer is reported as: restored by the next repair when the log
        allows it, else the user chooses (``beryl models promote``)."""
        log = self.registry.where(LOG_FILE)
        if self.restorable(self.moves()) is not None:
            restore = (
                "the next `beryl run` (or any command that changes the workspace) restores "
                f"it from {log}"
            )
        else:
            restore = (
                f"{log} holds no move to restore it from: put a version into production with "
                "`beryl models promote V` (`beryl models list` shows them)"
            )
        return IntegrityError(message, hint=f"{hint}; or {restore}" if hint else restore)

    def swap(self, version: str, since: str, expected: bytes | None) -> bool:
        """Point at ``version`` if the pointer still holds ``expected``; False when it moved."""
        signed = self.registry.keyring.sign({"version": version, "since": since})
        data = (json.dumps(signed, indent=2) + "\n").encode("utf-8")
        return self.storage.swap(POINTER_FILE, data, expected=expected)

    def restorable(self, moves: list[Move]) -> Move | None:
        """The last logged move to a version that is here and intact."""
        return next((m for m in reversed(moves) if self.registry.verify(m.to_version)), None)

    # -- the log ----------------------------------------------------------------------------------
    def entries(self) -> list[dict[str, Any]]:
        """Every JSON object line of the log (a line torn by a crash mid-append, or garbage, is
        none)."""
        data = self.storage.read(LOG_FILE)
        if data is None:
            return []
        return [e for e in map(log_entry, data.split(b"\n")) if e is not None]

    def lines(self) -> list[Move | None]:
        """Each entry as a move when its signature holds and it is a move to a version that is
        here, else None."""
        entries = self.entries()
        if not entries:
            return []
        where = self.registry.where(LOG_FILE)
        try:
            keyring = self.registry.checking_keyring(where)
        except IntegrityError:
            return [None] * len(entries)
        here = set(self.registry.version_dirs())  # one listing for every line
        found: list[Move | None] = []
        for entry in entries:
            try:
                move: Move | None = Move(**keyring.verify(entry, where))
            except (IntegrityError, TypeError):
                move = None
            if move is not None and not (_well_formed(move) and move.to_version in here):
                move = None
            found.append(move)
        return found

    def moves(self) -> list[Move]:
        """The logged moves that happened: usable lines, without the void ones and the moves
        they void."""
        usable = [m for m in self.lines() if m is not None]
        void = {(m.time, m.to_version) for m in usable if m.action == VOID}
        return [m for m in usable if m.action != VOID and (m.time, m.to_version) not in void]

    def unusable(self) -> int:
        """How many complete log lines are no usable move (unsigned, foreign, malformed, or to a
        version that is not here)."""
        return sum(m is None for m in self.lines())

    def append(self, move: Move) -> None:
        self.storage.append(LOG_FILE, json.dumps(self.registry.keyring.sign(asdict(move))))

    # -- moving it --------------------------------------------------------------------------------
    def move(
        self,
        action: str,
        to_version: str,
        reason: str,
        scores: tuple[float | None, float | None] | None = None,
        run_id: int | None = None,
    ) -> Move:
        """Log a move to ``to_version`` and swap the pointer to it (see the module docstring)."""
        registry = self.registry
        registry.card(to_version)
        if not registry.verify(to_version):
            raise IntegrityError(
                f"model files of {to_version} do not match their signature; it cannot go to "
                "production",
                hint="retrain, or restore the original files",
            )
        raw = self.storage.read(POINTER_FILE)
        try:
            pointer = self.parse(raw)
        except IntegrityError:  # a damaged pointer: this move replaces it (a copy is kept)
            pointer = None
            if raw is not None:
                Aside(registry.folder).keep(POINTER_FILE, raw)
        current = pointer.version if pointer else None
        if current == to_version:
            raise ModelError(
                f"{to_version} is already in production",
                hint="nothing to do; see `beryl models list`",
            )
        if scores is None:
            scores = (self._f1(current), self._f1(to_version))
        move = Move(
            time=utc_now(),
            action=action,
            from_version=current,
            to_version=to_version,
            reason=reason,
            from_f1=scores[0],
            to_f1=scores[1],
            run_id=run_id,
        )
        self.append(move)
        if not self.swap(to_version, move.time, expected=raw):
            self.append(replace(move, action=VOID, reason="production moved first; not done"))
            winner = None
            with contextlib.suppress(ModelError):
                winner = self.version()
            verb = "promoting" if action == "promote" else "rolling back"
            raise ModelError(
                f"production moved while {verb}; run again (another process put "
                f"{winner or 'another version'} into production after this one read "
                f"{current or 'no production version'})",
                hint=f"the move to {to_version} did not happen (it is logged as void); "
                "`beryl models list` shows what is in production",
            )
        return move

    def rollback(self, reason: str, run_id: int | None = None) -> Move:
        """Point production back at the version it replaced."""
        current = self.registry.require_production()
        for move in reversed(self.moves()):
            if (
                move.action == "promote"
                and move.to_version == current
                and move.from_version not in (None, current)
            ):
                return self.move("rollback", move.from_version, reason, run_id=run_id)
        raise ModelNotFoundError(f"{current} has no earlier production version to roll back to")

    def _f1(self, version: str | None) -> float | None:
        """A version's recorded F1; None when there is none or its card cannot be read."""
        if version is None:
            return None
        try:
            return self.registry.card(version).f1
        except ModelError:
            return None


def log_entry(line: bytes) -> dict[str, Any] | None:
    """A log line as a JSON object, or None (blank, torn, garbage, not UTF-8)."""
    if not line.strip():
        return None
    try:
        entry = json.loads(line.decode("utf-8"))
    except ValueError:  # UnicodeDecodeError is one
        return None
    return entry if isinstance(entry, dict) else None


def _well_formed(move: Move) -> bool:
    def number(value: Any, kind: type) -> bool:
        return value is None or (isinstance(value, kind) and not isinstance(value, bool))

    return (
        all(isinstance(v, str) for v in (move.time, move.action, move.reason, move.to_version))
        and bool(VERSION_RE.match(move.to_version))
        and (move.from_version is None or isinstance(move.from_version, str))
        and number(move.from_f1, int | float)  # type: ignore[arg-type]
        and number(move.to_f1, int | float)  # type: ignore[arg-type]
        and number(move.run_id, int)
    )
