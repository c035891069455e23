"""Commands that run the loop and serve it: one pass, the schedule, cron, the API server and
the API calls."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

import click

from beryl.cli import render
from beryl.cli.base import cli, console, note, with_workspace
from beryl.loop.commands import recorded
from beryl.workspace import Workspace

if TYPE_CHECKING:
    from beryl.loop.passes import ApiCaller, ApiCallsDone


def _call_api(workspace: Workspace) -> ApiCallsDone:
    """Every endpoint, on the configured server if it answers, else on one in this process.

    The API (FastAPI, pandas, scipy) is imported here, after a promotion, not by every pass."""
    from beryl.api.client import calls_after_promotion

    return calls_after_promotion(workspace)


def _api_caller(enabled: bool) -> ApiCaller | None:
    """What a pass calls after a promotion (None: no API calls)."""
    return _call_api if enabled else None


@cli.command("run")
@with_workspace
@click.option("--json", "as_json", is_flag=True, help="Print the pass result as JSON.")
@click.option("--no-apicalls", is_flag=True, help="Skip the API calls after a promotion.")
def run_command(workspace: Workspace, as_json: bool, no_apicalls: bool) -> None:
    """One full pass: new data → ingest → drift check → train → score → promote if better."""
    from beryl.loop.passes import run_pass

    with console.status("running a pass of the loop"):
        result = run_pass(workspace, call_api=_api_caller(not no_apicalls))
    render.passed(result, as_json=as_json)
    sys.exit(result.exit_code)


@cli.command()
@with_workspace
@click.option("--cron", "expression", default=None, help="Cron expression (default: config).")
@click.option("--max-passes", type=int, default=None, hidden=True)
def schedule(workspace: Workspace, expression: str | None, max_passes: int | None) -> None:
    """Run a pass at every tick of the schedule until SIGTERM or Ctrl-C."""
    import signal
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from beryl.loop.passes import run_pass
    from beryl.loop.scheduler import run_schedule

    # The loop runs on a worker thread; the main thread only waits for its result (and gets its
    # exception). Python runs signal handlers on the main thread, so the handler's ``stop.set()``
    # never waits for a lock that the interrupted thread itself holds, as it could if the main
    # thread were inside ``stop.wait``.
    stop = threading.Event()

    def request_stop(signum: int, _frame: Any) -> None:
        console.print(f"{signal.Signals(signum).name}: stopping after the current pass")
        stop.set()

    caller = _api_caller(True)
    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="beryl-schedule") as pool:
        pool.submit(
            run_schedule,
            workspace,
            stop=stop,
            expression=expression,
            run=lambda ws: run_pass(ws, call_api=caller),
            log=lambda line: console.print(line, highlight=False),
            max_passes=max_passes,
        ).result()


@cli.command()
@with_workspace
@click.option("--install", is_flag=True, help="Add the line to your crontab.")
def cron(workspace: Workspace, install: bool) -> None:
    """Print a crontab line that runs a pass on the schedule from any directory."""
    from beryl.loop.scheduler import cron_line, install_cron
    from beryl.model.signing import KEY_ENV, default_keyring

    line = cron_line(workspace.settings, workspace.settings.config_path)
    click.echo(line)
    if default_keyring().source == f"${KEY_ENV}":
        note(
            f"the signing key comes from ${KEY_ENV}; give cron's environment the same "
            "variable, or passes started by cron cannot use the models"
        )
    if install:
        added = install_cron(line)
        console.print("added to your crontab" if added else "already in your crontab")


@cli.command()
@with_workspace
@click.option("--host", default=None, help="Listen address (default: api.host, 127.0.0.1).")
@click.option("--port", type=int, default=None, help="Port (default: api.port, 8000).")
@click.option("--workers", type=int, default=1, show_default=True)
@click.option("--access-log", is_flag=True, help="Log every request (costs throughput).")
def serve(
    workspace: Workspace, host: str | None, port: int | None, workers: int, access_log: bool
) -> None:
    """Serve the production model over HTTP (see /docs)."""
    from beryl.api.server import serve as run_server

    run_server(workspace.settings, host=host, port=port, workers=workers, access_log=access_log)


@cli.command()
@with_workspace
@click.option("--url", default=None, help="Server base URL (default: from api in config).")
def apicalls(workspace: Workspace, url: str | None) -> None:
    """Call every endpoint of a running server and write the answers to apireturns.txt."""
    from beryl.api.client import call_all

    with recorded(workspace, "apicalls", note=note) as (run, _):
        result = call_all(workspace.settings, url)
        if not result.ok:
            run.status, run.exit_code = "failed", 1
    for call in result.calls:
        colour = "green" if call.status == 200 else "red"
        console.print(f"  {call.method:<4} {call.path:<14} [{colour}]{call.status}[/]")
    console.print(f"answers written to {result.written[0]} (and {result.written[1]})")
    if not result.ok:
        sys.exit(1)
