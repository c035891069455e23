"""Commands on models: train, score, put a version into production, inspect the versions."""

from __future__ import annotations

import json
from pathlib import Path

import click

from beryl.cli import render
from beryl.cli.base import cli, console, note, with_workspace
from beryl.loop.commands import exclusive
from beryl.model.registry import LATEST_MODEL_FILE, LATEST_SCORE_FILE
from beryl.workspace import Workspace


@cli.command()
@with_workspace
@click.option("--json", "as_json", is_flag=True, help="Print the model card as JSON.")
def train(workspace: Workspace, as_json: bool) -> None:
    """Train a candidate model on the whole consolidated dataset."""
    from beryl.model.training import train as run_train

    with exclusive(workspace, "train") as (_, detail), console.status("training"):
        card = run_train(workspace)
        detail.update(version=card.id, rows=card.training["rows"])
    render.trained(card, workspace.settings.model_folder / LATEST_MODEL_FILE, as_json=as_json)


@cli.command()
@with_workspace
@click.option("--version", "version", default=None, help="Model version (default: latest).")
@click.option("--json", "as_json", is_flag=True)
def score(workspace: Workspace, version: str | None, as_json: bool) -> None:
    """Score a model version on the test data (F1 for the positive label, and more)."""
    from beryl.model.scoring import score as run_score

    with exclusive(workspace, "score") as (_, detail):
        card = run_score(workspace.settings, version)
        detail.update(version=card.id, f1=card.metrics["f1"])
    render.metrics(card.id, card.metrics, as_json=as_json)
    if not as_json:
        console.print(f"F1 written to {workspace.settings.model_folder / LATEST_SCORE_FILE}")


def _deploy(workspace: Workspace, command: str, version: str | None, reason: str) -> None:
    from beryl.loop.promotion import deploy

    with exclusive(workspace, command) as (run, detail):
        deployment = deploy(workspace, version, reason=reason, run_id=run.run_id)
        detail.update(version=deployment.version)
    console.print(
        f"[green]{deployment.version} is in production[/]: {workspace.settings.prod_folder} "
        f"(→ {deployment.folder.name})"
    )


@cli.command()
@with_workspace
@click.option("--version", "version", default=None, help="Model version (default: latest).")
def deploy(workspace: Workspace, version: str | None) -> None:
    """Put a model version (default: the latest) into production and materialise
    prod_deployment_path (`beryl models promote` for a named version)."""
    _deploy(workspace, "deploy", version, "deployed by hand")


@cli.group()
def models() -> None:
    """List, inspect, promote and roll back model versions."""


@models.command("list")
@with_workspace
@click.option("--json", "as_json", is_flag=True)
def models_list(workspace: Workspace, as_json: bool) -> None:
    """Every model version, with its F1 and whether it is in production (and those whose card
    is damaged, marked)."""
    from beryl.errors import IntegrityError

    registry = workspace.registry
    try:
        production = registry.production()
    except IntegrityError as exc:  # still list the versions: one of them is the fix
        production = None
        note(str(exc))
    render.model_versions(registry.cards(), registry.damaged(), production, as_json=as_json)


@models.command("show")
@with_workspace
@click.argument("version")
@click.option("--json", "as_json", is_flag=True, help="Print the whole model card as JSON.")
def models_show(workspace: Workspace, version: str, as_json: bool) -> None:
    """A version's model card: how its settings and threshold were chosen, and its scores."""
    render.card(workspace.registry.card(version), as_json=as_json)


@models.command("promote")
@with_workspace
@click.argument("version")
def models_promote(workspace: Workspace, version: str) -> None:
    """Put VERSION into production (what `beryl deploy --version VERSION` does)."""
    _deploy(workspace, "promote", version, "promoted by hand")


@models.command("rollback")
@with_workspace
def models_rollback(workspace: Workspace) -> None:
    """Put the version that production replaced back into production."""
    from beryl.loop.promotion import rollback

    with exclusive(workspace, "rollback") as (run, _):
        deployment = rollback(workspace, run_id=run.run_id)
    console.print(f"[green]rolled back: {deployment.version} is in production[/]")


@models.command("sign")
@with_workspace
@click.argument("versions", nargs=-1)
@click.option("--all", "every", is_flag=True, help="Every version in the models folder.")
def models_sign(workspace: Workspace, versions: tuple[str, ...], every: bool) -> None:
    """Make signed data-only models for versions an older Beryl trained, from their pickles.

    This loads the pickles (which can run code): use it only on a models folder you trust.
    It also signs the production pointer and the promotion log with the current key.
    """
    if not versions and not every:
        raise click.UsageError("name the versions to sign, or give --all")
    registry = workspace.registry
    with exclusive(workspace, "sign", repair=False):  # repair needs what this signs
        done = [f"{v}: {registry.sign(v)}" for v in (registry.ids() if every else versions)]
        done += registry.sign_records()
    render.lines(done)


@models.command("export")
@with_workspace
@click.argument("version")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["mlflow", "onnx"]),
    required=True,
    help="mlflow: a model directory (sklearn and python_function flavours); onnx: model.onnx.",
)
@click.option(
    "-o",
    "--output",
    "output",
    type=click.Path(path_type=Path),
    required=True,
    help="The folder to write (new, or empty).",
)
@click.option("--json", "as_json", is_flag=True)
def models_export(
    workspace: Workspace, version: str, fmt: str, output: Path, as_json: bool
) -> None:
    """Write VERSION (an id, `production` or `latest`) for MLflow or ONNX runtimes, checked to
    score as Beryl does (probabilities to 1e-9, the same labels at the version's threshold)."""
    from beryl.model.export import export

    registry = workspace.registry
    if version == "production":
        version = registry.require_production()
    elif version == "latest":
        version = registry.latest()
    card = registry.card(version)
    with console.status(f"exporting {version} for {fmt}"):
        done = export(registry.model(version), card, fmt, output)
    if as_json:
        click.echo(
            json.dumps(
                {
                    "version": done.version,
                    "format": done.format,
                    "folder": str(done.folder),
                    "files": done.files,
                }
            )
        )
        return
    console.print(f"[green]{done.version} exported for {done.format}[/]: {done.folder}")
    render.lines(done.files)
