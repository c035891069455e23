"""A real PostgreSQL server for the tests, one per session: ``initdb`` in a temporary folder,
``postgres`` on a free 127.0.0.1 port and on a unix socket in that folder, stopped at the end.

initdb and postgres refuse to run as root, and CI runs ``make test`` as root: then the server
runs as ``nobody`` (the folder is handed to it). The binaries are Debian's (``make test``
installs the ``postgresql`` package where they are missing). Where they or psycopg are missing,
the tests that need the server are skipped, and fail under CI.

The server admits the role ``beryl`` over TCP with a password (scram-sha-256) and anyone on
its socket without one; every test gets a database of its own::

    url = shared().database()            # postgresql://beryl:<password>@127.0.0.1:<port>/t3
    history = PgHistory(url)
"""

from __future__ import annotations

import atexit
import contextlib
import itertools
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

ROLE = "beryl"
_BINARIES = ("initdb", "postgres")


def _bindir() -> Path | None:
    """Where initdb and postgres are: /usr/local/bin, Debian's versioned folders, the PATH."""
    found = shutil.which("initdb")
    folders = [Path("/usr/local/bin")]
    folders += sorted(
        Path("/usr/lib/postgresql").glob("*/bin"),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
        reverse=True,
    )
    folders += [Path(found).resolve().parent] if found else []
    return next((d for d in folders if all((d / b).is_file() for b in _BINARIES)), None)


def _unavailable(reason: str) -> None:
    """Skip the test (fail it under CI, where the server must be there)."""
    if os.environ.get("CI"):
        pytest.fail(f"PostgreSQL tests cannot run: {reason}")
    pytest.skip(f"PostgreSQL tests need {reason}")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class PgServer:
    """A running server: its folder (data, socket, log), port and the role's password."""

    folder: Path
    port: int
    password: str
    process: subprocess.Popen[bytes]
    _names: Iterator[int] = field(default_factory=lambda: itertools.count(1))
    _by_folder: dict[Path, str] = field(default_factory=dict)

    def url(self, database: str, *, password: str | None = None, port: int | None = None) -> str:
        """The TCP URL of a database, with the role's password (or ``password``) in it."""
        secret = self.password if password is None else password
        user = f"{ROLE}:{secret}" if secret else ROLE
        return f"postgresql://{user}@127.0.0.1:{port or self.port}/{database}"

    def socket_url(self, database: str) -> str:
        """The URL of a database over the unix socket (``?host=/socket/dir``), no password."""
        return f"postgresql://{ROLE}@/{database}?host={self.folder}&port={self.port}"

    def admin(self) -> Any:
        """An autocommit connection as the superuser, over the socket."""
        import psycopg

        return psycopg.connect(
            host=str(self.folder), port=self.port, user="postgres", dbname="postgres",
            autocommit=True,
        )  # fmt: skip

    def create_database(self) -> str:
        """A new empty database owned by the role; its name."""
        name = f"t{next(self._names)}"
        with self.admin() as conn:
            conn.execute(f'CREATE DATABASE "{name}" OWNER {ROLE}')
        return name

    def database(self, *, migrated: bool = True) -> str:
        """The URL of a new database, with Beryl's schema unless ``migrated`` is False."""
        url = self.url(self.create_database())
        if migrated:
            from beryl.monitoring.pgschema import migrate

            migrate(url)
        return url

    def database_for(self, folder: Path) -> str:
        """A migrated database for a test's folder (the same one for the same folder), its URL
        also written to ``folder/history_url`` for the processes the test starts."""
        if folder not in self._by_folder:
            self._by_folder[folder] = self.database()
            (folder / "history_url").write_text(self._by_folder[folder])
        return self._by_folder[folder]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)  # fast shutdown: sessions are ended
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.folder, ignore_errors=True)


def _as_server_user() -> dict[str, Any]:
    """Popen arguments that run the server as ``nobody`` when the tests run as root."""
    if os.geteuid() != 0:
        return {}
    nobody = pwd.getpwnam("nobody")
    return {"user": nobody.pw_uid, "group": nobody.pw_gid, "extra_groups": []}


def start() -> PgServer:
    """initdb and start a server (see the module docstring); skips where that is impossible."""
    bindir = _bindir()
    if bindir is None:
        _unavailable("initdb and postgres (Debian's postgresql package; `make postgresql`)")
    try:
        import psycopg  # noqa: F401
    except ImportError:
        _unavailable("psycopg (pip install -e '.[dev]')")
    assert bindir is not None
    folder = Path(tempfile.mkdtemp(prefix="beryl-pg-"))
    user = _as_server_user()
    if user:
        os.chown(folder, user["user"], user["group"])
    folder.chmod(0o755)  # the tests (root or not) reach the socket in it
    password = secrets.token_urlsafe(18)
    secret = folder / "pwfile"
    secret.write_text(password + "\n")
    if user:
        os.chown(secret, user["user"], user["group"])
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C", "TZ": "UTC"}
    subprocess.run(
        [
            str(bindir / "initdb"), "-D", str(folder / "data"), "-U", "postgres",
            "--auth-local=trust", "--auth-host=scram-sha-256", f"--pwfile={secret}",
            "-E", "UTF8", "--locale=C", "--no-sync",
        ],
        check=True, capture_output=True, env=env, cwd=folder, timeout=120, **user,
    )  # fmt: skip
    secret.unlink()
    for _ in range(5):  # the port found free may be taken by the time the server binds it
        port = _free_port()
        log = (folder / "postgres.log").open("ab")
        process = subprocess.Popen(
            [
                str(bindir / "postgres"), "-D", str(folder / "data"), "-p", str(port),
                "-k", str(folder), "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off",
                "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
                "-c", "max_connections=200",
            ],
            stdout=log, stderr=subprocess.STDOUT, env=env, cwd=folder, **user,
        )  # fmt: skip
        log.close()
        server = PgServer(folder, port, password, process)
        if _wait_until_ready(server):
            break
    else:
        text = (folder / "postgres.log").read_text(errors="replace")[-2000:]
        shutil.rmtree(folder, ignore_errors=True)
        raise RuntimeError(f"PostgreSQL did not start:\n{text}")
    with server.admin() as conn:
        from psycopg import sql

        conn.execute(
            sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                sql.Identifier(ROLE), sql.Literal(password)
            )
        )
    return server


def _wait_until_ready(server: PgServer) -> bool:
    import psycopg

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            return False
        with contextlib.suppress(psycopg.OperationalError):
            server.admin().close()
            return True
        time.sleep(0.1)
    server.process.kill()
    server.process.wait()
    return False


_SHARED: list[PgServer] = []


def shared() -> PgServer:
    """The session's server, started on first use and stopped when the session ends."""
    if not _SHARED:
        _SHARED.append(start())
        atexit.register(_SHARED[0].stop)  # also when the session fixture never ran
    return _SHARED[0]


@pytest.fixture(scope="session")
def postgres() -> Iterator[PgServer]:
    """The session's PostgreSQL server (see the module docstring)."""
    server = shared()
    yield server
    server.stop()
