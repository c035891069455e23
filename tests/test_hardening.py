"""The API against a hostile client: hosts, content types, tokens, limits and truth (server
faults are in ``tests/test_faults.py``).

Each class of attack or fault has tests of its own, against a real ``beryl serve`` on a free
loopback port (``tests.test_api.serving``) or the app in process where the test holds a fault
in place.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.conftest import CliRunner
from tests.test_api import make_workspace, serving
from tests.test_event_loop import in_process

from beryl import config
from beryl.api.app import HostCheck
from beryl.api.server import app_from_environment  # noqa: F401  (the factory serve uses)
from beryl.config import Settings
from beryl.errors import ConfigError

FEATURES = ["lastmonth_activity", "lastyear_activity", "number_of_employees"]
RECORD = {"lastmonth_activity": 5, "lastyear_activity": 300, "number_of_employees": 12}
GET_ROUTES = [
    "/scoring",
    "/summarystats",
    "/diagnostics",
    "/drift",
    "/history",
    "/metrics",
    "/dashboard",
    "/health",
    "/ready",
    "/openapi.json",
    "/docs",
]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Settings]]:
    settings, config_path = make_workspace(
        tmp_path_factory.mktemp("hardening") / "ws", api={"max_records": 50}
    )
    with serving(config_path) as url:
        yield url, settings


def _raw(url: str, request: bytes, timeout: float = 10.0) -> bytes:
    """Send raw bytes, return everything the server answers before closing (or the timeout)."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=timeout) as sock:
        sock.sendall(request)
        sock.shutdown(socket.SHUT_WR)
        chunks = []
        with contextlib.suppress(TimeoutError, ConnectionResetError):
            while chunk := sock.recv(65536):
                chunks.append(chunk)
    return b"".join(chunks)


def _status(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1])


# -- Host allowlist (DNS rebinding) ---------------------------------------------------------------
@pytest.mark.parametrize(
    "host", ["localhost", "localhost:1234", "127.0.0.1", "127.0.0.1:8000", "[::1]:80", "LOCALHOST."]
)
def test_loopback_hosts_are_answered(served: tuple[str, Settings], host: str) -> None:
    url, _ = served
    answer = httpx.get(f"{url}/health", headers={"Host": host}, timeout=10)
    assert answer.status_code == 200


@pytest.mark.parametrize(
    "host", ["evil.test", "evil.test:8000", "127.0.0.1.evil.test", "localhost.evil.test", "[::2]"]
)
def test_other_hosts_are_refused_on_every_route(served: tuple[str, Settings], host: str) -> None:
    url, _ = served
    headers = {"Host": host}
    for route in GET_ROUTES:
        answer = httpx.get(f"{url}{route}", headers=headers, timeout=10)
        assert answer.status_code == 400, route
        assert "is not served here" in answer.json()["error"]
    # The prediction fast path too, with a body it would otherwise answer itself.
    answer = httpx.post(f"{url}/prediction", json={"records": [RECORD]}, headers=headers)
    assert answer.status_code == 400


def test_a_request_without_host_is_refused(served: tuple[str, Settings]) -> None:
    url, _ = served
    answer = _raw(url, b"GET /summarystats HTTP/1.0\r\n\r\n")
    assert _status(answer) == 400
    assert b"no Host header" in answer


@pytest.mark.parametrize(
    ("listen", "allowed", "host", "ok"),
    [
        ("127.0.0.1", None, "localhost", True),
        ("127.0.0.1", ["beryl.example.com"], "localhost", True),  # loopback: always
        ("127.0.0.1", ["beryl.example.com"], "other.example.com", False),
        ("127.0.0.1", ["beryl.example.com"], "BERYL.example.com:443", True),
        ("10.1.2.3", None, "10.1.2.3:8000", True),
        ("10.1.2.3", None, "10.1.2.4", False),
        ("10.1.2.3", None, "localhost", True),
        ("0.0.0.0", ["*"], "anything.test", True),
        ("::", ["10.0.0.5", "[fe80::1]"], "[fe80::1]:8000", True),
    ],
)
def test_host_policy(listen: str, allowed: list[str] | None, host: str, ok: bool) -> None:
    from beryl.api.app import allowed_hosts

    api: dict[str, Any] = {"host": listen}
    if allowed is not None:
        api["allowed_hosts"] = allowed
    settings = config.from_mapping({"api": api}, Path.cwd(), check_model=False)
    assert HostCheck(allowed_hosts(settings))(host) is ok


def test_listening_everywhere_needs_named_hosts(tmp_path: Path, beryl_cli: CliRunner) -> None:
    _, config_path = make_workspace(tmp_path / "ws", run=False, api={"host": "0.0.0.0"})
    result = beryl_cli("serve", "--port", "1", config=config_path)
    assert result.returncode == 2
    assert "api.allowed_hosts" in result.stderr and "Traceback" not in result.stderr
    bad = json.loads(config_path.read_text())
    bad["api"]["allowed_hosts"] = ["evil.test:80"]
    config_path.write_text(json.dumps(bad))
    result = beryl_cli("serve", config=config_path)
    assert result.returncode == 2 and "without a port" in result.stderr


# -- content types (cross-site requests) ----------------------------------------------------------
@pytest.mark.parametrize(
    "content_type",
    [
        None,
        "text/plain",
        "text/plain;charset=UTF-8",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "application/jsonx",
    ],
)
def test_json_must_be_declared_as_json(
    served: tuple[str, Settings], content_type: str | None
) -> None:
    """What a browser sends cross-site without a preflight never reaches a workspace file."""
    url, _ = served
    headers = {} if content_type is None else {"Content-Type": content_type}
    for body in ({"file_location": "testdata/testdata.csv"}, {"records": [RECORD]}):
        request = httpx.Request(
            "POST", f"{url}/prediction", content=json.dumps(body), headers=headers
        )
        assert ("content-type" in request.headers) is (content_type is not None)
        with httpx.Client(timeout=10) as client:
            answer = client.send(request)
        assert answer.status_code == 415, (content_type, answer.text)
        assert "application/json" in answer.json()["detail"]


def test_json_declared_with_a_charset_is_accepted(served: tuple[str, Settings]) -> None:
    url, _ = served
    answer = httpx.post(
        f"{url}/prediction",
        content=json.dumps({"records": [RECORD]}),
        headers={"Content-Type": "Application/JSON; charset=utf-8"},
    )
    assert answer.status_code == 200


def test_no_cors_headers_are_sent(served: tuple[str, Settings]) -> None:
    """Beryl's stance: no CORS, so a page on another origin cannot read any answer."""
    url, _ = served
    origin = {"Origin": "http://evil.test"}
    answer = httpx.get(f"{url}/summarystats", headers=origin)
    assert not [h for h in answer.headers if h.lower().startswith("access-control-")]
    preflight = httpx.options(
        f"{url}/prediction",
        headers={
            **origin,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type",
        },
    )
    assert preflight.status_code == 405
    assert "access-control-allow-origin" not in preflight.headers


# -- tokens ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("token", "problem"),
    [
        ("", "must not be empty"),
        ("pässwort", "ASCII letters"),
        ("two words", "ASCII letters"),
        ("tab\there", "ASCII letters"),
        ("=leading", "ASCII letters"),
        ("semi;colon", "ASCII letters"),
    ],
)
def test_bad_tokens_are_refused_at_load(tmp_path: Path, token: str, problem: str) -> None:
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"api": {"token": token}}))
    with pytest.raises(ConfigError, match=problem):
        config.load(path, environ={})
    path.write_text("{}")
    with pytest.raises(ConfigError, match="BERYL_API_TOKEN"):
        config.load(path, environ={"BERYL_API_TOKEN": token})


def test_the_token_rule_admits_every_b64token(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    token = "Az09-._~+/x=="
    path.write_text(json.dumps({"api": {"token": token}}))
    assert config.load(path, environ={}).api_token == token


def test_tokens_are_compared_as_bytes_as_sent(tmp_path: Path) -> None:
    token = "s3cret-Token_~+/=="
    _, config_path = make_workspace(tmp_path / "ws", api={"token": token})
    with serving(config_path) as url:

        def status(headers: dict[str, str]) -> int:
            return httpx.get(f"{url}/summarystats", headers=headers, timeout=10).status_code

        assert status({"Authorization": f"Bearer {token}"}) == 200
        assert status({"Authorization": f"bearer   {token}"}) == 200
        assert status({"X-API-Token": token}) == 200
        assert status({"Authorization": f"Bearer {token.upper()}"}) == 401
        assert status({"Authorization": f"Bearer {token[:-1]}"}) == 401
        assert status({"Authorization": f"Basic {token}"}) == 401
        assert status({}) == 401
        # Bytes no token holds: refused, never a server error.
        for raw in (b"Bearer s3cret-Token_~+/==\xc3\xa4", b"Bearer \xff\xfe", b"Bearer "):
            answer = _raw(
                url,
                b"GET /summarystats HTTP/1.1\r\nHost: localhost\r\n"
                b"Authorization: " + raw + b"\r\nConnection: close\r\n\r\n",
            )
            assert _status(answer) == 401, raw
        fast = httpx.post(
            f"{url}/prediction",
            json={"records": [RECORD]},
            headers={"Authorization": f"Bearer {token}"},
        )
        assert fast.status_code == 200


# -- limits while reading, not after --------------------------------------------------------------
def _csv(rows: int, tail: str = "") -> bytes:
    lines = [",".join(FEATURES)] + ["1,2,3"] * rows
    return ("\n".join(lines) + "\n" + tail).encode()


def test_csv_rows_are_limited_at_the_boundary(served: tuple[str, Settings]) -> None:
    url, _ = served  # api.max_records is 50
    headers = {"Content-Type": "text/csv"}
    at = httpx.post(f"{url}/prediction", content=_csv(50), headers=headers)
    over = httpx.post(f"{url}/prediction", content=_csv(51), headers=headers)
    assert at.status_code == 200 and len(at.json()["predictions"]) == 50
    assert over.status_code == 413 and "api.max_records" in over.json()["detail"]


def test_csv_rows_are_counted_while_parsing(served: tuple[str, Settings]) -> None:
    """Rows past the limit are never converted: a bad value far past it does not turn the
    413 into a 422, and a body of a million empty records is refused as quickly."""
    url, _ = served
    headers = {"Content-Type": "text/csv"}
    poisoned = _csv(200_000, tail="not,a,number\n")
    answer = httpx.post(f"{url}/prediction", content=poisoned, headers=headers, timeout=60)
    assert answer.status_code == 413
    empty = (",".join(FEATURES) + "\n" + ",,\n" * 1_000_000).encode()
    answer = httpx.post(f"{url}/prediction", content=empty, headers=headers, timeout=60)
    assert answer.status_code == 413


def test_file_location_is_limited_by_bytes_before_reading_and_by_rows_while_parsing(
    served: tuple[str, Settings],
) -> None:
    url, settings = served
    huge = settings.root / "huge.csv"
    with huge.open("wb") as handle:  # sparse: 4 GiB that reading whole would show
        handle.write(_csv(1))
        handle.truncate(4 << 30)
    many = settings.root / "many.csv"
    many.write_bytes(_csv(200_000, tail="x,y,z\n"))
    try:
        big = httpx.post(f"{url}/prediction", json={"file_location": "huge.csv"}, timeout=30)
        assert big.status_code == 413 and "api.max_file_bytes" in json.dumps(big.json())
        rows = httpx.post(f"{url}/prediction", json={"file_location": "many.csv"}, timeout=30)
        assert rows.status_code == 413 and "api.max_records" in rows.json()["detail"]
    finally:
        huge.unlink()
        many.unlink()


# -- GET routes never write -----------------------------------------------------------------------
# SQLite's shared-memory index beside a WAL database: any reader makes it where the folder
# allows (on a read-only workspace none is made, see the read-only test); it holds no content.
_SQLITE_SIDE_FILES = {"beryl.sqlite-wal", "beryl.sqlite-shm"}


def _tree(root: Path) -> dict[str, tuple[int, str]]:
    return {
        str(p.relative_to(root)): (p.stat().st_mtime_ns, hashlib.sha256(p.read_bytes()).hexdigest())
        for p in sorted(root.rglob("*"))
        if p.is_file() and not p.is_symlink() and p.name not in _SQLITE_SIDE_FILES
    }


def test_get_routes_write_nothing_to_the_workspace(tmp_path: Path) -> None:
    settings, _ = make_workspace(tmp_path / "ws")
    (settings.output_folder / "profile.json").unlink(missing_ok=True)
    before = _tree(settings.root)
    with in_process(settings) as (url, _):
        for route in GET_ROUTES:
            assert httpx.get(f"{url}{route}", timeout=30).status_code < 500, route
        time.sleep(0.5)  # a background refresh of the outdated packages would write by now
    assert _tree(settings.root) == before


@pytest.fixture
def read_only_workspace(tmp_path: Path) -> Iterator[tuple[Settings, Path]]:
    """A workspace mounted read-only (a bind mount: root ignores file permissions)."""
    if os.geteuid() != 0:
        pytest.skip("a read-only bind mount needs root")
    source = tmp_path / "source"
    settings, _config_path = make_workspace(source / "ws")
    (settings.output_folder / "profile.json").unlink(missing_ok=True)
    mount = tmp_path / "ro"
    mount.mkdir()
    subprocess.run(["mount", "--bind", str(source), str(mount)], check=True)
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", str(mount)], check=True)
        yield config.load(mount / "ws" / "config.json"), mount / "ws" / "config.json"
    finally:
        subprocess.run(["umount", str(mount)], check=True)


def test_a_read_only_workspace_is_served(read_only_workspace: tuple[Settings, Path]) -> None:
    settings, config_path = read_only_workspace
    with pytest.raises(OSError):
        (settings.root / "probe").write_text("x")
    with serving(config_path) as url:
        for route in GET_ROUTES:
            answer = httpx.get(f"{url}{route}", timeout=30)
            assert answer.status_code in (200, 404), (route, answer.text)  # /drift: none yet
        answer = httpx.post(f"{url}/prediction", json={"records": [RECORD]})
        assert answer.status_code == 200
        csv = (settings.test_data / "testdata.csv").read_bytes()
        answer = httpx.post(f"{url}/prediction", content=csv, headers={"Content-Type": "text/csv"})
        assert answer.status_code == 200


def test_the_profile_computed_for_a_reader_matches_the_saved_one(tmp_path: Path) -> None:
    from beryl.monitoring.diagnostics import ProfileCache, profile
    from beryl.workspace import Workspace

    settings, _ = make_workspace(tmp_path / "ws")
    (settings.output_folder / "profile.json").unlink(missing_ok=True)
    in_memory = ProfileCache()(Workspace(settings))
    assert not (settings.output_folder / "profile.json").exists()
    saved = profile(settings)
    assert {k: v for k, v in in_memory.items() if k != "computed_at"} == {
        k: v for k, v in saved.items() if k != "computed_at"
    }


def test_the_serve_factory_reads_its_listen_address(tmp_path: Path) -> None:
    """Workers build the app from the environment: the --host given to serve reaches them."""
    _, config_path = make_workspace(tmp_path / "ws", run=False)
    code = (
        "import os; from beryl.api.server import app_from_environment; "
        "a = app_from_environment(); print(sorted(a.app.state.hosts.allowed or ['*']))"
    )
    env = {**os.environ, "BERYL_CONFIG": str(config_path), "BERYL_SERVE_HOST": "10.9.8.7"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "['10.9.8.7', '127.0.0.1', '::1', 'localhost']"


# -- file_location races --------------------------------------------------------------------------
@pytest.mark.slow
def test_file_location_races_never_leak_or_hang(tmp_path: Path) -> None:
    """Another thread swaps the named file for a symlink to a secret outside the workspace, or
    for a FIFO, while the API reads it thousands of times: no answer carries the secret, none
    hangs, every one is the file's predictions or a refusal."""
    settings, _ = make_workspace(tmp_path / "ws")
    secret = tmp_path / "secret.csv"
    secret.write_text(",".join(FEATURES) + "\nTOPSECRET,2,3\n")
    good = settings.root / "good.csv"
    good.write_text(",".join(FEATURES) + "\n1,2,3\n")
    name = settings.root / "incoming.csv"
    link, fifo = settings.root / ".link", settings.root / ".fifo"
    stop = threading.Event()

    def swap() -> None:
        while not stop.is_set():
            for replacement in ("link", "fifo"):
                if replacement == "link":
                    link.unlink(missing_ok=True)
                    link.symlink_to(secret)
                    os.replace(link, name)
                else:
                    fifo.unlink(missing_ok=True)
                    os.mkfifo(fifo)
                    os.replace(fifo, name)
                staged = settings.root / ".good"
                staged.write_text(good.read_text())
                os.replace(staged, name)

    with in_process(settings) as (url, _):
        thread = threading.Thread(target=swap, daemon=True)
        thread.start()
        statuses: dict[int, int] = {}
        try:
            with httpx.Client(timeout=10) as client:
                for _ in range(1500):
                    answer = client.post(
                        f"{url}/prediction", json={"file_location": "incoming.csv"}
                    )
                    assert "TOPSECRET" not in answer.text
                    assert answer.status_code in (200, 403, 404, 422), answer.text
                    statuses[answer.status_code] = statuses.get(answer.status_code, 0) + 1
        finally:
            stop.set()
            thread.join(timeout=10)
    assert statuses.get(200, 0) > 0 and statuses.get(403, 0) + statuses.get(422, 0) > 0, statuses
