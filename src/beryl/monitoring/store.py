"""The history seam: the records a history store reads back, the protocol every store follows
(SQLite today, ``beryl.monitoring.history.History``) and the run in progress it hands out.

The contract tests in ``tests/test_history_contract.py`` run against ``HistoryStore``; a second
store (PostgreSQL) implements the same methods and passes the same tests::

    with workspace.history.run("run") as run:
        with run.step("ingest") as detail:
            detail["rows"] = 3
    workspace.history.runs(1)[0].steps[0].detail == {"rows": 3}
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from beryl._io import utc_now

if TYPE_CHECKING:
    from beryl.monitoring.results import DriftResult


@dataclass(frozen=True)
class StepRecord:
    """One timed step of a run."""

    name: str
    duration_s: float | None
    status: str
    started: str
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RunOutcome:
    """How a run ended, as ``finish_run`` records it; a detail of None keeps the run's own."""

    status: str
    exit_code: int
    duration_s: float
    summary: str = ""
    detail: dict[str, Any] | None = None


@dataclass(frozen=True)
class RunRecord:
    """One recorded command (a pass of the loop is the command ``run``) with its steps."""

    id: int
    command: str
    started: str
    ended: str | None
    duration_s: float | None
    status: str
    exit_code: int | None
    summary: str | None
    detail: dict[str, Any]
    steps: list[StepRecord] = field(default_factory=list)


@dataclass(frozen=True)
class ScoreRecord:
    """A model's F1 on some data; role is e.g. 'candidate', 'production', 'drift-check'."""

    run_id: int | None
    time: str
    version: str
    role: str
    data: str
    f1: float | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class PromotionRecord:
    """A move of the production pointer (a promotion or a rollback)."""

    run_id: int | None
    time: str
    action: str
    from_version: str | None
    to_version: str
    from_f1: float | None
    to_f1: float | None
    reason: str | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class DriftRecord:
    """One data-drift check of a pass, as the history keeps it."""

    run_id: int | None
    time: str
    result: DriftResult


@dataclass
class OutboxEntry:
    """One event queued for one webhook endpoint, and how its delivery went
    (``beryl.monitoring.webhooks``): ``delivered`` or ``failed`` (given up) once settled."""

    event_id: str
    endpoint: str
    type: str
    time: str
    payload: str
    attempts: int = 0
    next_attempt: str = ""
    delivered: str | None = None
    failed: str | None = None
    last_error: str | None = None
    id: int = 0


@dataclass(frozen=True)
class ModelDriftRecord:
    """One model-drift check of a pass: production's F1 on the new labelled rows against its
    recorded F1; ``verdict`` is drifted, not drifted or not tested (``note`` says why)."""

    run_id: int | None
    time: str
    version: str
    rows: int | None
    f1_new_data: float | None
    f1_recorded: float | None
    tolerance: float | None
    verdict: str
    note: str | None

    @classmethod
    def from_score(
        cls, run_id: int | None, time: str, version: str, metrics: Mapping[str, Any]
    ) -> ModelDriftRecord:
        """From a ``drift-check`` score's metrics (a record from before verdicts were kept
        says drifted or not from its ``model_drift`` flag)."""
        verdict = metrics.get("verdict") or (
            "drifted" if metrics.get("model_drift") else "not drifted"
        )
        return cls(
            run_id=run_id,
            time=time,
            version=version,
            rows=metrics.get("rows"),
            f1_new_data=metrics.get("f1_new_data", metrics.get("f1")),
            f1_recorded=metrics.get("f1_recorded"),
            tolerance=metrics.get("tolerance"),
            verdict=str(verdict),
            note=metrics.get("note"),
        )


@runtime_checkable
class HistoryStore(Protocol):
    """What the loop, the CLI and the API need from a history database."""

    def start_run(self, command: str, detail: dict[str, Any] | None = None) -> int: ...

    def finish_run(self, run_id: int, outcome: RunOutcome) -> None: ...

    def record_step(self, run_id: int, step: StepRecord) -> None: ...

    def run(
        self, command: str, detail: dict[str, Any] | None = None
    ) -> contextlib.AbstractContextManager[RunContext]: ...

    def close_interrupted(self, commands: tuple[str, ...]) -> int: ...

    def runs(self, limit: int = 20, command: str | None = None) -> list[RunRecord]:
        """The most recent runs (of ``command`` only, when given), newest first."""
        ...

    def last_step(self, name: str) -> StepRecord | None: ...

    def record_score(
        self, version: str, role: str, data: str, metrics: dict[str, Any], run_id: int | None = None
    ) -> None: ...

    def scores(self, limit: int = 500) -> list[ScoreRecord]: ...

    def record_promotion(self, move: Mapping[str, Any], run_id: int | None = None) -> None: ...

    def promotions(self, limit: int = 500) -> list[PromotionRecord]: ...

    def record_drift(self, result: DriftResult, run_id: int | None = None) -> None: ...

    def latest_drift(self) -> DriftResult | None: ...

    def drifts(self, limit: int = 50) -> list[DriftRecord]:
        """The latest ``limit`` data-drift checks, oldest first."""
        ...

    def outbox_since(self, endpoint: str, now: str) -> str: ...

    def outbox_add(self, entry: OutboxEntry) -> bool: ...

    def outbox_due(self, now: str, limit: int = 100) -> list[OutboxEntry]: ...

    def outbox_entries(self, limit: int = 100) -> list[OutboxEntry]: ...

    def outbox_update(self, entry: OutboxEntry) -> None: ...

    def model_drift_checks(self, limit: int = 100) -> list[ModelDriftRecord]:
        """The latest ``limit`` model-drift checks (``drift-check`` scores), oldest first."""
        ...


@contextlib.contextmanager
def recorded_run(
    history: HistoryStore, command: str, detail: dict[str, Any] | None = None
) -> Iterator[RunContext]:
    """A store's ``run``: its outcome is 'ok' unless the body raises or sets another status."""
    context = RunContext(history, history.start_run(command, detail))
    started = time.perf_counter()
    try:
        yield context
    except BaseException as exc:
        code = getattr(exc, "exit_code", 1)
        outcome = RunOutcome(
            status="interrupted" if isinstance(exc, KeyboardInterrupt) else "failed",
            exit_code=int(code) if isinstance(code, int) else 1,
            duration_s=time.perf_counter() - started,
            summary=str(exc)[:2000],
            detail=context.detail,
        )
        history.finish_run(context.run_id, outcome)
        raise
    outcome = RunOutcome(
        context.status,
        context.exit_code,
        time.perf_counter() - started,
        context.summary,
        context.detail,
    )
    history.finish_run(context.run_id, outcome)


class RunContext:
    """A run in progress: time its steps and set its outcome."""

    def __init__(self, history: HistoryStore, run_id: int) -> None:
        self.history = history
        self.run_id = run_id
        self.status = "ok"
        self.exit_code = 0
        self.summary = ""
        self.detail: dict[str, Any] = {}
        self.timings: dict[str, float] = {}

    @contextlib.contextmanager
    def step(self, name: str) -> Iterator[dict[str, Any]]:
        """Time a step; the yielded dict becomes the step's recorded detail."""
        detail: dict[str, Any] = {}
        started_at = utc_now()
        started = time.perf_counter()
        status = "ok"
        try:
            yield detail
        except BaseException as exc:
            status = "failed"
            detail.setdefault("error", str(exc)[:2000])
            raise
        finally:
            duration = time.perf_counter() - started
            self.timings[name] = duration
            self.history.record_step(
                self.run_id, StepRecord(name, duration, status, started_at, detail)
            )
