"""Tests for beryl.loop.scheduler: the cron loop, its lock, missed ticks and the crontab line."""

from __future__ import annotations

import json
import os
import queue
import shlex
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from croniter import croniter
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from tests.conftest import CliRunner

from beryl import config
from beryl.config import Settings
from beryl.errors import BerylError, ConfigError, DataError
from beryl.loop.passes import PassResult, run_pass
from beryl.loop.scheduler import (
    CRON_MARKER,
    ScheduleStats,
    cron_line,
    install_cron,
    next_tick,
    run_schedule,
    ticks_between,
)
from beryl.model.registry import Registry
from beryl.workspace import Workspace

EVERY_10 = "*/10 * * * *"


def at(hour: int, minute: int, second: int = 0, day: int = 1) -> datetime:
    return datetime(2024, 5, day, hour, minute, second, tzinfo=UTC)


# -- fakes ----------------------------------------------------------------------------------------
class FakeClock:
    """A clock that moves only when told to."""

    def __init__(self, start: datetime) -> None:
        self.now = start
        self.waits: list[float] = []

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


class FakeStop(threading.Event):
    """A stop event whose ``wait`` lets fake time pass instead of real time."""

    def __init__(self, clock: FakeClock) -> None:
        super().__init__()
        self.clock = clock

    def wait(self, timeout: float | None = None) -> bool:
        if not self.is_set() and timeout is not None:
            self.clock.waits.append(timeout)
            self.clock.advance(timeout)
        return self.is_set()


def scheduled(
    settings: Settings,
    clock: FakeClock,
    run: Callable[[Settings], PassResult],
    logs: list[str],
    max_passes: int,
) -> ScheduleStats:
    """run_schedule every ten minutes on a fake clock that never sleeps for real."""
    return run_schedule(
        settings,
        stop=FakeStop(clock),
        expression=EVERY_10,
        run=run,
        clock=clock,
        log=logs.append,
        max_passes=max_passes,
    )


class FakePass:
    """Stands in for run_pass: records when it was called and 'takes' ``minutes`` of fake time."""

    def __init__(self, clock: FakeClock, minutes: float, errors: list[Exception] | None = None):
        self.clock = clock
        self.minutes = minutes
        self.errors = list(errors or [])
        self.started: list[datetime] = []
        self.ended: list[datetime] = []

    def __call__(self, settings: Settings) -> PassResult:
        self.started.append(self.clock.now)
        self.clock.advance(self.minutes * 60)
        self.ended.append(self.clock.now)
        if self.errors:
            raise self.errors.pop(0)
        return PassResult(len(self.started), "no-new-data", 0, "fake pass")


def safe_config(settings: Settings) -> Path:
    """Keep a pass that calls the API on this machine: no package index, a port nobody uses."""
    path = settings.root / "config.json"
    data = json.loads(path.read_text())
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    data["package_index_url"] = "http://127.0.0.1:9"
    data["api"] = {"host": "127.0.0.1", "port": port}
    path.write_text(json.dumps(data, indent=2) + "\n")
    return path


# -- ticks ----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("after", "expected"),
    [
        (at(12, 0), at(12, 10)),  # strictly after: a tick is not its own next tick
        (at(12, 3, 27), at(12, 10)),
        (at(12, 9, 59), at(12, 10)),
        (at(12, 10, 1), at(12, 20)),
        (at(23, 55), at(0, 0, day=2)),
    ],
)
def test_next_tick(after: datetime, expected: datetime) -> None:
    tick = next_tick(EVERY_10, after)
    assert tick == expected
    assert tick.utcoffset() == timedelta(0)


@pytest.mark.parametrize(
    ("start", "end", "count"),
    [
        (at(12, 0), at(12, 0), 0),
        (at(12, 0), at(12, 9, 59), 0),
        (at(12, 0), at(12, 10), 1),  # the end is included
        (at(12, 5), at(12, 35), 3),
        (at(12, 0), at(13, 0), 6),
        (at(23, 50), at(0, 20, day=2), 3),
        (at(12, 30), at(12, 0), 0),  # an end before the start holds no ticks
    ],
)
def test_ticks_between(start: datetime, end: datetime, count: int) -> None:
    assert ticks_between(EVERY_10, start, end) == count


@hypothesis_settings(max_examples=50, deadline=None)
@given(
    start=st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2099, 1, 1)),
    periods=st.integers(0, 12),
)
def test_any_window_of_k_periods_holds_k_ticks(start: datetime, periods: int) -> None:
    start = start.replace(tzinfo=UTC)
    assert ticks_between(EVERY_10, start, start + timedelta(minutes=10 * periods)) == periods


# -- the loop with a fake clock -------------------------------------------------------------------
def test_missed_ticks_are_counted_and_not_replayed(workspace: Settings) -> None:
    clock = FakeClock(at(12, 3))
    fake = FakePass(clock, minutes=25)
    logs: list[str] = []

    stats = scheduled(workspace, clock, fake, logs, 2)

    assert fake.started == [at(12, 10), at(12, 40)]
    assert fake.ended[0] == at(12, 35)
    # No catch-up burst: the second pass waits for the first tick after the first one ended.
    assert fake.started[1] == next_tick(EVERY_10, fake.ended[0])
    assert fake.started[1] > fake.ended[0]
    assert clock.waits == [7 * 60, 5 * 60]
    assert (stats.passes, stats.missed_ticks, stats.skipped_busy, stats.failures) == (2, 4, 0, 0)
    assert logs[0] == f"schedule {EVERY_10!r}: next pass at {at(12, 10).isoformat()}"
    replay = [line for line in logs if "not replayed" in line]
    assert replay == ["2 tick(s) passed while the pass ran; they are not replayed"] * 2
    assert f"{at(12, 40).isoformat()} pass 2: no-new-data (fake pass)" in logs
    assert logs[-1] == "schedule stopped"


def test_short_passes_run_on_every_tick(workspace: Settings) -> None:
    clock = FakeClock(at(12, 0))
    fake = FakePass(clock, minutes=3)
    logs: list[str] = []

    stats = scheduled(workspace, clock, fake, logs, 3)

    assert fake.started == [at(12, 10), at(12, 20), at(12, 30)]
    assert (stats.passes, stats.missed_ticks) == (3, 0)
    assert not any("not replayed" in line for line in logs)


def test_failing_passes_are_logged_and_the_schedule_goes_on(workspace: Settings) -> None:
    clock = FakeClock(at(12, 0))
    fake = FakePass(
        clock, minutes=1, errors=[DataError("input folder is gone"), RuntimeError("boom")]
    )
    logs: list[str] = []

    stats = scheduled(workspace, clock, fake, logs, 3)

    assert fake.started == [at(12, 10), at(12, 20), at(12, 30)]
    assert (stats.passes, stats.failures, stats.skipped_busy) == (1, 2, 0)
    assert f"{at(12, 10).isoformat()} pass failed: input folder is gone" in logs
    assert f"{at(12, 20).isoformat()} pass failed unexpectedly: RuntimeError: boom" in logs
    assert f"{at(12, 30).isoformat()} pass 3: no-new-data (fake pass)" in logs
    assert logs[-1] == "schedule stopped"


def test_invalid_expression_is_a_config_error(workspace: Settings) -> None:
    clock = FakeClock(at(12, 0))
    fake = FakePass(clock, minutes=1)
    with pytest.raises(ConfigError, match="not a cron expression"):
        run_schedule(workspace, stop=FakeStop(clock), expression="every ten minutes", run=fake)
    assert fake.started == []


# -- never two passes at once ---------------------------------------------------------------------
def test_tick_while_a_pass_holds_the_lock_is_skipped(workspace: Settings) -> None:
    clock = FakeClock(at(12, 0))
    logs: list[str] = []

    def real_pass(settings: Settings) -> PassResult:
        return run_pass(settings, report=False)

    with Workspace.of(workspace).lock.held():
        busy = scheduled(workspace, clock, real_pass, logs, 1)

    assert (busy.passes, busy.skipped_busy, busy.failures) == (0, 1, 0)
    assert f"{at(12, 10).isoformat()} skipped: another pass is still running" in logs
    assert Registry(workspace.model_folder).production() is None
    assert not (workspace.output_folder / "dataset.json").exists()

    # The lock is free again: the next tick runs a real pass.
    free = scheduled(workspace, clock, real_pass, logs, 1)
    assert (free.passes, free.skipped_busy) == (1, 0)
    assert Registry(workspace.model_folder).production() == "v0001"


def test_two_overlapping_schedules_run_one_pass(workspace: Settings) -> None:
    inside, release = threading.Event(), threading.Event()
    first_logs: list[str] = []
    second_logs: list[str] = []
    first_clock, second_clock = FakeClock(at(12, 0)), FakeClock(at(12, 0))

    def long_pass(settings: Settings) -> PassResult:
        with Workspace.of(settings).lock.held():
            inside.set()
            assert release.wait(30), "the test never released the first pass"
        return PassResult(1, "no-new-data", 0, "long pass")

    results: list[ScheduleStats] = []
    thread = threading.Thread(
        target=lambda: results.append(scheduled(workspace, first_clock, long_pass, first_logs, 1))
    )
    thread.start()
    try:
        assert inside.wait(30), "the first schedule never started its pass"
        second = scheduled(
            workspace,
            second_clock,
            lambda s: run_pass(s, report=False),
            second_logs,
            1,
        )
    finally:
        release.set()
        thread.join(30)
    assert not thread.is_alive()

    [first] = results
    assert (first.passes, first.skipped_busy) == (1, 0)
    assert (second.passes, second.skipped_busy) == (0, 1)
    assert any("skipped: another pass is still running" in line for line in second_logs)
    assert any("pass 1: no-new-data (long pass)" in line for line in first_logs)
    assert not (workspace.output_folder / "dataset.json").exists()


# -- stopping -------------------------------------------------------------------------------------
def test_stop_event_ends_the_schedule_promptly(workspace: Settings) -> None:
    stop = threading.Event()
    started = threading.Event()
    logs: list[str] = []

    def log(line: str) -> None:
        logs.append(line)
        if "next pass at" in line:
            started.set()

    def quick_pass(settings: Settings) -> PassResult:
        return PassResult(0, "no-new-data", 0, "quick")

    thread = threading.Thread(
        target=run_schedule,
        kwargs={
            "workspace": workspace,
            "stop": stop,
            "expression": "* * * * *",
            "run": quick_pass,
            "log": log,
        },
        daemon=True,
    )
    thread.start()
    assert started.wait(5)
    stop.set()
    thread.join(5)

    assert not thread.is_alive()
    assert logs[-1] == "schedule stopped"


def test_stop_set_before_the_start_runs_nothing(workspace: Settings) -> None:
    stop = threading.Event()
    stop.set()
    clock = FakeClock(at(12, 0))
    fake = FakePass(clock, minutes=1)

    stats = run_schedule(workspace, stop=stop, expression=EVERY_10, run=fake, log=lambda _: None)

    assert fake.started == []
    assert stats.passes == 0


def test_sigterm_ends_beryl_schedule_cleanly(workspace: Settings) -> None:
    config_path = safe_config(workspace)
    # A tick during the test then finds nothing new: a short pass, no API calls.
    run_pass(config.load(config_path), report=False)
    env = {k: v for k, v in os.environ.items() if k != "BERYL_CONFIG"}
    command = [sys.executable, "-m", "beryl", "--config", str(config_path), "schedule"]
    lines: queue.Queue[str] = queue.Queue()
    seen: list[str] = []
    with subprocess.Popen(
        [*command, "--cron", "* * * * *"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    ) as process:
        assert process.stdout is not None and process.stderr is not None
        stdout = process.stdout
        reader = threading.Thread(target=lambda: [lines.put(line) for line in stdout], daemon=True)
        reader.start()
        try:
            deadline = time.monotonic() + 60
            while not any("next pass at" in line for line in seen):
                remaining = deadline - time.monotonic()
                try:
                    seen.append(lines.get(timeout=max(remaining, 0.01)))
                except queue.Empty:
                    pytest.fail(f"beryl schedule never announced a pass: {seen}")
            process.send_signal(signal.SIGTERM)
            code = process.wait(timeout=10)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
        reader.join(5)
        stderr = process.stderr.read()
    while not lines.empty():
        seen.append(lines.get())
    output = "".join(seen)

    assert code == 0, output + stderr
    assert "SIGTERM: stopping after the current pass" in output
    assert output.rstrip().endswith("schedule stopped")
    assert "Traceback" not in stderr


def test_beryl_schedule_with_a_bad_cron_expression_exits_2(
    workspace_config: Path, beryl_cli: CliRunner
) -> None:
    out = beryl_cli("schedule", "--cron", "every ten minutes", config=workspace_config)

    assert out.returncode == 2, out.stdout + out.stderr
    assert "'every ten minutes' is not a cron expression" in out.stdout + out.stderr
    assert "Traceback" not in out.stderr


# -- the crontab line -----------------------------------------------------------------------------
def split_cron_line(line: str) -> tuple[str, str]:
    """(the 5 schedule fields, the command without the trailing ``# beryl:`` comment)."""
    fields = line.split(" ", 5)
    command = fields[5]
    return " ".join(fields[:5]), command[: command.rindex(f" {CRON_MARKER}")]


def test_cron_line_has_the_schedule_and_absolute_paths(
    workspace: Settings, workspace_config: Path
) -> None:
    line = cron_line(workspace, workspace_config)

    expression, command = split_cron_line(line)
    assert expression == EVERY_10 == workspace.schedule
    assert croniter.is_valid(expression)
    assert "\n" not in line
    assert line.endswith(f"{CRON_MARKER} {workspace_config.resolve()}")
    words = shlex.split(command)
    assert sys.executable in words
    assert str(workspace_config.resolve()) in words
    log_file = workspace.root.resolve() / "logs" / "beryl-cron.log"
    assert str(log_file) in words
    assert [w for w in words if w.startswith("/")] == [
        str(log_file.parent),
        sys.executable,
        str(workspace_config.resolve()),
        str(log_file),
    ]
    other = cron_line(workspace, workspace_config, expression="0 3 * * *")
    assert split_cron_line(other) == ("0 3 * * *", command)


def test_cron_line_command_runs_a_pass_from_any_directory(
    workspace: Settings, tmp_path: Path
) -> None:
    config_path = safe_config(workspace)
    settings = config.load(config_path)
    _, command = split_cron_line(cron_line(settings, config_path))
    elsewhere, home = tmp_path / "elsewhere", tmp_path / "home"
    elsewhere.mkdir()
    home.mkdir()
    # cron's environment is bare: no virtual environment, no BERYL_CONFIG, another cwd.
    env = {"PATH": "/usr/bin:/bin", "HOME": str(home), "SHELL": "/bin/sh"}

    done = subprocess.run(
        ["bash", "-c", command], cwd=elsewhere, env=env, capture_output=True, text=True, timeout=300
    )

    log_file = settings.root / "logs" / "beryl-cron.log"
    log = log_file.read_text()
    assert done.returncode == 0, log + done.stderr
    assert done.stdout == ""  # everything went to the log file
    assert "Decision: promoted (no production model yet)" in log
    assert Registry(settings.model_folder).production() == "v0001"
    assert (settings.model_folder / "production.json").exists()
    assert list(elsewhere.iterdir()) == []  # nothing written relative to the cwd

    # This pass called the API (an in-process server): every endpoint answered.
    answers = json.loads((settings.model_folder / "apireturns.txt").read_text())
    assert len(answers["calls"]) == 6
    assert [c["status"] for c in answers["calls"]] == [200] * 6
    assert answers["base_url"].startswith("http://127.0.0.1:")
    assert "API calls: 6 of 6 answered 200" in log


def test_cli_cron_prints_the_same_line(
    workspace: Settings, workspace_config: Path, beryl_cli: CliRunner, tmp_path: Path
) -> None:
    out = beryl_cli("--config", str(workspace_config), "cron", cwd=tmp_path, check=True)
    assert out.stdout.strip() == cron_line(workspace, workspace_config)


def test_cli_cron_names_the_config_file_it_was_given(
    workspace: Settings, workspace_config: Path, beryl_cli: CliRunner
) -> None:
    other = workspace.root / "nightly.json"
    other.write_text(workspace_config.read_text())
    out = beryl_cli("--config", str(other), "cron", check=True)
    assert out.stdout.strip() == cron_line(workspace, other)


# -- installing the line (a fake crontab: the real user's crontab is never touched) --------------
@pytest.fixture
def fake_crontab(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A ``crontab`` executable first on PATH that keeps its table in a file; returns the file."""
    folder = tmp_path / "fakebin"
    folder.mkdir()
    table = tmp_path / "crontab.txt"
    script = folder / "crontab"
    script.write_text(
        "#!/bin/sh\n"
        f'TABLE="{table}"\n'
        'if [ "$1" = "-l" ]; then\n'
        '  if [ -f "$TABLE" ]; then cat "$TABLE"; exit 0; fi\n'
        '  echo "no crontab for $(id -un)" >&2; exit 1\n'
        "fi\n"
        'if [ "$1" = "-" ]; then cat > "$TABLE"; exit 0; fi\n'
        'echo "fake crontab: unsupported arguments $*" >&2; exit 2\n'
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ['PATH']}")
    return table


def test_install_cron_adds_replaces_and_keeps_other_lines(
    workspace: Settings, workspace_config: Path, fake_crontab: Path
) -> None:
    line = cron_line(workspace, workspace_config)
    assert install_cron(line) is True
    assert fake_crontab.read_text() == line + "\n"
    assert install_cron(line) is False  # already there: unchanged

    unrelated = "0 1 * * * /usr/bin/backup"
    fake_crontab.write_text(unrelated + "\n" + line + "\n")
    hourly = cron_line(workspace, workspace_config, expression="0 * * * *")
    assert install_cron(hourly) is True
    assert fake_crontab.read_text().splitlines() == [unrelated, hourly]


def test_install_cron_without_crontab_is_a_beryl_error(
    workspace: Settings, workspace_config: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(BerylError, match="crontab is not installed"):
        install_cron(cron_line(workspace, workspace_config))


def test_cli_cron_install_uses_the_crontab_on_path(
    workspace: Settings, workspace_config: Path, beryl_cli: CliRunner, fake_crontab: Path
) -> None:
    out = beryl_cli("--config", str(workspace_config), "cron", "--install", check=True)
    line = cron_line(workspace, workspace_config)
    assert out.stdout.splitlines()[0] == line
    assert "added to your crontab" in out.stdout
    assert fake_crontab.read_text() == line + "\n"
    again = beryl_cli("--config", str(workspace_config), "cron", "--install", check=True)
    assert "already in your crontab" in again.stdout
