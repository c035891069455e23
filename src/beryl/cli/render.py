"""How results are shown: tables and lines on the console, or JSON for scripts.

Commands call one library function and hand its typed result here; nothing here changes the
workspace or decides anything.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.table import Table

from beryl.cli.base import console, print_json

if TYPE_CHECKING:
    from beryl.data.demo import DemoWorkspace
    from beryl.data.ingestion import IngestionResult
    from beryl.loop.passes import PassResult
    from beryl.model.registry import ModelCard
    from beryl.monitoring.diagnostics import Diagnostics
    from beryl.monitoring.results import DriftResult
    from beryl.monitoring.store import OutboxEntry, RunRecord


def fmt(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def workspace_made(workspace: DemoWorkspace) -> None:
    console.print(f"[green]Workspace ready[/] in {workspace.root}")
    console.print(f"  config        {workspace.config}")
    console.print(
        f"  source files  {len(workspace.source_files)} in {workspace.source_files[0].parent}"
    )
    console.print(
        f"  practice      {len(workspace.practice_files)} in {workspace.practice_files[0].parent}"
    )
    console.print(f"  test data     {workspace.test_file}")
    console.print(f"Next: beryl --config {workspace.config} ingest")


def ingestion(result: IngestionResult, *, as_json: bool) -> None:
    if as_json:
        print_json(
            {
                "records": [r.to_dict() for r in result.records],
                "batch": result.batch.to_dict() if result.batch else None,
                "deferred": result.deferred,
                "dataset_rows": result.dataset_rows,
            }
        )
        return
    if not result.records and not result.deferred:
        console.print("No new files in the input folder.")
        return
    table = Table(title="Ingestion")
    for column in ("file", "status", "rows read", "rows kept", "reason"):
        table.add_column(column)
    for record in result.records:
        style = {"ingested": "green", "quarantined": "red"}.get(record.status, "yellow")
        table.add_row(
            record.name,
            f"[{style}]{record.status}[/]",
            str(record.rows_read),
            str(record.rows_kept),
            record.reason or "",
        )
    console.print(table)
    for name in result.deferred:
        console.print(f"[yellow]{name}[/] is still being written; it will be read next time")
    console.print(f"{result.rows_added} new rows; the dataset now has {result.dataset_rows} rows.")
    if result.partial:
        console.print(
            "[red]Some files were quarantined[/]: fix them and save them again to retry. "
            "Nothing was deleted."
        )


def trained(card: ModelCard, latest: Path, *, as_json: bool) -> None:
    if as_json:
        print_json(card.to_dict())
        return
    console.print(
        f"Trained [bold]{card.id}[/] on {card.training['rows']} rows "
        f"({len(card.training['batches'])} batches) → {latest}"
    )
    _tuning(card.tuning)


def _tuning(tuning: dict[str, Any]) -> None:
    """How a version's settings were chosen (its card's ``tuning``), a line each."""
    from beryl.model.tuning import describe  # numpy and pandas: only when a card is shown

    for line in describe(tuning):
        console.print(line, highlight=False)


def card(model: ModelCard, *, as_json: bool) -> None:
    """``beryl models show``: the card, readable (or as JSON)."""
    if as_json:
        print_json(model.to_dict())
        return
    console.print(
        f"[bold]{model.id}[/], trained {model.created} on {model.training.get('rows')} rows "
        f"({len(model.training.get('batches', []))} batches)"
    )
    _tuning(model.tuning)
    fixed = {k: v for k, v in model.parameters.items() if k in ("C", "class_weight", "max_iter")}
    console.print(f"Estimator: {model.parameters.get('engine', '?')}, {fixed}", highlight=False)
    if model.metrics:
        metrics(model.id, model.metrics, as_json=False)
    if model.decision:
        console.print(f"Decision: {model.decision.get('outcome')} ({model.decision.get('reason')})")


def metrics(version: str, values: dict[str, Any], *, as_json: bool) -> None:
    if as_json:
        print_json({"version": version, **values})
        return
    table = Table(title=f"Scores of {version} on {values.get('n', '?')} test rows")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for name in ("f1", "precision", "recall", "accuracy", "roc_auc", "brier", "threshold"):
        value = values.get(name)
        table.add_row(name, "n/a" if value is None else f"{value:.4f}")
    console.print(table)
    curve = values.get("reliability")
    if curve:
        console.print(
            "reliability (predicted → observed rate of "
            f"{values.get('positive_label')}, rows): "
            + "; ".join(f"{p['predicted']:.2f} → {p['observed']:.2f} ({p['rows']})" for p in curve),
            highlight=False,
        )
    matrix = values.get("confusion_matrix")
    if matrix:
        console.print(
            f"confusion matrix (rows actual, columns predicted; {values['confusion_labels']}):"
            f" {matrix}"
        )


def model_versions(
    cards: list[ModelCard], damaged: dict[str, str], production: str | None, *, as_json: bool
) -> None:
    if as_json:
        listed: list[dict[str, Any]] = [
            {"id": c.id, "created": c.created, "f1": c.f1, "production": c.id == production}
            for c in cards
        ]
        listed += [
            {"id": v, "damaged": why, "production": v == production} for v, why in damaged.items()
        ]
        print_json(sorted(listed, key=lambda e: int(e["id"][1:])))
        return
    if not cards and not damaged:
        console.print("No model versions yet: run `beryl train`.")
        return
    table = Table(title="Model versions")
    for column in ("version", "created", "rows", "F1", ""):
        table.add_column(column)
    rows = [
        (
            card.id,
            card.created,
            str(card.training.get("rows")),
            "—" if card.f1 is None else f"{card.f1:.4f}",
            "[green]production[/]" if card.id == production else "",
        )
        for card in cards
    ]
    rows += [
        (
            v,
            "—",
            "—",
            "—",
            ("[green]production[/], " if v == production else "") + f"[red]damaged[/]: {why}",
        )
        for v, why in damaged.items()
    ]
    for row in sorted(rows, key=lambda r: int(r[0][1:])):
        table.add_row(*row)
    console.print(table)


def diagnostics(result: Diagnostics, *, as_json: bool) -> None:
    if as_json:
        print_json(result.to_dict())
        return
    console.print(
        f"Production model: [bold]{result.production_version or 'none'}[/]; "
        f"dataset: {result.dataset_rows} rows"
    )
    stats = Table(title="Summary statistics")
    for column in ("column", "mean", "median", "std", "count", "min", "max", "missing %"):
        stats.add_column(column, justify="right" if column != "column" else "left")
    for name, values in result.summary_stats.items():
        stats.add_row(
            name,
            *(fmt(values[k]) for k in ("mean", "median", "std", "count", "min", "max")),
            f"{result.missing_percent.get(name, 0.0):.2f}",
        )
    console.print(stats)
    others = {k: v for k, v in result.missing_percent.items() if k not in result.summary_stats}
    console.print("Missing values (%): " + ", ".join(f"{k} {v:.2f}" for k, v in others.items()))
    console.print(
        "Timings of the last real runs: "
        + ", ".join(f"{k.removesuffix('_s')} {fmt(v)} s" for k, v in result.timings.items())
    )
    if result.measured_timings is not None:
        console.print(
            "Measured now on a scratch copy: "
            + ", ".join(
                f"{k.removesuffix('_s')} {v:.3f} s" for k, v in result.measured_timings.items()
            )
        )
    if result.predictions is not None:
        preds = result.predictions.predictions
        more = "…" if len(preds) > 20 else ""
        console.print(f"Predictions on the test data ({len(preds)} rows): {preds[:20]}{more}")
    if result.data_drift is not None:
        drift_table(result.data_drift)
    if result.model_drift is not None:
        from beryl.monitoring.panels import model_drift_summary

        console.print(
            "Model drift check — " + model_drift_summary([result.model_drift]), highlight=False
        )
    if result.quarantined:
        console.print(
            f"[red]{len(result.quarantined)} input file(s) quarantined[/] (fix or remove them):",
            highlight=False,
        )
        for q in result.quarantined:
            console.print(f"  {q['name']}: {q['reason']} (since {q['time']})", highlight=False)
    if result.outdated_packages is not None:
        table = Table(title="Dependencies")
        for column in ("module", "installed", "latest", "outdated"):
            table.add_column(column)
        for row in result.outdated_packages:
            flag = {True: "[yellow]yes[/]", False: "no", None: "unknown"}[row["outdated"]]
            table.add_row(row["module"], row["installed"], row["latest"], flag)
        console.print(table)


def drift_table(drift: DriftResult) -> None:
    verdict = {
        "drifted": f"[red]dataset drift[/] (share {drift.drift_share:.2f})",
        "not drifted": f"no dataset drift (share {drift.drift_share:.2f})",
        "not tested": "[yellow]not tested[/]",
    }[drift.verdict]
    note = f"; {drift.note}" if drift.note else ""
    table = Table(
        title=f"Data drift of the latest batch vs {drift.reference.model_version}'s "
        f"training data: {verdict}{note}"
    )
    for column in ("feature", "test", "statistic", "p-value", "distance", "drifted"):
        table.add_column(column)
    for name, feature in drift.features.items():
        table.add_row(
            name,
            feature.test,
            fmt(feature.statistic),
            "—" if feature.p_value is None else f"{feature.p_value:.2g}",
            f"{feature.distance_name} {fmt(feature.distance)}",
            {"drifted": "[red]yes[/]", "not drifted": "no"}.get(
                feature.verdict, f"not tested ({feature.note})"
            ),
        )
    console.print(table)


def runs(records: list[RunRecord], *, as_json: bool) -> None:
    if as_json:
        print_json([r.__dict__ | {"steps": [s.__dict__ for s in r.steps]} for r in records])
        return
    table = Table(title="Recent runs")
    for column in ("id", "command", "started", "seconds", "status", "outcome", "steps"):
        table.add_column(column)
    for run in records:
        steps = ", ".join(f"{s.name} {fmt(s.duration_s)}s" for s in run.steps)
        outcome = str(run.detail.get("outcome") or run.summary or "")
        table.add_row(
            str(run.id), run.command, run.started, fmt(run.duration_s), run.status, outcome, steps
        )
    console.print(table)


def passed(result: PassResult, *, as_json: bool) -> None:
    if as_json:
        print_json(
            {
                "run_id": result.run_id,
                "outcome": result.outcome,
                "reason": result.reason,
                "exit_code": result.exit_code,
                "candidate": result.candidate,
                "candidate_f1": result.candidate_f1,
                "production": result.production,
                "production_f1": result.production_f1,
                "drift_check": result.drift_check.to_dict() if result.drift_check else None,
                "test_overlap": result.test_overlap,
                "errors": result.errors,
                "quarantined": [{"name": r.name, "reason": r.reason} for r in result.quarantined],
                "timings": result.timings,
                "api_calls": result.api_calls.__dict__ if result.api_calls else None,
            }
        )
        return
    for line in result.summary():
        console.print(line, highlight=False)


def lines(text: list[str]) -> None:
    for line in text:
        console.print(line, highlight=False)


def outbox(entries: list[OutboxEntry], *, as_json: bool) -> None:
    if as_json:
        print_json([{k: v for k, v in e.__dict__.items() if k != "payload"} for e in entries])
        return
    table = Table(title="Webhook deliveries")
    for column in ("event", "endpoint", "attempts", "state", "last error"):
        table.add_column(column)
    for entry in entries:
        state = (
            f"delivered {entry.delivered}"
            if entry.delivered
            else f"given up {entry.failed}"
            if entry.failed
            else f"next at {entry.next_attempt}"
        )
        table.add_row(
            entry.event_id, entry.endpoint, str(entry.attempts), state, entry.last_error or ""
        )
    console.print(table)
