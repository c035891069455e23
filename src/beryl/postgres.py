"""Reaching PostgreSQL: the ``history_url`` of config.json, checked when the config is loaded,
shown only with its password masked, and connections whose failures are one line.

The URL is libpq's: ``postgresql://user@host:port/database``, or with ``?host=/socket/dir`` for
a unix socket. A password may be in the URL; better, libpq finds it in ``$PGPASSWORD`` or
``~/.pgpass`` (``$PGPASSFILE``). No message Beryl writes holds it::

    masked("postgresql://beryl:s3cret@db.example.com/beryl")
    # 'postgresql://beryl:***@db.example.com/beryl'

psycopg (the ``postgres`` extra) is imported only when a connection is made.
"""

from __future__ import annotations

import math
import os
import re
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, unquote, urlsplit

from beryl.errors import ConfigError, StateError

if TYPE_CHECKING:
    import psycopg

SCHEMES = ("postgresql", "postgres")
MASK = "***"
# libpq waits this long at most for a connection, whatever the caller's own wait.
CONNECT_TIMEOUT_S = 10
# The parameters libpq (17) takes in a URL's query.
_PARAMETERS = frozenset(
    (
        *("host", "hostaddr", "port", "dbname", "user", "password", "passfile", "service"),
        *("require_auth", "channel_binding", "connect_timeout", "client_encoding", "options"),
        *("application_name", "fallback_application_name", "replication", "tcp_user_timeout"),
        *("keepalives", "keepalives_idle", "keepalives_interval", "keepalives_count"),
        *("sslmode", "requiressl", "sslcompression", "sslcert", "sslkey", "sslpassword"),
        *("sslcertmode", "sslrootcert", "sslcrl", "sslcrldir", "sslsni", "sslnegotiation"),
        *("ssl_min_protocol_version", "ssl_max_protocol_version", "requirepeer", "gssencmode"),
        *("krbsrvname", "gsslib", "gssdelegation", "target_session_attrs", "load_balance_hosts"),
    )
)
_EXAMPLE = (
    "e.g. postgresql://beryl@db.example.com:5432/beryl, or "
    "postgresql://beryl@/beryl?host=/run/postgresql for a unix socket"
)


def url_problem(url: str) -> str | None:
    """What is wrong with a PostgreSQL URL, or None (the message never holds the password)."""
    parts = urlsplit(url)
    if parts.scheme not in SCHEMES or not url.startswith(f"{parts.scheme}://"):
        return f"must be a PostgreSQL URL starting with postgresql:// ({_EXAMPLE})"
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    unknown = sorted(set(query) - _PARAMETERS)
    if unknown:
        return f"{masked(url)}: {', '.join(unknown)} is no libpq connection parameter"
    database = unquote(parts.path.removeprefix("/")) or query.get("dbname", "")
    if not database:
        return f"{masked(url)} names no database: end it with /DATABASE ({_EXAMPLE})"
    if "/" in database:
        return f"{masked(url)}: the database is one name after the host, /DATABASE ({_EXAMPLE})"
    if "," not in parts.netloc:  # several hosts: libpq checks each
        try:
            parts.port  # noqa: B018  (parsing the port is the check)
        except ValueError:
            return f"{masked(url)}: the port must be a number from 1 to 65535"
    return None


def checked_url(url: str | None) -> str | None:
    """``url`` as it is, or ``ValueError`` saying what is wrong with it (config validation)."""
    problem = None if url is None else url_problem(url)
    if problem:
        raise ValueError(problem)
    return url


def masked(url: str) -> str:
    """The URL with its password (in the user part or as ``password=``) shown as ``***``."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return MASK  # not a URL: it may be anything, a password included
    netloc, slash, tail = rest.partition("/")
    userinfo, at, hosts = netloc.rpartition("@")
    if at and ":" in userinfo:
        netloc = f"{userinfo.split(':', 1)[0]}:{MASK}@{hosts}"
    tail = re.sub(r"(^|[?&])(password=)[^&]*", rf"\1\2{MASK}", tail)
    return f"{scheme}://{netloc}{slash}{tail}"


def one_line(text: str, url: str) -> str:
    """A driver's message on one line, without the URL's password or ``$PGPASSWORD``."""
    text = " ".join(str(text).split())
    text = text.replace(url, masked(url))
    for secret in _secrets(url):
        text = text.replace(secret, MASK)
    return text


def _secrets(url: str) -> set[str]:
    parts = urlsplit(url)
    found = {parts.password or "", os.environ.get("PGPASSWORD", "")}
    found |= {value for key, value in parse_qsl(parts.query) if key == "password"}
    found |= {unquote(value) for value in found}
    return {value for value in found if len(value) >= 4}  # a shorter one would garble the text


def connect(url: str, *, timeout: float, error: type[StateError]) -> psycopg.Connection[Any]:
    """An autocommit connection whose statements and lock waits end after ``timeout`` seconds
    (set once it is made, which poolers allow); a failure is ``error`` in one line naming the
    masked URL and what to do."""
    try:
        import psycopg
    except ImportError as exc:
        raise ConfigError(
            "history_url names a PostgreSQL database, but psycopg is not installed",
            hint="pip install 'beryl[postgres]', or remove history_url to keep the history in "
            "the workspace (SQLite)",
        ) from exc
    from psycopg.conninfo import conninfo_to_dict

    try:
        given = conninfo_to_dict(url)
    except psycopg.Error as exc:
        raise error(
            f"cannot use history_url {masked(url)}: {one_line(str(exc), url)}",
            hint=f"fix it in config.json ({_EXAMPLE})",
        ) from exc
    extra: dict[str, Any] = {
        "connect_timeout": str(max(2, min(CONNECT_TIMEOUT_S, math.ceil(timeout))))
    }
    if "application_name" not in given:
        extra["application_name"] = "beryl"
    wait = f"{max(1, int(timeout * 1000))}ms"
    try:
        conn = psycopg.connect(url, autocommit=True, **extra)
    except psycopg.Error as exc:
        raise connect_error(exc, url, error) from exc
    try:
        conn.execute(
            "SELECT set_config('statement_timeout', %s, false), "
            "set_config('lock_timeout', %s, false)",
            (wait, wait),
        )
    except psycopg.Error as exc:
        conn.close()
        raise connect_error(exc, url, error) from exc
    return conn


def connect_error(exc: Exception, url: str, error: type[StateError]) -> StateError:
    """``error`` for a connection that could not be made: the reason, and what to do."""
    reason = one_line(str(exc), url).removeprefix("connection failed: ")
    lowered = reason.lower()
    if "password" in lowered or "authentication" in lowered:
        hint = (
            "check the user and password: in history_url, $PGPASSWORD or ~/.pgpass "
            "($PGPASSFILE); then run the command again"
        )
    elif 'role "' in lowered and "does not exist" in lowered:
        hint = "create that user (createuser), or name another in history_url"
    elif "does not exist" in lowered:
        hint = "create it (createdb), run `beryl history migrate`, then the command again"
    else:
        hint = (
            "check that PostgreSQL runs there and accepts connections from this machine "
            "(host, port, pg_hba.conf), then run the command again"
        )
    return error(f"cannot connect to the history database {masked(url)}: {reason}", hint=hint)
