"""The ``beryl`` command line: one group, each command a few lines over the library."""

from __future__ import annotations

import contextlib
import functools
import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import click
from rich.console import Console
from rich.table import Table

from beryl import config as config_module
from beryl.config import Settings
from beryl.errors import EXIT_PARTIAL, BerylError, StateError, describe_os_error

F = TypeVar("F", bound=Callable[..., Any])

# Wide output when piped or logged (cron, CI), the terminal's width otherwise.
console = Console(width=None if sys.stdout.isatty() else 160)
err_console = Console(stderr=True, width=None if sys.stderr.isatty() else 160)


def _settings(ctx: click.Context, path: str | None) -> Settings:
    chosen = path or (ctx.find_root().params.get("config") if ctx.find_root() else None)
    # model parameters are checked by whatever trains (it imports scikit-learn; most commands
    # never need it)
    return config_module.load(config_module.resolve_path(chosen), check_model=False)


def _config_option(name: str) -> Callable[[F], F]:
    """The ``--config`` option, on the group and on every command that reads a workspace."""
    return click.option(
        "--config",
        name,
        type=click.Path(dir_okay=True, path_type=str),
        default=None,
        help="Workspace config file (default: $BERYL_CONFIG, else ./config.json).",
    )


def with_settings(func: F) -> F:
    """Add ``--config`` to a command and pass the loaded ``Settings`` as its first argument."""

    @_config_option("config_path")
    @click.pass_context  # type: ignore[arg-type]
    @functools.wraps(func)
    def wrapper(ctx: click.Context, config_path: str | None, **kwargs: Any) -> Any:
        return ctx.invoke(func, _settings(ctx, config_path), **kwargs)

    return wrapper  # type: ignore[return-value]


@contextmanager
def recorded(
    settings: Settings, command: str, *, exclusive: bool = True, repair: bool = True
) -> Iterator[Any]:
    """Record the command as a run with one timed step in the history database.

    ``exclusive`` commands change the workspace: they hold the workspace lock (never beside a
    pass) and first repair what a killed pass may have left (unless ``repair`` is False).
    """
    from beryl.loop.passes import pass_lock, recover
    from beryl.monitoring.history import History

    with contextlib.ExitStack() as stack:
        if exclusive:
            stack.enter_context(pass_lock(settings))
            if repair:
                recover(settings)
        try:
            run = stack.enter_context(History(settings.history_db).run(command))
        except StateError as exc:
            if exclusive:
                raise
            # A command that changes nothing still works where the history cannot be written
            # (a read-only workspace); it is then not recorded.
            err_console.print(f"[yellow]note[/]: not recorded in the history ({exc.message})")
            yield _Unrecorded(), {}
            return
        detail = stack.enter_context(run.step(command))
        yield run, detail


class _Unrecorded:
    """Stands in for a recorded run when the history cannot be written."""

    run_id = 0
    status = "ok"
    exit_code = 0


def _print_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, default=str))


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@_config_option("config")
@click.version_option(package_name="beryl")
def cli(config: str | None) -> None:
    """Beryl: train, serve and monitor a customer-attrition model from a folder of CSV files."""


# -- workspace ------------------------------------------------------------------------------------
@cli.command()
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.option("--rows", default=2000, show_default=True, help="Customers in the source files.")
@click.option("--files", default=3, show_default=True, help="Number of source CSV files.")
@click.option("--seed", default=0, show_default=True, help="Random seed of the generator.")
@click.option("--force", is_flag=True, help="Write into a folder that already has a config.json.")
def init(directory: Path, rows: int, files: int, seed: int, force: bool) -> None:
    """Create a ready workspace in DIRECTORY: config.json, source, practice and test data."""
    from beryl.data.demo import init_workspace

    workspace = init_workspace(directory, rows=rows, files=files, seed=seed, force=force)
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


@cli.command("add-batch")
@with_settings
@click.option("--name", default=None, help="File name (default: batch-<seed>.csv).")
@click.option("--rows", default=500, show_default=True)
@click.option("--seed", default=1, show_default=True)
@click.option("--shift", default=0.0, show_default=True, help="Raise activity by this fraction.")
@click.option("--label-noise", default=0.0, show_default=True, help="Share of flipped labels.")
def add_batch(
    settings: Settings, name: str | None, rows: int, seed: int, shift: float, label_noise: float
) -> None:
    """Write one more generated CSV file into the input folder (a new batch arriving)."""
    from beryl.data.demo import add_batch as write_batch

    path = write_batch(
        settings.input_folder,
        name or f"batch-{seed}.csv",
        rows=rows,
        seed=seed,
        shift=shift,
        label_noise=label_noise,
    )
    console.print(f"wrote {rows} rows to {path}")


# -- stages ---------------------------------------------------------------------------------------
@cli.command()
@with_settings
@click.option("--json", "as_json", is_flag=True, help="Print the ingestion record as JSON.")
def ingest(settings: Settings, as_json: bool) -> None:
    """Ingest new CSV files from the input folder into the consolidated dataset."""
    from beryl.data.ingestion import ingest as run_ingest

    with recorded(settings, "ingest") as (run, detail), _progress(not as_json) as progress:
        result = run_ingest(settings, progress=progress)
        detail.update(files=len(result.records), rows_added=result.rows_added)
        if result.partial:
            run.status, run.exit_code = "partial", EXIT_PARTIAL
    if as_json:
        _print_json(
            {
                "records": [r.to_dict() for r in result.records],
                "batch": result.batch.to_dict() if result.batch else None,
                "deferred": result.deferred,
                "dataset_rows": result.dataset_rows,
            }
        )
    else:
        _print_ingestion(result)
    if result.partial:
        sys.exit(EXIT_PARTIAL)


def _print_ingestion(result: Any) -> None:
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


@contextmanager
def _progress(show: bool) -> Iterator[Callable[[str, int, int], None] | None]:
    if not show or not console.is_terminal:
        yield None
        return
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    with Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()
    ) as bar:
        task = bar.add_task("reading files", total=None)

        def update(name: str, done: int, total: int) -> None:
            bar.update(task, completed=done, total=total, description=f"reading {name}".strip())

        yield update


@cli.command()
@with_settings
@click.option("--json", "as_json", is_flag=True, help="Print the model card as JSON.")
def train(settings: Settings, as_json: bool) -> None:
    """Train a candidate model on the whole consolidated dataset."""
    from beryl.model.training import train as run_train

    with recorded(settings, "train") as (_, detail):
        with console.status("training"):
            card = run_train(settings)
        detail.update(version=card.id, rows=card.training["rows"])
    if as_json:
        _print_json(card.to_dict())
        return
    console.print(
        f"Trained [bold]{card.id}[/] on {card.training['rows']} rows "
        f"({len(card.training['batches'])} batches) → {settings.model_folder / 'trainedmodel.pkl'}"
    )


@cli.command()
@with_settings
@click.option("--version", "version", default=None, help="Model version (default: latest).")
@click.option("--json", "as_json", is_flag=True)
def score(settings: Settings, version: str | None, as_json: bool) -> None:
    """Score a model version on the test data (F1 for the positive label, and more)."""
    from beryl.model.scoring import score as run_score

    with recorded(settings, "score") as (_, detail):
        card = run_score(settings, version)
        detail.update(version=card.id, f1=card.metrics["f1"])
    if as_json:
        _print_json({"version": card.id, **card.metrics})
        return
    _print_metrics(card.id, card.metrics)
    console.print(f"F1 written to {settings.model_folder / 'latestscore.txt'}")


def _print_metrics(version: str, metrics: dict[str, Any]) -> None:
    table = Table(title=f"Scores of {version} on {metrics.get('n', '?')} test rows")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for name in ("f1", "precision", "recall", "accuracy", "roc_auc"):
        value = metrics.get(name)
        table.add_row(name, "n/a" if value is None else f"{value:.4f}")
    console.print(table)
    matrix = metrics.get("confusion_matrix")
    if matrix:
        console.print(
            f"confusion matrix (rows actual, columns predicted; {metrics['confusion_labels']}):"
            f" {matrix}"
        )


@cli.command()
@with_settings
@click.option("--version", "version", default=None, help="Model version (default: latest).")
def deploy(settings: Settings, version: str | None) -> None:
    """Put a model version into production and materialise prod_deployment_path."""
    from beryl.model.deployment import deploy as run_deploy

    with recorded(settings, "deploy") as (run, detail):
        deployment = run_deploy(settings, version)
        detail.update(version=deployment.version)
        if deployment.move:
            from beryl.monitoring.history import History

            History(settings.history_db).record_promotion(
                deployment.move.__dict__, run_id=run.run_id
            )
    console.print(
        f"[green]{deployment.version} is in production[/]: {settings.prod_folder} "
        f"(→ {deployment.folder.name})"
    )


# -- models ---------------------------------------------------------------------------------------
@cli.group()
def models() -> None:
    """List, inspect, promote and roll back model versions."""


@models.command("list")
@with_settings
@click.option("--json", "as_json", is_flag=True)
def models_list(settings: Settings, as_json: bool) -> None:
    """Every model version, with its F1 and whether it is in production (and those whose card
    is damaged, marked)."""
    from beryl.errors import IntegrityError
    from beryl.model.registry import Registry

    registry = Registry(settings.model_folder)
    cards = registry.cards()
    damaged = registry.damaged()
    try:
        production = registry.production()
    except IntegrityError as exc:  # still list the versions: one of them is the fix
        production = None
        err_console.print(f"[yellow]note[/]: {exc}", highlight=False, soft_wrap=True)
    if as_json:
        listed: list[dict[str, Any]] = [
            {"id": c.id, "created": c.created, "f1": c.f1, "production": c.id == production}
            for c in cards
        ]
        listed += [
            {"id": v, "damaged": why, "production": v == production} for v, why in damaged.items()
        ]
        _print_json(sorted(listed, key=lambda e: int(e["id"][1:])))
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


@models.command("show")
@with_settings
@click.argument("version")
def models_show(settings: Settings, version: str) -> None:
    """Print a version's model card as JSON."""
    from beryl.model.registry import Registry

    _print_json(Registry(settings.model_folder).card(version).to_dict())


@models.command("promote")
@with_settings
@click.argument("version")
def models_promote(settings: Settings, version: str) -> None:
    """Put VERSION into production (same as `beryl deploy --version VERSION`)."""
    from beryl.model.deployment import deploy as run_deploy

    with recorded(settings, "promote") as (run, _):
        deployment = run_deploy(settings, version, reason="promoted by hand")
        if deployment.move:
            from beryl.monitoring.history import History

            History(settings.history_db).record_promotion(deployment.move.__dict__, run.run_id)
    console.print(f"[green]{deployment.version} is in production[/]")


@models.command("rollback")
@with_settings
def models_rollback(settings: Settings) -> None:
    """Put the version that production replaced back into production."""
    from beryl.model.deployment import rollback

    with recorded(settings, "rollback") as (run, _):
        deployment = rollback(settings)
        if deployment.move:
            from beryl.monitoring.history import History

            History(settings.history_db).record_promotion(deployment.move.__dict__, run.run_id)
    console.print(f"[green]rolled back: {deployment.version} is in production[/]")


@models.command("sign")
@with_settings
@click.argument("versions", nargs=-1)
@click.option("--all", "every", is_flag=True, help="Every version in the models folder.")
def models_sign(settings: Settings, versions: tuple[str, ...], every: bool) -> None:
    """Make signed data-only models for versions an older Beryl trained, from their pickles.

    This loads the pickles (which can run code): use it only on a models folder you trust.
    It also signs the production pointer and the promotion log with the current key.
    """
    from beryl.model.registry import Registry

    if not versions and not every:
        raise click.UsageError("name the versions to sign, or give --all")
    with recorded(settings, "sign", repair=False):  # repair needs what this signs
        registry = Registry(settings.model_folder)
        for version in registry.ids() if every else versions:
            console.print(f"{version}: {registry.sign(version)}")
        for line in registry.sign_records():
            console.print(line)


# -- dataset --------------------------------------------------------------------------------------
@cli.group("dataset")
def dataset_group() -> None:
    """Change the stored dataset itself."""


@dataset_group.command("retype")
@with_settings
@click.argument("column")
@click.option(
    "--as",
    "kind",
    type=click.Choice(["categorical", "numeric"]),
    required=True,
    help="The column's new type.",
)
def dataset_retype(settings: Settings, column: str, kind: str) -> None:
    """Re-type COLUMN of every stored batch as categorical or numeric.

    The config must agree first: numeric_features and categorical_features in config.json
    absent, or listing COLUMN under its new type. Files quarantined for the column's old type
    are read again by the next ingestion; models trained before keep their own types.
    """
    from beryl.data.retype import retype

    with recorded(settings, "retype") as (_, detail):
        result = retype(settings, column, "categorical" if kind == "categorical" else "numeric")
        detail.update(column=column, kind=kind, changed=result.changed, rows=result.rows)
    if not result.changed:
        console.print(f"{column!r} is {kind} already: nothing to do.")
        return
    merged = f"; {result.merged} row(s) equal once converted kept once" if result.merged else ""
    console.print(
        f"[green]Re-typed {column!r} as {kind}[/] in {len(result.batches)} batch(es), "
        f"{result.rows} rows{merged}."
    )
    listed = settings.categorical_features if kind == "categorical" else settings.numeric_features
    if listed is None:
        console.print(
            f"config.json has no {kind}_features: if you add the feature lists, list "
            f"{column!r} in {kind}_features."
        )
    console.print(
        "Files quarantined for its old type are read again by the next `beryl ingest` or "
        "`beryl run`; the next `beryl train` or `beryl run` trains on the new types."
    )


@dataset_group.command("set-aside")
@with_settings
@click.argument("batches", nargs=-1)
@click.option("--all", "every", is_flag=True, help="Every batch (a dataset an older Beryl made).")
def dataset_set_aside(settings: Settings, batches: tuple[str, ...], every: bool) -> None:
    """Move BATCHES Beryl cannot read to ingesteddata/.recovered/; their files are read again.

    The files that fed them are marked as not ingested, so the next `beryl ingest` or
    `beryl run` reads them again from the input folder and their rows come back.
    """
    from beryl.data.dataset import Dataset, set_aside_batches

    if not batches and not every:
        raise click.UsageError("name the batches to set aside, or give --all")
    # No repair first: it refuses the very batches this sets aside.
    with recorded(settings, "set-aside", repair=False) as (_, detail):
        result = set_aside_batches(
            Dataset(settings.output_folder),
            None if every else list(batches),
            write_snapshot=settings.write_csv_snapshot,
        )
        detail.update(batches=result.batches, rows=result.rows, files=result.files)
    for line in result.summary():
        console.print(line, highlight=False)


# -- diagnostics and reports ----------------------------------------------------------------------
@cli.command()
@with_settings
@click.option("--json", "as_json", is_flag=True, help="Print everything as JSON.")
@click.option("--measure", is_flag=True, help="Re-time ingestion and training on a scratch copy.")
@click.option("--no-outdated", is_flag=True, help="Skip the package-index lookup.")
def diagnose(settings: Settings, as_json: bool, measure: bool, no_outdated: bool) -> None:
    """Predictions, summary statistics, missing values, timings and outdated packages."""
    from beryl.monitoring.diagnostics import diagnose as run_diagnose

    with recorded(settings, "diagnose", exclusive=False):
        result = run_diagnose(settings, measure=measure, check_outdated=not no_outdated)
    if as_json:
        _print_json(result)
        return
    _print_diagnostics(result)


def _print_diagnostics(result: dict[str, Any]) -> None:
    console.print(
        f"Production model: [bold]{result['production_version'] or 'none'}[/]; "
        f"dataset: {result['dataset_rows']} rows"
    )
    stats = Table(title="Summary statistics")
    for column in ("column", "mean", "median", "std", "count", "min", "max", "missing %"):
        stats.add_column(column, justify="right" if column != "column" else "left")
    for name, values in result["summary_stats"].items():
        stats.add_row(
            name,
            *(_fmt(values[k]) for k in ("mean", "median", "std", "count", "min", "max")),
            f"{result['missing_percent'].get(name, 0.0):.2f}",
        )
    console.print(stats)
    others = {
        k: v for k, v in result["missing_percent"].items() if k not in result["summary_stats"]
    }
    console.print("Missing values (%): " + ", ".join(f"{k} {v:.2f}" for k, v in others.items()))
    timings = result["timings"]
    console.print(
        "Timings of the last real runs: "
        + ", ".join(f"{k.removesuffix('_s')} {_fmt(v)} s" for k, v in timings.items())
    )
    if "measured_timings" in result:
        measured = result["measured_timings"]
        console.print(
            "Measured now on a scratch copy: "
            + ", ".join(f"{k.removesuffix('_s')} {v:.3f} s" for k, v in measured.items())
        )
    if "predictions" in result:
        preds = result["predictions"]["predictions"]
        more = "…" if len(preds) > 20 else ""
        console.print(f"Predictions on the test data ({len(preds)} rows): {preds[:20]}{more}")
    drift = result.get("data_drift")
    if drift:
        verdict = "[red]dataset drift[/]" if drift["dataset_drift"] else "no dataset drift"
        table = Table(
            title=f"Data drift of the latest batch vs {drift['reference'].get('model_version')}'s "
            f"training data: {verdict} (share {drift['drift_share']:.2f})"
        )
        for column in ("feature", "test", "statistic", "p-value", "distance", "drifted"):
            table.add_column(column)
        for name, feature in drift["features"].items():
            table.add_row(
                name,
                feature["test"],
                _fmt(feature["statistic"]),
                "—" if feature["p_value"] is None else f"{feature['p_value']:.2g}",
                f"{feature['distance_name']} {_fmt(feature['distance'])}",
                "[red]yes[/]" if feature["drifted"] else "no",
            )
        console.print(table)
    if "outdated_packages" in result:
        table = Table(title="Dependencies")
        for column in ("module", "installed", "latest", "outdated"):
            table.add_column(column)
        for row in result["outdated_packages"]:
            flag = {True: "[yellow]yes[/]", False: "no", None: "unknown"}[row["outdated"]]
            table.add_row(row["module"], row["installed"], row["latest"], flag)
        console.print(table)


def _fmt(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


@cli.command()
@with_settings
@click.option("--version", "version", default=None, help="Model version (default: production).")
def report(settings: Settings, version: str | None) -> None:
    """Write the confusion matrix, classification report and HTML report."""
    from beryl.monitoring.reporting import build_report

    with recorded(settings, "report"):
        written = build_report(settings, version)
    for label, path in written.items():
        console.print(f"  {label:<22} {path}")


@cli.command()
@with_settings
@click.option("--limit", default=10, show_default=True)
@click.option("--json", "as_json", is_flag=True)
def history(settings: Settings, limit: int, as_json: bool) -> None:
    """Recent runs with their steps, durations and outcomes."""
    from beryl.monitoring.history import History

    runs = History(settings.history_db).runs(limit)
    if as_json:
        _print_json([r.__dict__ | {"steps": [s.__dict__ for s in r.steps]} for r in runs])
        return
    table = Table(title="Recent runs")
    for column in ("id", "command", "started", "seconds", "status", "steps"):
        table.add_column(column)
    for run in runs:
        steps = ", ".join(f"{s.name} {_fmt(s.duration_s)}s" for s in run.steps)
        table.add_row(
            str(run.id), run.command, run.started, _fmt(run.duration_s), run.status, steps
        )
    console.print(table)


@cli.command()
@with_settings
@click.argument("source", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="Where to write the scored CSV (id columns, prediction, probability).",
)
@click.option("--version", "version", default=None, help="Model version (default: production).")
def predict(settings: Settings, source: Path, output: Path, version: str | None) -> None:
    """Score a CSV file of customers with the production model, streaming in bounded memory."""
    from beryl.model.predictfile import score_file

    with console.status(f"scoring {source}") as status:
        result = score_file(
            settings,
            source,
            output,
            version=version,
            progress=lambda rows: status.update(f"scoring {source}: {rows:,} rows"),
        )
    console.print(f"{result.rows:,} rows scored by {result.version} → {result.output}")


# -- the loop and serving -------------------------------------------------------------------------
@cli.command("run")
@with_settings
@click.option("--json", "as_json", is_flag=True, help="Print the pass result as JSON.")
@click.option("--no-apicalls", is_flag=True, help="Skip the API calls after a promotion.")
def run_command(settings: Settings, as_json: bool, no_apicalls: bool) -> None:
    """One full pass: new data → ingest → drift check → train → score → promote if better."""
    from beryl.loop.passes import run_pass

    with console.status("running a pass of the loop"):
        result = run_pass(settings, call_api=not no_apicalls)
    if as_json:
        _print_json(
            {
                "run_id": result.run_id,
                "outcome": result.outcome,
                "reason": result.reason,
                "exit_code": result.exit_code,
                "candidate": result.candidate,
                "candidate_f1": result.candidate_f1,
                "production": result.production,
                "production_f1": result.production_f1,
                "drift_check": result.drift_check,
                "test_overlap": result.test_overlap,
                "errors": result.errors,
                "timings": result.timings,
                "api_calls": result.api_calls,
            }
        )
    else:
        for line in result.summary():
            console.print(line, highlight=False)
    sys.exit(result.exit_code)


@cli.command()
@with_settings
@click.option("--cron", "expression", default=None, help="Cron expression (default: config).")
@click.option("--max-passes", type=int, default=None, hidden=True)
def schedule(settings: Settings, expression: str | None, max_passes: int | None) -> None:
    """Run a pass at every tick of the schedule until SIGTERM or Ctrl-C."""
    import signal
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from beryl.loop.scheduler import run_schedule

    # The loop runs on a worker thread; the main thread only waits for its result (and gets its
    # exception). Python runs signal handlers on the main thread, so the handler's ``stop.set()``
    # never waits for a lock that the interrupted thread itself holds, as it could if the main
    # thread were inside ``stop.wait``.
    stop = threading.Event()

    def request_stop(signum: int, _frame: Any) -> None:
        console.print(f"{signal.Signals(signum).name}: stopping after the current pass")
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="beryl-schedule") as pool:
        pool.submit(
            run_schedule,
            settings,
            stop=stop,
            expression=expression,
            log=lambda line: console.print(line, highlight=False),
            max_passes=max_passes,
        ).result()


@cli.command()
@with_settings
@click.option("--install", is_flag=True, help="Add the line to your crontab.")
@click.pass_context
def cron(ctx: click.Context, settings: Settings, install: bool) -> None:
    """Print a crontab line that runs a pass on the schedule from any directory."""
    from beryl.loop.scheduler import cron_line, install_cron
    from beryl.model.signing import KEY_ENV, default_keyring

    line = cron_line(settings, settings.config_path)
    click.echo(line)
    if default_keyring().source == f"${KEY_ENV}":
        err_console.print(
            f"[yellow]note[/]: the signing key comes from ${KEY_ENV}; give cron's environment "
            "the same variable, or passes started by cron cannot use the models"
        )
    if install:
        added = install_cron(line)
        console.print("added to your crontab" if added else "already in your crontab")


@cli.command()
@with_settings
@click.option("--host", default=None, help="Listen address (default: api.host, 127.0.0.1).")
@click.option("--port", type=int, default=None, help="Port (default: api.port, 8000).")
@click.option("--workers", type=int, default=1, show_default=True)
@click.option("--access-log", is_flag=True, help="Log every request (costs throughput).")
def serve(
    settings: Settings, host: str | None, port: int | None, workers: int, access_log: bool
) -> None:
    """Serve the production model over HTTP (see /docs)."""
    from beryl.api.server import serve as run_server

    run_server(settings, host=host, port=port, workers=workers, access_log=access_log)


@cli.command()
@with_settings
@click.option("--url", default=None, help="Server base URL (default: from api in config).")
def apicalls(settings: Settings, url: str | None) -> None:
    """Call every endpoint of a running server and write the answers to apireturns.txt."""
    from beryl.api.client import call_all

    with recorded(settings, "apicalls", exclusive=False) as (run, _):
        result = call_all(settings, url)
        if not result.ok:
            run.status, run.exit_code = "failed", 1
    for call in result.calls:
        colour = "green" if call.status == 200 else "red"
        console.print(f"  {call.method:<4} {call.path:<14} [{colour}]{call.status}[/]")
    console.print(f"answers written to {result.written[0]} (and {result.written[1]})")
    if not result.ok:
        sys.exit(1)


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the CLI; a ``BerylError`` prints one line and exits with its code."""
    try:
        cli.main(args=argv, prog_name="beryl", standalone_mode=False)
    except BerylError as exc:
        err_console.print(f"[red]error:[/] {exc}", highlight=False, soft_wrap=True)
        sys.exit(exc.exit_code)
    except OSError as exc:  # the disk or the file system: never a traceback
        message, hint = describe_os_error(exc)
        err_console.print(f"[red]error:[/] {message} ({hint})", highlight=False, soft_wrap=True)
        sys.exit(StateError.exit_code)
    except click.exceptions.Abort:
        err_console.print("aborted")
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)
