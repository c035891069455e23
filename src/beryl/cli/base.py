"""What every command shares: the group, the ``--config`` option, the workspace it opens, the
consoles, and the entry point that turns every error into one line and its exit code."""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import click
from rich.console import Console
from rich.markup import escape

from beryl import config as config_module
from beryl.errors import BerylError, StateError, describe_os_error
from beryl.workspace import Workspace

F = TypeVar("F", bound=Callable[..., Any])

# Wide output when piped or logged (cron, CI), the terminal's width otherwise.
console = Console(width=None if sys.stdout.isatty() else 160)
err_console = Console(stderr=True, width=None if sys.stderr.isatty() else 160)


def note(text: str) -> None:
    """A remark on stderr that is not an error."""
    err_console.print(f"[yellow]note[/]: {text}", highlight=False, soft_wrap=True)


def chosen_config(ctx: click.Context, path: str | None) -> Path:
    """The config file a command uses: its ``--config``, the group's, ``$BERYL_CONFIG``, or
    ./config.json."""
    chosen = path or (ctx.find_root().params.get("config") if ctx.find_root() else None)
    return config_module.resolve_path(chosen)


def _workspace(ctx: click.Context, path: str | None) -> Workspace:
    config_path = chosen_config(ctx, path)
    # model parameters are checked by whatever trains (it imports scikit-learn; most commands
    # never need it)
    settings = config_module.load(config_path, check_model=False)
    _config_notices(ctx, config_module.config_file_path(config_path), settings.notices)
    return Workspace(settings)


def _config_notices(ctx: click.Context, config_path: Path, notices: tuple[str, ...]) -> None:
    """Each notice of the config (an original key Beryl ignores) as one ``note:`` line on
    stderr, once per command: stdout, and the JSON a command prints there, stay as they are."""
    meta = ctx.find_root().meta
    if not notices or meta.get(_NOTICES_SHOWN):
        return
    meta[_NOTICES_SHOWN] = True
    for text in notices:
        note(escape(f"{config_path}: {text}"))


_NOTICES_SHOWN = "beryl.config_notices_shown"


def config_option(name: str) -> Callable[[F], F]:
    """The ``--config`` option, on the group and on every command that reads a workspace."""
    return click.option(
        "--config",
        name,
        type=click.Path(dir_okay=True, path_type=str),
        default=None,
        help="Workspace config file (default: $BERYL_CONFIG, else ./config.json).",
    )


def with_workspace(func: F) -> F:
    """Add ``--config`` to a command and pass the opened ``Workspace`` as its first argument."""

    @config_option("config_path")
    @click.pass_context  # type: ignore[arg-type]
    @functools.wraps(func)
    def wrapper(ctx: click.Context, config_path: str | None, **kwargs: Any) -> Any:
        return ctx.invoke(func, _workspace(ctx, config_path), **kwargs)

    return wrapper  # type: ignore[return-value]


def print_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, default=str))


@contextmanager
def progress(show: bool) -> Iterator[Callable[[str, int, int], None] | None]:
    """A progress bar over files on a terminal (nothing when piped or asked for JSON)."""
    if not show or not console.is_terminal:
        yield None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()
    ) as bar:
        task = bar.add_task("reading files", total=None)

        def update(name: str, done: int, total: int) -> None:
            bar.update(task, completed=done, total=total, description=f"reading {name}".strip())

        yield update


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@config_option("config")
@click.version_option(package_name="beryl")
def cli(config: str | None) -> None:
    """Beryl: train, serve and monitor a customer-attrition model from a folder of CSV files."""


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the CLI; a ``BerylError`` prints one line and exits with its code."""
    import beryl.cli  # noqa: F401  (registers every command on the group)

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
