"""Commands on the data: a new workspace, generated batches, ingestion, the stored dataset, and
scoring a file."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from beryl.cli import render
from beryl.cli.base import cli, console, progress, with_workspace
from beryl.errors import EXIT_PARTIAL
from beryl.loop.commands import exclusive
from beryl.workspace import Workspace


@cli.command()
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.option("--rows", default=2000, show_default=True, help="Customers in the source files.")
@click.option("--files", default=3, show_default=True, help="Number of source CSV files.")
@click.option("--seed", default=0, show_default=True, help="Random seed of the generator.")
@click.option("--force", is_flag=True, help="Write into a folder that already has a config.json.")
def init(directory: Path, rows: int, files: int, seed: int, force: bool) -> None:
    """Create a ready workspace in DIRECTORY: config.json, source, practice and test data."""
    from beryl.data.demo import init_workspace

    render.workspace_made(init_workspace(directory, rows=rows, files=files, seed=seed, force=force))


@cli.command("add-batch")
@with_workspace
@click.option("--name", default=None, help="File name (default: batch-<seed>.csv).")
@click.option("--rows", default=500, show_default=True)
@click.option("--seed", default=1, show_default=True)
@click.option("--shift", default=0.0, show_default=True, help="Raise activity by this fraction.")
@click.option("--label-noise", default=0.0, show_default=True, help="Share of flipped labels.")
def add_batch(
    workspace: Workspace, name: str | None, rows: int, seed: int, shift: float, label_noise: float
) -> None:
    """Write one more generated CSV file into the input folder (a new batch arriving)."""
    from beryl.data.demo import add_batch as write_batch

    path = write_batch(
        workspace.settings.input_folder,
        name or f"batch-{seed}.csv",
        rows=rows,
        seed=seed,
        shift=shift,
        label_noise=label_noise,
    )
    console.print(f"wrote {rows} rows to {path}")


@cli.command()
@with_workspace
@click.option("--json", "as_json", is_flag=True, help="Print the ingestion record as JSON.")
def ingest(workspace: Workspace, as_json: bool) -> None:
    """Ingest new CSV files from the input folder into the consolidated dataset."""
    from beryl.data.ingestion import ingest as run_ingest

    with exclusive(workspace, "ingest") as (run, detail), progress(not as_json) as shown:
        result = run_ingest(workspace.settings, progress=shown)
        detail.update(files=len(result.records), rows_added=result.rows_added)
        if result.partial:
            run.status, run.exit_code = "partial", EXIT_PARTIAL
    render.ingestion(result, as_json=as_json)
    if result.partial:
        sys.exit(EXIT_PARTIAL)


@cli.group("dataset")
def dataset_group() -> None:
    """Change the stored dataset itself: re-type a column, set damaged batches aside."""


@dataset_group.command("retype")
@with_workspace
@click.argument("column")
@click.option(
    "--as",
    "kind",
    type=click.Choice(["categorical", "numeric"]),
    required=True,
    help="The column's new type.",
)
def dataset_retype(workspace: Workspace, column: str, kind: str) -> None:
    """Re-type COLUMN of every stored batch as categorical or numeric.

    The config must agree first: numeric_features and categorical_features in config.json
    absent, or listing COLUMN under its new type. Files quarantined for the column's old type
    are read again by the next ingestion; models trained before keep their own types.
    """
    from beryl.data.retype import retype

    settings = workspace.settings
    with exclusive(workspace, "retype") as (_, detail):
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
@with_workspace
@click.argument("batches", nargs=-1)
@click.option("--all", "every", is_flag=True, help="Every batch (a dataset an older Beryl made).")
def dataset_set_aside(workspace: Workspace, batches: tuple[str, ...], every: bool) -> None:
    """Move BATCHES Beryl cannot read to ingesteddata/.recovered/; their files are read again.

    The files that fed them are marked as not ingested, so the next `beryl ingest` or
    `beryl run` reads them again from the input folder and their rows come back.
    """
    from beryl.data.setaside import set_aside_batches

    if not batches and not every:
        raise click.UsageError("name the batches to set aside, or give --all")
    # No repair first: it refuses the very batches this sets aside.
    with exclusive(workspace, "set-aside", repair=False) as (_, detail):
        result = set_aside_batches(workspace, None if every else list(batches))
        detail.update(batches=result.batches, rows=result.rows, files=result.files)
    render.lines(result.summary())


@cli.command()
@with_workspace
@click.argument("source", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="Where to write the scored CSV (id columns, prediction, probability; with --explain "
    "the reason columns).",
)
@click.option("--version", "version", default=None, help="Model version (default: production).")
@click.option(
    "--explain",
    "explain",
    default=None,
    metavar="K",
    help="Add K reason codes per row (two-class models): columns reason_1 .. reason_K, the "
    "features that move the row's logit for the positive label most, largest first, and "
    "reason_1_contribution .. reason_K_contribution, each one's exact contribution to that "
    "logit (positive: towards the positive label). K above the number of features gives all.",
)
def predict(
    workspace: Workspace, source: Path, output: Path, version: str | None, explain: str | None
) -> None:
    """Score a CSV file of customers with the production model, streaming in bounded memory
    (recorded for live monitoring once the output is written)."""
    from beryl.errors import ConfigError
    from beryl.model.predict import ExplainError, explain_count
    from beryl.model.predictfile import score_file
    from beryl.monitoring.live import LiveRecorder

    try:
        reasons = None if explain is None else explain_count(explain)
    except ExplainError as exc:
        raise ConfigError(f"--explain {exc}") from exc
    live = LiveRecorder.for_settings(workspace.settings, source="predict", background=False)
    with console.status(f"scoring {source}") as status:
        try:
            result = score_file(
                workspace.settings,
                source,
                output,
                version=version,
                progress=lambda rows: status.update(f"scoring {source}: {rows:,} rows"),
                reasons=reasons,
                observe=None if live is None else live.record_frame,
            )
        except BaseException:
            if live is not None:
                live.discard()  # no output written: nothing was answered
            raise
    if live is not None:
        live.close()  # never fails the command: a failed write is one warning
    console.print(f"{result.rows:,} rows scored by {result.version} → {result.output}")
