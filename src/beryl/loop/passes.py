"""One pass of the loop ("full process"): new data → ingest → drift check → train → score →
promote when better → report and API calls → a run record.

    result = run_pass(workspace, call_api=None)
    print("\\n".join(result.summary()))
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from beryl._io import atomic_write_text
from beryl.config import Settings, check_model
from beryl.data.manifest import FileRecord
from beryl.data.scan import outstanding_quarantine, scan_input
from beryl.data.schema import Schema
from beryl.errors import (
    EXIT_OK,
    EXIT_PARTIAL,
    EXIT_PROMOTED_WITH_ERRORS,
    BerylError,
    DataError,
    describe_os_error,
)
from beryl.loop.checks import ModelDriftCheck, covered_batches, model_drift, trained_on_production
from beryl.loop.commands import locked_run
from beryl.model.registry import LATEST_SCORE_FILE, Move
from beryl.monitoring.results import NOT_TESTED, DriftResult
from beryl.monitoring.store import RunContext
from beryl.workspace import Workspace

if TYPE_CHECKING:
    from beryl.data.ingestion import IngestionResult
    from beryl.model.scoring import Overlap


@dataclass(frozen=True)
class ApiCallsDone:
    """What the API calls after a promotion answered (the API's client makes them)."""

    ok: int
    total: int
    file: str
    base_url: str


# "Call every endpoint and record the answers", handed in by the entry point: the loop never
# imports the API.
ApiCaller = Callable[[Workspace], ApiCallsDone]

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
    drift_check: ModelDriftCheck | None = None
    data_drift: DriftResult | None = None
    candidate: str | None = None
    candidate_f1: float | None = None
    production: str | None = None
    production_f1: float | None = None
    timings: dict[str, float] = field(default_factory=dict)
    reports: dict[str, Path] = field(default_factory=dict)
    api_calls: ApiCallsDone | None = None
    test_overlap: dict[str, Any] | None = None  # test rows also in the training data
    errors: list[str] = field(default_factory=list)  # steps that failed after production moved
    quarantined: list[FileRecord] = field(default_factory=list)  # still waiting to be fixed
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
            against = f"Data drift vs {drift.reference.model_version}'s training data"
            if drift.verdict == NOT_TESTED:
                lines.append(f"{against}: not tested ({drift.note}).")
            else:
                drifted = ", ".join(drift.drifted_features) or "none"
                untested = f"; {drift.note}" if drift.note else ""
                lines.append(
                    f"{against}: {'DRIFT' if drift.dataset_drift else 'no dataset drift'} "
                    f"(share {drift.drift_share:.2f} of the tested features; drifted features: "
                    f"{drifted}{untested})."
                )
        lines.extend(self.notes)
        new = {r.name for r in self.ingestion.quarantined} if self.ingestion else set()
        waiting = [r for r in self.quarantined if r.name not in new]
        if waiting:
            lines.append(
                f"Still quarantined ({len(waiting)} file(s), fix or remove them; exit 10 until "
                "then):"
            )
            lines.extend(f"  {r.name}: {r.reason}" for r in waiting)
        if self.drift_check is not None:
            d = self.drift_check
            verdict = "model drift" if d.model_drift else "no model drift"
            if d.verdict == NOT_TESTED:
                verdict = f"model drift not tested ({d.note})"
            lines.append(
                f"Model drift check: {d.version} scores F1 {_f(d.f1_new_data)} on "
                f"{d.rows} new labelled rows vs {_f(d.f1_recorded)} recorded → {verdict}."
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
        failed = "FAILED after the promotion" if self.outcome == PROMOTED else "FAILED"
        lines.extend(f"  {failed}: {e}" for e in self.errors)
        for label, path in self.reports.items():
            lines.append(f"  {label}: {path}")
        if self.api_calls is not None:
            calls = self.api_calls
            lines.append(f"API calls: {calls.ok} of {calls.total} answered 200 → {calls.file}")
        steps = ", ".join(f"{k} {v:.2f}s" for k, v in self.timings.items())
        lines.append(f"Steps: {steps}.")
        return lines


def _f(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


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


def run_pass(
    workspace: Workspace | Settings,
    *,
    call_api: ApiCaller | None = None,
    report: bool = True,
) -> PassResult:
    """One full pass of the loop under the workspace lock (DESIGN section 1).

    ``call_api``, handed in by the entry point (the loop never imports the API), calls every
    endpoint after a promotion; None skips the API calls.
    """
    workspace = Workspace.of(workspace)
    with locked_run(workspace, "run") as run:
        result = _pass(workspace, run, call_api=call_api, report=report)
        if report and result.outcome != PROMOTED:  # a promotion writes its own
            _refresh_report(workspace, run, result)
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
            "drift_check": result.drift_check.to_dict() if result.drift_check else None,
            "test_overlap": result.test_overlap,
            "errors": result.errors,
            "data_drift": None if result.data_drift is None else result.data_drift.headline(),
        }
        result.timings = dict(run.timings)
    return result


def _pass(
    workspace: Workspace, run: RunContext, *, call_api: ApiCaller | None, report: bool
) -> PassResult:
    settings, registry = workspace.settings, workspace.registry
    production = registry.production()
    trained_on = covered_batches(registry, production)

    with run.step("check") as detail:
        # Nothing is read here: ``ingest`` reads and hashes each new file once, and treats a
        # file that vanishes or cannot be read as it always does (defer, quarantine).
        scan = scan_input(workspace, read_new=False)
        detail.update(new=len(scan.new), duplicates=len(scan.duplicates), known=len(scan.known))
    ingestion = None
    recorded = {r.name for r in workspace.dataset.files}
    if any(c.name not in recorded for c in scan.new):
        # A file never seen before: a model will likely be trained, so bad `model` parameters
        # are refused now, as a configuration error, before anything is ingested. (A known
        # file that only looks new, touched, is re-read without loading scikit-learn.)
        check_model(settings)
    if scan.new or scan.duplicates or scan.rejected:
        with run.step("ingest") as detail:
            from beryl.data.ingestion import ingest  # with Arrow's CSV reader: when needed

            ingestion = ingest(workspace)
            detail.update(rows_added=ingestion.rows_added, files=len(ingestion.records))
            workspace.publish()  # with workspace_url: other machines see the batch at once
        if not ingestion.changed and not ingestion.deferred:
            ingestion = None  # the files only looked new (recently touched): nothing to report
    waiting = outstanding_quarantine(workspace)
    partial = bool(waiting) or (ingestion is not None and ingestion.partial)
    exit_code = EXIT_PARTIAL if partial else EXIT_OK
    dataset = workspace.dataset
    new_batches = [b.id for b in dataset.batches if b.id not in trained_on]
    if not new_batches:
        reason = "no new data since the last model was trained and scored"
        if not dataset.batches:
            reason = f"no data yet: put CSV files into {settings.input_folder}"
        elif not workspace.registry.ids():
            reason = "no model yet, and no new data to train one on"
        result = PassResult(
            run.run_id, NO_NEW_DATA, exit_code, reason, ingestion=ingestion, production=production
        )
        result.quarantined = waiting
        return result

    result = PassResult(run.run_id, KEPT, exit_code, "", ingestion=ingestion, production=production)
    result.quarantined = waiting
    new_batch = ingestion.batch.id if ingestion is not None and ingestion.batch else None
    if production is not None:
        _check_production(workspace, run, result, production, new_batch, new_batches)

    with run.step("train") as detail:
        from beryl.model.training import train

        card = train(workspace)
        result.candidate = card.id
        detail.update(version=card.id, rows=card.training["rows"])

    with run.step("score") as detail:
        overlap = _score(workspace, run, result, card.id, Schema.from_dict(card.schema))
        detail.update(
            test_overlap=result.test_overlap,
            candidate_f1=result.candidate_f1,
            production_f1=result.production_f1,
        )

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
            run_id=run.run_id,
        )
        result.outcome = PROMOTED
        detail.update(to=card.id)
    _after_promotion(workspace, run, result, move, card.id, call_api=call_api, report=report)
    return result


def _check_production(
    workspace: Workspace,
    run: RunContext,
    result: PassResult,
    production: str,
    new_batch: str | None,
    new_batches: list[str],
) -> None:
    """Data drift of the new batch against production's training data, and model drift: each
    recorded, or said not tested and why."""
    settings, registry, history, dataset = (
        workspace.settings,
        workspace.registry,
        workspace.history,
        workspace.dataset,
    )
    # Production's training batches that the dataset still holds (a dataset rebuilt or set
    # aside may hold none: there is then nothing to compare a batch with).
    stored = {b.id for b in dataset.batches}
    reference = sorted(trained_on_production(registry, production) & stored)
    if registry.model(production).schema != dataset.schema:
        # A column was re-typed since production was trained: its inputs are not the dataset's.
        result.notes.append(
            f"Data drift and model drift: not tested ({production} was trained with other "
            "column types than the dataset holds now, after `beryl dataset retype`)."
        )
        return
    if new_batch is not None and not reference:
        result.notes.append(
            f"Data drift: not tested ({production}'s training batches are no longer in the "
            "dataset, so there is nothing to compare the new batch with)."
        )
    if new_batch is not None and reference:
        with run.step("data_drift") as detail:
            from beryl.monitoring.drift import check_batches

            drift = check_batches(workspace, reference, [new_batch], reference_label=production)
            result.data_drift = drift
            history.record_drift(drift, run.run_id)
            detail.update(
                verdict=drift.verdict,
                dataset_drift=drift.dataset_drift,
                drift_share=drift.drift_share,
                drifted=list(drift.drifted_features),
            )
    with run.step("drift_check") as detail:
        checked = [new_batch] if new_batch is not None else new_batches
        check = model_drift(
            registry,
            production,
            dataset,
            checked,
            settings.model_drift_tolerance,
            settings.drift.min_rows,
        )
        result.drift_check = check
        detail.update(check.to_dict())
        history.record_score(
            production,
            "drift-check",
            "new batches " + ",".join(checked),
            {"f1": check.f1_new_data, **check.to_dict()},
            run.run_id,
        )


def _score(
    workspace: Workspace, run: RunContext, result: PassResult, candidate: str, schema: Schema
) -> Overlap:
    """Score the candidate and production on the same test data; count the test rows that are
    also training rows."""
    from beryl.model.scoring import evaluate, overlap_with_training, read_test_data

    settings, registry, history = workspace.settings, workspace.registry, workspace.history
    test_data = read_test_data(workspace, schema)  # read once: both versions are scored on it
    overlap = overlap_with_training(workspace.dataset, test_data.frame, schema)
    result.test_overlap = overlap.to_dict()
    metrics = evaluate(workspace, candidate, test_data)
    metrics["test_overlap"] = result.test_overlap
    registry.record_metrics(candidate, metrics)
    atomic_write_text(settings.model_folder / LATEST_SCORE_FILE, f"{metrics['f1']}\n")
    result.candidate_f1 = metrics["f1"]
    history.record_score(candidate, "candidate", "test data", metrics, run.run_id)
    production = result.production
    if production is not None:
        try:
            prod_metrics = evaluate(workspace, production, test_data)
        except DataError as exc:  # e.g. a column re-typed since production was trained
            result.notes.append(
                f"Production {production} cannot be scored on the test data ({exc.message}): "
                "the candidate is judged alone."
            )
        else:
            registry.record_metrics(production, prod_metrics)
            result.production_f1 = prod_metrics["f1"]
            history.record_score(production, "production", "test data", prod_metrics, run.run_id)
    return overlap


def _after_promotion(
    workspace: Workspace,
    run: RunContext,
    result: PassResult,
    move: Move,
    candidate: str,
    *,
    call_api: ApiCaller | None,
    report: bool,
) -> None:
    """Production has moved: a step that fails is recorded, the others still run, and the next
    pass's repair finishes what failed (deployment, records, report)."""
    from beryl.loop.promotion import record
    from beryl.model.deployment import materialise

    def record_move() -> None:
        record(workspace, move)
        workspace.registry.record_decision(
            candidate, {"outcome": PROMOTED, "reason": result.reason, "run": run.run_id}
        )

    def write_report() -> None:
        from beryl.monitoring.reporting import build_report

        result.reports = build_report(workspace, candidate)

    def api_calls() -> None:
        assert call_api is not None
        result.api_calls = call_api(workspace)

    steps: list[tuple[str, Callable[[], object]]] = [
        ("deploy", lambda: materialise(workspace)),
        ("record", record_move),
    ]
    if report:
        steps.append(("report", write_report))
    if call_api is not None:
        steps.append(("apicalls", api_calls))
    for name, step in steps:
        try:
            with run.step(name):
                step()
        except (BerylError, OSError) as exc:
            result.errors.append(f"{name}: {_one_line(exc)}")
    if result.errors:
        result.exit_code = EXIT_PROMOTED_WITH_ERRORS


def _refresh_report(workspace: Workspace, run: RunContext, result: PassResult) -> None:
    """A pass that ingested rebuilds the report, so that it shows this pass's drift, files and
    decision; a rebuild that fails is named in the summary and the pass exits 10."""
    if result.ingestion is None or not workspace.registry.ids():
        return
    from beryl.monitoring.reporting import build_report

    try:
        with run.step("report"):
            result.reports = build_report(workspace)
    except (BerylError, OSError) as exc:
        result.errors.append(f"report: {_one_line(exc)}")
        if result.exit_code == EXIT_OK:
            result.exit_code = EXIT_PARTIAL


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, OSError) and not isinstance(exc, BerylError):
        message, hint = describe_os_error(exc)
        return f"{message} ({hint})"
    return str(exc)
