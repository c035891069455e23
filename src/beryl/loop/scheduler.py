"""Run the loop on a cron expression, and the crontab line that does the same from cron.

Never two passes at once (the workspace lock); a tick that passes while a pass runs is skipped and
logged, never replayed; ``stop`` (set by SIGTERM/SIGINT in the CLI) ends the loop after the
current pass.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from croniter import croniter

from beryl.config import Settings
from beryl.errors import BerylError, ConfigError, PipelineBusyError
from beryl.loop.passes import PassResult, run_pass
from beryl.model.signing import KEY_FILE_ENV, Keyring, default_keyring
from beryl.workspace import Workspace

Clock = Callable[[], datetime]
Log = Callable[[str], None]
CRON_MARKER = "# beryl:"


@dataclass
class ScheduleStats:
    passes: int = 0
    skipped_busy: int = 0
    missed_ticks: int = 0
    failures: int = 0


def _utc_now() -> datetime:
    return datetime.now(UTC)


def next_tick(expression: str, after: datetime) -> datetime:
    """The first time matching ``expression`` strictly after ``after``."""
    tick: datetime = croniter(expression, after).get_next(datetime)
    return tick


def ticks_between(expression: str, start: datetime, end: datetime) -> int:
    """How many ticks fall in (start, end]: the ones missed while a pass ran."""
    count = 0
    tick = next_tick(expression, start)
    while tick <= end:
        count += 1
        tick = next_tick(expression, tick)
    return count


def run_schedule(
    workspace: Workspace | Settings,
    *,
    stop: threading.Event,
    expression: str | None = None,
    run: Callable[[Workspace], PassResult] = run_pass,
    clock: Clock = _utc_now,
    log: Log = print,
    max_passes: int | None = None,
) -> ScheduleStats:
    """Run a pass at every tick until ``stop`` is set (or ``max_passes`` ticks were handled).

    ``run`` makes one pass (the CLI hands in one that calls the API after a promotion).
    """
    workspace = Workspace.of(workspace)
    expression = expression or workspace.settings.schedule
    if not croniter.is_valid(expression):
        raise ConfigError(f"{expression!r} is not a cron expression")
    stats = ScheduleStats()
    handled = 0
    log(f"schedule {expression!r}: next pass at {next_tick(expression, clock()).isoformat()}")
    while not stop.is_set() and (max_passes is None or handled < max_passes):
        tick = next_tick(expression, clock())
        if stop.wait(max(0.0, (tick - clock()).total_seconds())):
            break
        handled += 1
        try:
            result = run(workspace)
            stats.passes += 1
            log(f"{tick.isoformat()} pass {result.run_id}: {result.outcome} ({result.reason})")
        except PipelineBusyError:
            stats.skipped_busy += 1
            log(f"{tick.isoformat()} skipped: another pass is still running")
        except BerylError as exc:
            stats.failures += 1
            log(f"{tick.isoformat()} pass failed: {exc}")
        except Exception as exc:  # an unattended loop outlives one bad pass; it is logged
            stats.failures += 1
            log(f"{tick.isoformat()} pass failed unexpectedly: {type(exc).__name__}: {exc}")
        missed = ticks_between(expression, tick, clock())
        if missed:
            stats.missed_ticks += missed
            log(f"{missed} tick(s) passed while the pass ran; they are not replayed")
    log("schedule stopped")
    return stats


def cron_line(
    settings: Settings,
    config_path: Path,
    expression: str | None = None,
    keyring: Keyring | None = None,
) -> str:
    """A crontab line that runs one pass from any directory, with a log file.

    cron's environment is bare, so the line names the signing key file this process uses
    (a key given as ``$BERYL_SIGNING_KEY`` must be given to cron's environment as well).
    """
    config = config_path.resolve()
    root = settings.root.resolve()
    log_file = root / "logs" / "beryl-cron.log"
    keyring = keyring or default_keyring()
    key = "" if keyring.source.startswith("$") else f"{KEY_FILE_ENV}={shlex.quote(keyring.source)} "
    command = (
        f"mkdir -p {shlex.quote(str(log_file.parent))} && "
        f"{key}{shlex.quote(sys.executable)} -m beryl --config {shlex.quote(str(config))} run "
        f">> {shlex.quote(str(log_file))} 2>&1"
    )
    command = command.replace("%", "\\%")  # cron turns a bare % into a newline
    return f"{expression or settings.schedule} {command} {CRON_MARKER} {config}"


def install_cron(line: str) -> bool:
    """Add ``line`` to the user's crontab, replacing an older line for the same config.

    Returns False when the crontab already holds exactly this line.
    """
    crontab = shutil.which("crontab")
    if crontab is None:
        raise BerylError(
            "crontab is not installed on this machine",
            hint="install cron, or use `beryl schedule` to run the loop in the foreground",
        )
    current = subprocess.run([crontab, "-l"], capture_output=True, text=True, check=False)
    lines = current.stdout.splitlines() if current.returncode == 0 else []
    if line in lines:
        return False
    marker = line[line.index(CRON_MARKER) :]
    kept = [existing for existing in lines if not existing.endswith(marker)]
    new = "\n".join([*kept, line]) + "\n"
    written = subprocess.run([crontab, "-"], input=new, text=True, capture_output=True, check=False)
    if written.returncode != 0:
        raise BerylError(f"crontab refused the new line: {written.stderr.strip()}")
    return True
