"""One pass of the loop ("full process"): new data → ingest → drift check → train → score →
promote when better → report and API calls → a run record.

    result = run_pass(settings)
    print("\\n".join(result.summary()))
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from beryl._io import atomic_write_text, utc_now
from beryl.config import Settings
from beryl.data.dataset import Dataset
from beryl.data.ingestion import IngestionResult, ingest, scan_input
from beryl.data.schema import Schema
from beryl.errors import (
    EXIT_OK,
    EXIT_PARTIAL,
    EXIT_PROMOTED_WITH_ERRORS,
    BerylError,
    DataError,
    IntegrityError,
    PipelineBusyError,
    describe_os_error,
)
from beryl.model.deployment import materialise
from beryl.model.deployment import repair as repair_deployment
from beryl.model.registry import LATEST_SCORE_FILE, Move, Registry
from beryl.monitoring.history import History, RunContext

# Commands that change the workspace and hold its lock while they run.
EXCLUSIVE_COMMANDS = (
    *("run", "ingest", "train", "score", "deploy", "promote", "rollback", "report"),
    *("sign", "retype", "set-aside"),
)
NO_NEW_DATA = "no-new-data"
PROMOTED = "promoted"
KEPT = "kept"


@dataclass
class PassResult:
    """What one pass did and why."""

    run_id: int
    outcome: str
    exit_code: int
    reason: str
    ingestion: IngestionResult | None = None
    drift_check: dict[str, Any] | None = None
    data_drift: dict[str, Any] | None = None
    candidate: str | None = None
    candidate_f1: float | None = None
    production: str | None = None
    production_f1: float | None = None
    timings: dict[str, float] = field(default_factory=dict)
    reports: dict[str, Path] = field(default_factory=dict)
    api_calls: dict[str, Any] | None = None
    test_overlap: dict[str, Any] | None = None  # test rows also in the training data
    errors: list[str] = field(default_factory=list)  # steps that failed after production moved
    notes: list[str] = field(default_factory=list)  # what was not checked, and why

    @property
    def promoted(self) -> bool:
        return self.outcome == PROMOTED

    def summary(self) -> list[str]:
        """A readable account of what happened and why."""
        lines = []
        if self.ingestion is not None:
            ing = self.ingestion
            lines.append(
                f"Ingestion: {len(ing.ingested)} file(s) ingested, {ing.rows_added} new row(s); "
                f"{len(ing.quarantined)} quarantined; dataset has {ing.dataset_rows} rows."
            )
            lines.extend(f"  quarantined {r.name}: {r.reason}" for r in ing.quarantined)
        if self.data_drift is not None:
            drift = self.data_drift
            drifted = ", ".join(drift["drifted_features"]) or "none"
            lines.append(
                f"Data drift vs {drift['reference']['model_version']}'s training data: "
                f"{'DRIFT' if drift['dataset_drift'] else 'no dataset drift'} "
                f"(share {drift['drift_share']:.2f}; drifted features: {drifted})."
            )
        lines.extend(self.notes)
        if self.drift_check is not None:
            d = self.drift_check
            verdict = "model drift" if d["model_drift"] else "no model drift"
            lines.append(
                f"Model drift check: {d['version']} scores F1 {d['f1_new_data']:.4f} on "
                f"{d['rows']} new labelled rows vs {_f(d['f1_recorded'])} recorded → {verdict}."
            )
        if self.candidate is not None:
            lines.append(
                f"Candidate {self.candidate}: F1 {_f(self.candidate_f1)}; production "
                f"{self.production or 'none'}: F1 {_f(self.production_f1)} (same test data)."
            )
        if self.test_overlap and self.test_overlap["shared"]:
            o = self.test_overlap
            lines.append(
                f"WARNING: {o['shared']} of {o['rows']} test rows ({o['share']:.0%}) are also in "
                "the training data: the test score is flattered."
            )
        lines.append(f"Decision: {self.outcome} ({self.reason}).")
        lines.extend(f"  FAILED after the promotion: {e}" for e in self.errors)
        for label, path in self.reports.items():
            lines.append(f"  {label}: {path}")
        if self.api_calls is not None:
            lines.append(
                f"API calls: {self.api_calls['ok']} of {self.api_calls['total']} answered 200 → "
                f"{self.api_calls['file']}"
            )
        steps = ", ".join(f"{k} {v:.2f}s" for k, v in self.timings.items())
        lines.append(f"Steps: {steps}.")
        return lines


def _f(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


@contextlib.contextmanager
def pass_lock(settings: Settings) -> Iterator[None]:
    """Hold the workspace's single-flight lock; ``PipelineBusyError`` when another pass has it."""
    lock = FileLock(str(settings.lock_file), timeout=0)
    try:
        lock.acquire()
    except Timeout as exc:
        raise PipelineBusyError(
            f"another pass is running in {settings.root} (lock {settings.lock_file})",
            hint="wait for it to finish; overlapping passes are skipped, never run twice",
        ) from exc
    try:
        yield
    finally:
        lock.release()


def should_promote(
    candidate_f1: float, production_f1: float | None, margin: float
) -> tuple[bool, str]:
    """Promote when there is no production model, or the candidate is better by the margin."""
    if production_f1 is None:
        return True, "no production model yet"
    gain = candidate_f1 - production_f1
    if gain > 0 and gain >= margin - 1e-12:
        return True, f"candidate F1 is higher by {gain:.4f} (margin {margin})"
    if gain <= 0:
        return False, f"candidate F1 is not higher than production's ({gain:+.4f})"
    return False, f"candidate F1 is higher by only {gain:.4f}, below the margin {margin}"


def run_pass(settings: Settings, *, call_api: bool = True, report: bool = True) -> PassResult:
    """One full pass of the loop under the workspace lock (DESIGN section 1)."""
    with pass_lock(settings):
        history = History(settings.history_db)
        started = time.perf_counter()
        repaired = recover(settings)
        with history.run("run") as run:
            if repaired:
                history.record_step(
                    run.run_id,
                    "recover",
                    started=utc_now(),
                    duration_s=time.perf_counter() - started,
                    status="ok",
                    detail={"repaired": repaired},
                )
            result = _pass(settings, run, history, call_api=call_api, report=report)
            run.status = {
                EXIT_PARTIAL: "partial",
                EXIT_PROMOTED_WITH_ERRORS: "promoted-with-errors",
            }.get(result.exit_code, "ok")
            run.exit_code = result.exit_code
            run.summary = f"{result.outcome}: {result.reason}"
            run.detail = {
                "outcome": result.outcome,
                "candidate": result.candidate,
                "production": result.production,
                "candidate_f1": result.candidate_f1,
                "production_f1": result.production_f1,
                "drift_check": result.drift_check,
                "test_overlap": result.test_overlap,
                "errors": result.errors,
                "data_drift": None
                if result.data_drift is None
                else {
                    k: result.data_drift[k]
                    for k in ("dataset_drift", "drift_share", "drifted_features")
                },
            }
            result.timings = dict(run.timings)
        return result


def _pass(
    settings: Settings, run: RunContext, history: History, *, call_api: bool, report: bool
) -> PassResult:
    registry = Registry(settings.model_folder)
    production = registry.production()
    trained_on = _covered_batches(registry, production)

    with run.step("check") as detail:
        # Nothing is read here: ``ingest`` reads and hashes each new file once, and treats a
        # file that vanishes or cannot be read as it always does (defer, quarantine).
        scan = scan_input(settings, Dataset(settings.output_folder), read_new=False)
        detail.update(new=len(scan.new), duplicates=len(scan.duplicates), known=len(scan.known))
    ingestion = None
    if scan.new or scan.duplicates or scan.rejected:
        with run.step("ingest") as detail:
            ingestion = ingest(settings)
            detail.update(rows_added=ingestion.rows_added, files=len(ingestion.records))
        if not ingestion.changed and not ingestion.deferred:
            ingestion = None  # the files only looked new (recently touched): nothing to report
    exit_code = EXIT_PARTIAL if ingestion is not None and ingestion.partial else EXIT_OK
    dataset = Dataset(settings.output_folder)
    new_batches = [b.id for b in dataset.batches if b.id not in trained_on]
    if not new_batches:
        return PassResult(
            run.run_id,
            NO_NEW_DATA,
            exit_code,
            "no new data since the last model was trained and scored",
            ingestion=ingestion,
            production=production,
        )

    result = PassResult(run.run_id, KEPT, exit_code, "", ingestion=ingestion, production=production)
    # Production's training batches that the dataset still holds (a dataset rebuilt or set
    # aside may hold none: there is then nothing to compare a batch with).
    reference = sorted(
        trained_on_production(registry, production) & {b.id for b in dataset.batches}
        if production is not None
        else set()
    )
    retyped = production is not None and registry.model(production).schema != dataset.schema
    if retyped:
        # A column was re-typed since production was trained: its inputs are not the dataset's.
        result.notes.append(
            f"Data drift and model drift: not tested ({production} was trained with other "
            "column types than the dataset holds now, after `beryl dataset retype`)."
        )
        reference = []
    elif production is not None and not reference and ingestion and ingestion.batch:
        result.notes.append(
            f"Data drift: not tested ({production}'s training batches are no longer in the "
            "dataset, so there is nothing to compare the new batch with)."
        )
    if production and reference and ingestion is not None and ingestion.batch is not None:
        with run.step("data_drift") as detail:
            from beryl.monitoring.drift import check_batches

            result.data_drift = check_batches(
                dataset,
                reference,
                [ingestion.batch.id],
                settings.drift,
                reference_label=production,
            )
            history.record_drift(result.data_drift, run.run_id)
            detail.update(
                dataset_drift=result.data_drift["dataset_drift"],
                drift_share=result.data_drift["drift_share"],
                drifted=result.data_drift["drifted_features"],
            )
    if production is not None and not retyped:
        with run.step("drift_check") as detail:
            checked = [ingestion.batch.id] if ingestion and ingestion.batch else new_batches
            result.drift_check = _drift_check(
                registry, production, dataset, checked, settings.model_drift_tolerance
            )
            detail.update(result.drift_check)
            history.record_score(
                production,
                "drift-check",
                "new batches " + ",".join(checked),
                {"f1": result.drift_check["f1_new_data"], **result.drift_check},
                run.run_id,
            )

    with run.step("train") as detail:
        from beryl.model.training import train

        card = train(settings)
        result.candidate = card.id
        detail.update(version=card.id, rows=card.training["rows"])

    with run.step("score") as detail:
        from beryl.model.scoring import evaluate, overlap_with_training, read_labelled

        schema = Schema.from_dict(card.schema)
        overlap = overlap_with_training(
            dataset, read_labelled(settings.test_data, schema)[0], schema
        )
        result.test_overlap = overlap.to_dict()
        detail.update(test_overlap=result.test_overlap)
        metrics = evaluate(settings, registry, card.id)
        metrics["test_overlap"] = result.test_overlap
        registry.record_metrics(card.id, metrics)
        atomic_write_text(settings.model_folder / LATEST_SCORE_FILE, f"{metrics['f1']}\n")
        result.candidate_f1 = metrics["f1"]
        history.record_score(card.id, "candidate", "test data", metrics, run.run_id)
        if production is not None:
            try:
                prod_metrics = evaluate(settings, registry, production)
            except DataError as exc:  # e.g. a column re-typed since production was trained
                result.notes.append(
                    f"Production {production} cannot be scored on the test data ({exc.message}): "
                    "the candidate is judged alone."
                )
            else:
                registry.record_metrics(production, prod_metrics)
                result.production_f1 = prod_metrics["f1"]
                history.record_score(
                    production, "production", "test data", prod_metrics, run.run_id
                )
        detail.update(candidate_f1=result.candidate_f1, production_f1=result.production_f1)

    assert result.candidate_f1 is not None
    promote, result.reason = should_promote(
        result.candidate_f1, result.production_f1, settings.promotion_margin
    )
    if production is not None and result.production_f1 is None:
        result.reason = f"production {production} could not be scored on the test data"
    warning = overlap.warning()
    if warning:
        result.reason += f"; warning: {warning}"
    if not promote:
        registry.record_decision(
            card.id, {"outcome": KEPT, "reason": result.reason, "run": run.run_id}
        )
        return result
    with run.step("promote") as detail:
        move = registry.promote(
            card.id,
            reason=f"run {run.run_id}: {result.reason}",
            scores=(result.production_f1, result.candidate_f1),
        )
        result.outcome = PROMOTED
        detail.update(to=card.id)
    # Production has moved: from here on a step that fails is recorded, the others still run,
    # and the next pass's repair finishes what failed (deployment, records, report).
    steps: list[tuple[str, Callable[[], object]]] = [
        ("deploy", lambda: materialise(settings, registry)),
        ("record", lambda: _record_promotion(history, registry, move, card.id, result, run)),
    ]
    if report:
        steps.append(("report", lambda: _report(settings, card.id, result)))
    if call_api:
        steps.append(("apicalls", lambda: _api_calls(settings, result)))
    for name, step in steps:
        try:
            with run.step(name):
                step()
        except (BerylError, OSError) as exc:
            result.errors.append(f"{name}: {_one_line(exc)}")
    if result.errors:
        result.exit_code = EXIT_PROMOTED_WITH_ERRORS
    return result


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, OSError) and not isinstance(exc, BerylError):
        message, hint = describe_os_error(exc)
        return f"{message} ({hint})"
    return str(exc)


def _record_promotion(
    history: History, registry: Registry, move: Move, version: str, result: PassResult, run: Any
) -> None:
    history.record_promotion(move.__dict__, run.run_id)
    registry.record_decision(
        version, {"outcome": PROMOTED, "reason": result.reason, "run": run.run_id}
    )


def _report(settings: Settings, version: str, result: PassResult) -> None:
    from beryl.monitoring.reporting import build_report

    result.reports = build_report(settings, version)


def _api_calls(settings: Settings, result: PassResult) -> None:
    from beryl.api.client import call_configured_or_in_process

    calls = call_configured_or_in_process(settings)
    result.api_calls = {
        "ok": sum(c.status == 200 for c in calls.calls),
        "total": len(calls.calls),
        "file": str(calls.written[0]),
        "base_url": calls.base_url,
    }


def trained_on_production(registry: Registry, production: str) -> set[str]:
    """The batches the production model was trained on."""
    return set(registry.card(production).training.get("batches", []))


def _covered_batches(registry: Registry, production: str | None) -> set[str]:
    """Batches already judged: production's training data, and the latest scored candidate's.

    A candidate that was kept out of production is not trained again on the same data: only a
    new batch makes a new candidate.
    """
    covered: set[str] = set()
    if production is not None:
        covered |= trained_on_production(registry, production)
    ids = registry.ids()
    if ids:
        latest = registry.card(ids[-1])
        if latest.decision:  # a pass decided about it (a kill before the decision: not judged)
            covered |= set(latest.training.get("batches", []))
    return covered


def _drift_check(
    registry: Registry, production: str, dataset: Dataset, new_batches: list[str], tolerance: float
) -> dict[str, Any]:
    """Score the production model on the newly ingested labelled rows.

    Model drift: its F1 there is lower than its recorded F1 by more than ``tolerance``.
    """
    from beryl.model.scoring import compute_metrics

    card = registry.card(production)
    schema = Schema.from_dict(card.schema)
    frame = dataset.read(columns=[*schema.features, schema.target], batches=new_batches)
    metrics = compute_metrics(registry.model(production), frame, schema)
    recorded = card.f1
    return {
        "version": production,
        "rows": len(frame),
        "f1_new_data": metrics["f1"],
        "f1_recorded": recorded,
        "batches": new_batches,
        "tolerance": tolerance,
        "model_drift": recorded is not None and metrics["f1"] < recorded - tolerance,
    }


def recover(settings: Settings) -> list[str]:
    """Repair what a killed pass may have left (call under the workspace lock)."""
    registry = Registry(settings.model_folder)
    repaired = Dataset(settings.output_folder).repair(settings.write_csv_snapshot)
    repaired += registry.repair()
    repaired += repair_deployment(settings, registry)
    repaired += _repair_records(settings, registry)
    return repaired


def _repair_records(settings: Settings, registry: Registry) -> list[str]:
    """Bring the history and the report up to the promotion log after a killed pass."""
    repaired = []
    history = History(settings.history_db)
    closed = history.close_interrupted(EXCLUSIVE_COMMANDS)
    if closed:
        repaired.append(f"marked {closed} killed run(s) as interrupted")
    recorded = {(p["time"], p["to_version"]) for p in history.promotions(limit=100_000)}
    for move in registry.moves():
        if (move.time, move.to_version) not in recorded:
            history.record_promotion(move.__dict__)
            repaired.append(f"recorded the {move.action} to {move.to_version} in the history")
    try:
        production = registry.production()
    except IntegrityError:  # a pointer the log cannot restore: refused by the commands that use it
        production = None
    moves = registry.moves()
    report = settings.model_folder / "report.html"
    by_a_pass = bool(moves) and moves[-1].reason.startswith("run ")
    stale = (
        production is not None
        and by_a_pass
        and report.exists()
        and f"Beryl model report: {production}<" not in report.read_text(encoding="utf-8")
    )
    if stale and production is not None:
        from beryl.monitoring.reporting import build_report

        build_report(settings, production)
        repaired.append(f"rewrote the report for {production}")
    return repaired
