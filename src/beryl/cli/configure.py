"""Commands on the config file itself: ``beryl config check`` validates every setting (the
``model`` parameters too) without touching the workspace; ``beryl config upgrade`` rewrites the
original system's ``config.json`` in Beryl's own form."""

from __future__ import annotations

import click

from beryl.cli.base import chosen_config, cli, config_option, console


@cli.group("config")
def config_group() -> None:
    """Work on config.json itself."""


@config_group.command("check")
@config_option("config_path")
@click.pass_context
def config_check(ctx: click.Context, config_path: str | None) -> None:
    """Validate config.json, the model parameters included, and change nothing.

    Every problem is listed at once (exit 2); a valid file says so (exit 0).
    """
    from beryl import config

    path = config.config_file_path(chosen_config(ctx, config_path))
    settings = config.load(path)  # check_model: the model parameters as scikit-learn sees them
    for notice in settings.notices:
        _say(f"note: {notice}")
    _say(f"{path} is valid.")


@config_group.command("upgrade")
@config_option("config_path")
@click.pass_context
def config_upgrade(ctx: click.Context, config_path: str | None) -> None:
    """Rewrite config.json without the original system's keys Beryl ignores.

    Every other key keeps its value, so Beryl behaves as before; the notices those keys gave
    stop. The old file is kept beside the new one (config.json.before-upgrade).
    """
    from beryl.original import upgrade

    result = upgrade(chosen_config(ctx, config_path))
    if result.backup is None:
        _say(f"{result.path} is in Beryl's form already: nothing to change.")
        return
    _say(f"Rewrote {result.path}; the old file is kept as {result.backup}.")
    for key, notice in result.removed.items():
        why = notice.removeprefix(f"{key}: ").removesuffix("; the key is ignored")
        _say(f"  removed {key}: {why}")


def _say(line: str) -> None:
    console.print(line, markup=False, highlight=False, soft_wrap=True)
