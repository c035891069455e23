"""The history and the pass lock on PostgreSQL (``history_url``), through the real CLI and API
against a real server (``tests/pg_server.py``): the schema made only by ``beryl history
migrate``, a whole pass recorded there, single flight across processes (and machines), and
every failure one line that names the host and database but never the password.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.pg_server import PgServer
from tests.test_event_loop import in_process

from beryl import config
from beryl.config import Settings
from beryl.data.demo import init_workspace
from beryl.monitoring.pghistory import PgHistory
from beryl.monitoring.pglock import PgLock
from beryl.monitoring.pgschema import SCHEMA_VERSION
from beryl.postgres import masked
from beryl.workspace import Workspace

SECRET = "hunter2-not-for-eyes"


def _workspace(tmp_path: Path, url: str, **overrides: Any) -> tuple[Settings, Path]:
    ws = init_workspace(tmp_path / "ws", rows=600, files=3, seed=0)
    data = json.loads(ws.config.read_text())
    data.update(history_url=url, package_index_url="http://127.0.0.1:9", **overrides)
    ws.config.write_text(json.dumps(data))
    return config.load(ws.config), ws.config


def _beryl(
    config_path: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """The real CLI; ``env`` is added to this process's environment (less any libpq one)."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "BERYL_CONFIG"))}
    return subprocess.run(
        [sys.executable, "-m", "beryl", "--config", str(config_path), *args],
        capture_output=True,
        text=True,
        env={**base, "COLUMNS": "200", **(env or {})},
        timeout=300,
    )


def _one_line_error(result: subprocess.CompletedProcess[str], code: int) -> str:
    """The one error line of a command that exited ``code``, never a traceback."""
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr + result.stdout
    lines = [line for line in result.stderr.splitlines() if not line.startswith("note:")]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def _tables(server: PgServer, url: str) -> list[tuple[Any, ...]]:
    import psycopg

    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
            " ORDER BY table_name"
        ).fetchall()
        versions = (
            conn.execute("SELECT version, applied FROM schema_version ORDER BY version").fetchall()
            if ("schema_version",) in rows
            else []
        )
    return [*rows, *versions]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_migrate_creates_the_schema_and_a_second_run_changes_nothing(
    postgres: PgServer, tmp_path: Path
) -> None:
    url = postgres.database(migrated=False)
    _, config_path = _workspace(tmp_path, url)
    assert _tables(postgres, url) == []
    first = _beryl(config_path, "history", "migrate")
    assert first.returncode == 0, first.stderr
    created = f"history database {masked(url)}: schema created at version {SCHEMA_VERSION}"
    assert created in first.stdout
    made = _tables(postgres, url)
    tables = {("runs",), ("steps",), ("scores",), ("promotions",), ("drift",), ("outbox",)}
    assert tables | {("outbox_since",)} <= set(made)
    versions = sorted(row[0] for row in made if len(row) == 2 and isinstance(row[0], int))
    assert versions == list(range(1, SCHEMA_VERSION + 1))  # each version, when applied
    second = _beryl(config_path, "history", "migrate")
    assert second.returncode == 0, second.stderr
    assert f"already at schema version {SCHEMA_VERSION}, nothing to do" in second.stdout
    assert _tables(postgres, url) == made  # not one table or version row more, none rewritten
    listed = _beryl(config_path, "history", "--json")
    assert listed.returncode == 0 and json.loads(listed.stdout) == []


def test_commands_on_a_database_that_was_not_migrated_stop_in_one_line(
    postgres: PgServer, tmp_path: Path
) -> None:
    url = postgres.database(migrated=False)
    settings, config_path = _workspace(tmp_path, url)
    for args in (["history"], ["run"], ["ingest"], ["train"]):
        line = _one_line_error(_beryl(config_path, *args), 7)
        assert "has no Beryl schema" in line and "run `beryl history migrate`" in line, args
        assert masked(url) in line and postgres.password not in line
    # Refused before anything changed: nothing ingested, no SQLite or lock file, no table made.
    assert not (settings.output_folder / "dataset.json").exists()
    assert not settings.history_db.exists() and not settings.lock_file.exists()
    assert _tables(postgres, url) == []
    with in_process(settings) as (address, _):
        answer = httpx.get(f"{address}/history", timeout=30)
    assert answer.status_code == 503
    assert "has no Beryl schema" in answer.json()["error"]
    assert "beryl history migrate" in answer.json()["detail"]


def test_an_older_schema_is_refused_until_migrate_upgrades_it(
    postgres: PgServer, tmp_path: Path
) -> None:
    import psycopg

    url = postgres.database(migrated=False)
    _, config_path = _workspace(tmp_path, url)
    with psycopg.connect(url, autocommit=True) as conn:  # version 0: the table, no version yet
        conn.execute("CREATE TABLE schema_version (version INTEGER PRIMARY KEY, applied TEXT)")
    line = _one_line_error(_beryl(config_path, "history"), 7)
    assert f"has schema version 0; this Beryl needs version {SCHEMA_VERSION}" in line
    assert "run `beryl history migrate` to upgrade it" in line
    upgraded = _beryl(config_path, "history", "migrate")
    assert f"schema created at version {SCHEMA_VERSION}" in upgraded.stdout, upgraded.stderr
    assert _beryl(config_path, "history").returncode == 0


def test_a_schema_newer_than_this_beryl_is_refused_even_by_migrate(
    postgres: PgServer, tmp_path: Path
) -> None:
    import psycopg

    url = postgres.database()
    _, config_path = _workspace(tmp_path, url)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO schema_version VALUES (%s, 'by a newer Beryl')", (SCHEMA_VERSION + 1,)
        )
    for args in (["history"], ["run"], ["history", "migrate"]):
        line = _one_line_error(_beryl(config_path, *args), 7)
        newer = f"schema version {SCHEMA_VERSION + 1}, newer than this Beryl's ({SCHEMA_VERSION})"
        assert newer in line, args
        assert "upgrade Beryl" in line


def test_a_pass_through_the_cli_is_recorded_in_postgresql_and_seen_by_history_and_the_api(
    postgres: PgServer, tmp_path: Path
) -> None:
    import psycopg

    url = postgres.database()
    settings, config_path = _workspace(tmp_path, url)
    passed = _beryl(config_path, "run")  # API calls included: the app reads the same database
    assert passed.returncode == 0, passed.stderr
    assert "promoted" in passed.stdout
    listed = _beryl(config_path, "history", "--json")
    assert listed.returncode == 0, listed.stderr
    runs = json.loads(listed.stdout)
    (run,) = [r for r in runs if r["command"] == "run"]
    assert run["status"] == "ok" and run["exit_code"] == 0
    assert {"ingest", "train", "score"} <= {s["name"] for s in run["steps"]}
    with psycopg.connect(url) as conn:
        stored = conn.execute("SELECT id, status FROM runs WHERE command = 'run'").fetchall()
        promotions = conn.execute("SELECT to_version, run_id FROM promotions").fetchall()
    assert stored == [(run["id"], "ok")] and promotions == [("v0001", run["id"])]
    assert not settings.history_db.exists() and not settings.lock_file.exists()  # all in PG
    assert (settings.model_folder / "apireturns.txt").is_file()
    with in_process(settings) as (address, _):
        answer = httpx.get(f"{address}/history", timeout=30)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert [r["id"] for r in body["runs"]] == [run["id"]]
    assert [p["to_version"] for p in body["promotions"]] == ["v0001"]
    assert {s["role"] for s in body["scores"]} >= {"candidate"}


_HOLD = textwrap.dedent(
    """
    import sys, time
    from beryl import config
    from beryl.workspace import Workspace

    with Workspace(config.load(sys.argv[1])).lock.held():
        print("held", flush=True)
        time.sleep(120)
    """
)


def test_the_lock_holds_across_processes_and_is_released_when_its_holder_is_killed(
    postgres: PgServer, tmp_path: Path
) -> None:
    import psycopg

    url = postgres.database()
    settings, config_path = _workspace(tmp_path, url)
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLD, str(config_path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with psycopg.connect(url) as conn:
            advisory = conn.execute(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted"
                " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
            ).fetchone()
        assert advisory == (1,)  # a session-level advisory lock, in this database
        line = _one_line_error(_beryl(config_path, "run"), 5)
        assert "another pass is running" in line and masked(url) in line
        assert postgres.password not in line
        assert not (settings.output_folder / "dataset.json").exists()  # the pass never started
        with PgLock(postgres.database()).held():  # another database is another workspace
            pass
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)
        killed = time.monotonic()
        while True:
            try:
                with Workspace(settings).lock.held():
                    break
            except Exception as exc:
                assert "another pass is running" in str(exc)
                assert time.monotonic() - killed < 5, "the lock outlived its killed holder"
                time.sleep(0.02)
    finally:
        holder.kill()
        holder.wait()
        assert holder.stdout is not None
        holder.stdout.close()
    assert _beryl(config_path, "run").returncode == 0


def test_a_server_that_is_down_is_one_line_naming_host_and_database(
    postgres: PgServer, tmp_path: Path
) -> None:
    port = _free_port()  # nothing listens there
    url = postgres.url("beryl_down", port=port)
    settings, config_path = _workspace(tmp_path, url)
    for args in (["history"], ["run"], ["history", "migrate"]):
        line = _one_line_error(_beryl(config_path, *args), 7)
        assert f"cannot connect to the history database {masked(url)}" in line, args
        assert f"127.0.0.1:{port}/beryl_down" in line and postgres.password not in line
        assert "check that PostgreSQL runs there" in line
    assert not (settings.output_folder / "dataset.json").exists()
    with in_process(settings) as (address, _):
        answer = httpx.get(f"{address}/history", timeout=30)
    assert answer.status_code == 503
    assert f"127.0.0.1:{port}/beryl_down" in answer.json()["error"]
    assert postgres.password not in answer.text


def test_a_server_that_does_not_answer_is_503_after_the_wait(
    postgres: PgServer, tmp_path: Path
) -> None:
    with socket.socket() as silent:  # accepts connections (the kernel does), never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        url = postgres.url("beryl", port=silent.getsockname()[1])
        settings, _ = _workspace(tmp_path, url, api={"db_timeout_s": 1.0})
        with in_process(settings) as (address, _):
            started = time.monotonic()
            answer = httpx.get(f"{address}/history", timeout=30)
            waited = time.monotonic() - started
    assert answer.status_code == 503 and waited < 10
    assert "cannot connect to the history database" in answer.json()["error"]
    assert "timeout" in answer.json()["error"] and postgres.password not in answer.text


def test_a_history_another_session_holds_is_503_with_retry_after(
    postgres: PgServer, tmp_path: Path
) -> None:
    import psycopg

    url = postgres.database()
    settings, _ = _workspace(tmp_path, url, api={"db_timeout_s": 1.0})
    with psycopg.connect(url) as holder, holder.transaction():
        holder.execute("LOCK TABLE runs IN ACCESS EXCLUSIVE MODE")
        with in_process(settings) as (address, _):
            started = time.monotonic()
            answer = httpx.get(f"{address}/history", timeout=30)
            waited = time.monotonic() - started
    assert answer.status_code == 503 and answer.headers["Retry-After"] == "1"
    assert "held by another session" in answer.json()["error"] and waited < 10


def test_passwords_never_appear_in_any_message(postgres: PgServer, tmp_path: Path) -> None:
    database = postgres.create_database()
    wrong = postgres.url(database, password=SECRET)
    settings, config_path = _workspace(tmp_path, wrong)
    for args in (["history"], ["run"], ["history", "migrate"]):
        result = _beryl(config_path, *args)
        line = _one_line_error(result, 7)
        assert "password authentication failed" in line and "***" in line
        assert SECRET not in result.stdout + result.stderr
    assert SECRET not in repr(settings)
    assert SECRET not in repr(PgHistory(wrong)) + repr(PgLock(wrong))
    with in_process(settings) as (address, _):
        answer = httpx.get(f"{address}/history", timeout=30)
    assert answer.status_code == 503 and SECRET not in answer.text and "***" in answer.text
    # Refused at load, and said so without the password: a bad port, no database, no scheme.
    for bad, expected in [
        (f"postgresql://beryl:{SECRET}@127.0.0.1:notaport/db", "port must be a number"),
        (f"postgresql://beryl:{SECRET}@127.0.0.1:5432", "names no database"),
        (f"postgresql://beryl@127.0.0.1/?password={SECRET}", "names no database"),
        (f"beryl:{SECRET}@127.0.0.1/db", "must be a PostgreSQL URL"),
        (f"postgresql://beryl:{SECRET}@127.0.0.1/db?sslmod=require", "no libpq connection"),
    ]:
        data = json.loads(config_path.read_text())
        config_path.write_text(json.dumps({**data, "history_url": bad}))
        result = _beryl(config_path, "history")
        assert result.returncode == 2 and expected in result.stderr, result.stderr
        assert SECRET not in result.stdout + result.stderr
    # The password from libpq's environment: $PGPASSWORD, then a password file.
    data = json.loads(config_path.read_text())
    config_path.write_text(json.dumps({**data, "history_url": postgres.url(database, password="")}))
    migrated = _beryl(config_path, "history", "migrate", env={"PGPASSWORD": postgres.password})
    assert migrated.returncode == 0, migrated.stderr
    assert postgres.password not in migrated.stdout + migrated.stderr
    refused = _beryl(config_path, "history", env={"PGPASSWORD": SECRET})
    assert SECRET not in _one_line_error(refused, 7) + refused.stdout
    passfile = tmp_path / "pgpass"
    passfile.write_text(f"127.0.0.1:{postgres.port}:{database}:beryl:{postgres.password}\n")
    passfile.chmod(0o600)
    listed = _beryl(config_path, "history", "--json", env={"PGPASSFILE": str(passfile)})
    assert listed.returncode == 0 and json.loads(listed.stdout) == [], listed.stderr


def test_a_unix_socket_url_with_the_folder_in_the_query_works(
    postgres: PgServer, tmp_path: Path
) -> None:
    url = postgres.socket_url(postgres.create_database())
    _, config_path = _workspace(tmp_path, url)
    assert _beryl(config_path, "history", "migrate").returncode == 0
    with Workspace(config.load(config_path)).history.run("diagnose"):
        pass
    listed = _beryl(config_path, "history", "--json", "--command", "diagnose")
    assert [r["command"] for r in json.loads(listed.stdout)] == ["diagnose"], listed.stderr


def test_a_session_the_server_ended_is_never_reused(postgres: PgServer) -> None:
    """Connections are kept between calls; one whose session the server ended (a restart, an
    idle timeout, an administrator) is dropped, not used for the next write."""
    url = postgres.database()
    history = PgHistory(url)
    first = history.start_run("ingest")
    assert [r.id for r in history.runs()] == [first]
    database = url.rsplit("/", 1)[1]
    with postgres.admin() as admin:
        ended = admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
            (database,),
        ).fetchall()
        assert ended and all(row == (True,) for row in ended)
        deadline = time.monotonic() + 10
        while admin.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = %s", (database,)
        ).fetchone() != (0,):
            assert time.monotonic() < deadline
            time.sleep(0.02)
    second = history.start_run("train")  # a write: never retried, so it must not meet a dead one
    assert [r.id for r in history.runs()] == [second, first]
    history.close()


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (f"postgresql://beryl:{SECRET}@db.example.com:5432/beryl", "beryl:***@db.example.com"),
        (f"postgres://beryl:{SECRET}@[::1]/beryl?sslmode=require", "beryl:***@[::1]/beryl?ssl"),
        (f"postgresql://beryl@/beryl?host=/run/pg&password={SECRET}", "password=***"),
        (f"postgresql://beryl@h/beryl?password={SECRET}&port=6543", "password=***&port=6543"),
        (f"beryl:{SECRET}@h/beryl", "***"),
    ],
)
def test_masked_urls_show_host_and_database_but_not_the_password(url: str, shown: str) -> None:
    assert shown in masked(url) and SECRET not in masked(url)
