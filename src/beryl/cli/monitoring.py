"""Commands that look at the workspace: diagnostics, the report, the history (and the
migration of a PostgreSQL history's schema)."""

from __future__ import annotations

import click

from beryl.cli import render
from beryl.cli.base import cli, note, with_workspace
from beryl.loop.commands import exclusive, recorded
from beryl.workspace import Workspace


@cli.command()
@with_workspace
@click.option("--json", "as_json", is_flag=True, help="Print everything as JSON.")
@click.option("--measure", is_flag=True, help="Re-time ingestion and training on a scratch copy.")
@click.option("--no-outdated", is_flag=True, help="Skip the package-index lookup.")
def diagnose(workspace: Workspace, as_json: bool, measure: bool, no_outdated: bool) -> None:
    """Predictions, summary statistics, missing values, timings and outdated packages."""
    from beryl.monitoring.diagnostics import diagnose as run_diagnose

    with recorded(workspace, "diagnose", note=note):
        result = run_diagnose(workspace, measure=measure, check_outdated=not no_outdated)
    render.diagnostics(result, as_json=as_json)


@cli.command()
@with_workspace
@click.option("--version", "version", default=None, help="Model version (default: production).")
def report(workspace: Workspace, version: str | None) -> None:
    """Write the confusion matrix, classification report and HTML report."""
    from beryl.monitoring.reporting import build_report

    with exclusive(workspace, "report"):
        written = build_report(workspace.settings, version)
    render.lines([f"  {label:<22} {path}" for label, path in written.items()])


@cli.command()
@with_workspace
@click.argument("action", required=False, type=click.Choice(["migrate"]))
@click.option("--limit", default=10, show_default=True)
@click.option("--command", "command", default=None, help="Only runs of this command (run: passes).")
@click.option("--json", "as_json", is_flag=True)
def history(
    workspace: Workspace, action: str | None, limit: int, command: str | None, as_json: bool
) -> None:
    """Recent runs with their steps, durations and outcomes.

    `beryl history migrate` creates or upgrades the schema of a PostgreSQL history
    (history_url); no other command changes it.
    """
    if action == "migrate":
        _migrate(workspace)
        return
    render.runs(workspace.history.runs(limit, command), as_json=as_json)


def _migrate(workspace: Workspace) -> None:
    url = workspace.settings.history_url
    if url is None:
        render.lines(
            [
                f"history database {workspace.settings.history_db} is SQLite: Beryl creates its "
                "tables itself, nothing to migrate (history_url names a PostgreSQL one)"
            ]
        )
        return
    from beryl.monitoring.pgschema import migrate

    done = migrate(url)
    if done.from_version == done.to_version:
        what = f"already at schema version {done.to_version}, nothing to do"
    elif done.from_version == 0:
        what = f"schema created at version {done.to_version}"
    else:
        what = f"schema upgraded from version {done.from_version} to {done.to_version}"
    render.lines([f"history database {done.database}: {what}"])


@cli.command()
@with_workspace
@click.argument("action", type=click.Choice(["list", "deliver"]))
@click.option("--limit", default=20, show_default=True, help="Deliveries listed.")
@click.option("--json", "as_json", is_flag=True)
def webhooks(workspace: Workspace, action: str, limit: int, as_json: bool) -> None:
    """The outbox of webhook events: `list` their deliveries, or `deliver` what is due now
    (every command that changes the workspace also does at its end)."""
    if action == "deliver":
        from beryl.monitoring.webhooks import sweep

        if not workspace.settings.webhooks:
            render.lines(["no webhooks in config.json: nothing to deliver"])
            return
        with exclusive(workspace, "webhooks"):
            done = sweep(workspace, budget_s=60.0)
        render.lines(
            [
                f"queued {done.queued}, delivered {done.delivered}, to retry {done.retrying}, "
                f"given up {done.failed}"
            ]
        )
        return
    render.outbox(workspace.history.outbox_entries(limit), as_json=as_json)
