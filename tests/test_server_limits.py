"""``beryl serve`` under hostile and departing clients: header size, slow clients, idle and too
many connections, and SIGTERM with requests in flight.

Most tests drive ``beryl serve`` over loopback with raw sockets, its limits set in the
workspace's config.json as an operator sets them; a few run uvicorn with ``LimitedHttpProtocol``
in this process, to watch the app.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from tests.test_api import make_workspace, serving
from tests.test_server import LOOPS

from beryl.api.protocol import HttpLimits, LimitedConfig
from beryl.api.server import raise_open_file_limit
from beryl.config import ApiSettings

LIMITS = {
    "max_header_bytes": 4096,
    "header_timeout_s": 3.0,
    "body_timeout_s": 1.0,
    "keepalive_timeout_s": 1.0,
    "max_connections": 20,
}
HOST = b"Host: 127.0.0.1\r\n"


@dataclass
class Limited:
    url: str
    address: tuple[str, int]


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Limited]:
    """One worker with small limits (no model: these tests need none)."""
    _, config_path = make_workspace(tmp_path_factory.mktemp("limits") / "ws", run=False, api=LIMITS)
    with serving(config_path) as url:
        host, port = url.removeprefix("http://").split(":")
        yield Limited(url, (host, int(port)))


def _connect(address: tuple[str, int]) -> socket.socket:
    return socket.create_connection(address, timeout=10)


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def _read_answer(sock: socket.socket) -> Answer:
    """Read one HTTP answer (with a Content-Length) from ``sock``."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"the server closed the connection after {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines)}
    length = int(headers["content-length"])
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk, "the server closed the connection within the body"
        body += chunk
    return Answer(int(status_line.split()[1]), headers, body)


def _closed_within(sock: socket.socket, seconds: float) -> bool:
    """The server closes ``sock`` within ``seconds`` (anything it still sends is dropped)."""
    sock.settimeout(seconds)
    try:
        while sock.recv(65536):
            pass
    except TimeoutError:
        return False
    except ConnectionResetError:
        pass
    return True


def _request(size: int, shape: str) -> bytes:
    """A ``GET /health`` whose request line and headers take exactly ``size`` bytes."""
    end = b"\r\n"
    if shape == "long URL":
        frame = b"GET /health?pad= HTTP/1.1\r\n" + HOST + end
        return frame.replace(b"pad=", b"pad=" + b"a" * (size - len(frame)))
    start = b"GET /health HTTP/1.1\r\n" + HOST
    room = size - len(start) - len(end)
    if shape == "one long header":
        return start + b"X-Pad: " + b"a" * (room - len(b"X-Pad: \r\n")) + b"\r\n" + end
    assert shape == "many headers"
    lines = []
    while room > 64:
        line = b"X-Pad-%04d: %s\r\n" % (len(lines), b"a" * 20)
        lines.append(line)
        room -= len(line)
    lines.append(b"X-Last: " + b"a" * (room - len(b"X-Last: \r\n")) + b"\r\n")
    return start + b"".join(lines) + end


@pytest.mark.parametrize("shape", ["many headers", "one long header", "long URL"])
def test_headers_up_to_max_header_bytes_are_answered_and_over_it_refused_with_431(
    limited: Limited, shape: str
) -> None:
    limit = LIMITS["max_header_bytes"]
    for size in (limit - 1, limit):
        request = _request(size, shape)
        assert len(request) == size
        with _connect(limited.address) as sock:
            sock.sendall(request)
            answer = _read_answer(sock)
            assert answer.status == 200, (size, answer)
            assert answer.json() == {"status": "ok"}
    with _connect(limited.address) as sock:
        sock.sendall(_request(limit + 1, shape))
        answer = _read_answer(sock)
        assert answer.status == 431
        assert answer.headers["connection"] == "close"
        assert set(answer.json()) == {"error", "detail"}
        assert "api.max_header_bytes" in answer.json()["detail"]
        assert _closed_within(sock, 10)


def test_a_request_line_alone_over_max_header_bytes_is_refused_with_414(limited: Limited) -> None:
    limit = LIMITS["max_header_bytes"]
    line = b"GET /health?pad= HTTP/1.1\r\n"
    line = line.replace(b"pad=", b"pad=" + b"a" * (limit + 1 - len(line)))
    assert len(line) == limit + 1
    with _connect(limited.address) as sock:
        sock.sendall(line + HOST + b"\r\n")
        answer = _read_answer(sock)
        assert answer.status == 414
        assert "api.max_header_bytes" in answer.json()["detail"]
        assert _closed_within(sock, 10)


def test_header_limit_counts_each_request_of_a_keep_alive_connection_afresh(
    limited: Limited,
) -> None:
    limit = LIMITS["max_header_bytes"]
    with _connect(limited.address) as sock:
        for _ in range(3):  # together far over the limit, each one at it
            sock.sendall(_request(limit, "many headers"))
            assert _read_answer(sock).status == 200
        sock.sendall(_request(limit + 1, "one long header"))
        assert _read_answer(sock).status == 431
        assert _closed_within(sock, 10)


def test_a_huge_header_is_refused_without_reading_it_all(limited: Limited) -> None:
    with _connect(limited.address) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\n" + HOST + b"X-Huge: ")
        with contextlib.suppress(OSError):  # the server stops reading: a send may fail
            for _ in range(16):  # 16 MiB, which the server once read whole
                sock.sendall(b"a" * (1 << 20))
        sock.settimeout(10)
        assert sock.recv(65536).startswith(b"HTTP/1.1 431 ")


def test_slowloris_is_cut_off_after_header_timeout_while_others_are_answered(
    limited: Limited,
) -> None:
    timeout = LIMITS["header_timeout_s"]
    answered: list[int] = []
    slow = _connect(limited.address)
    opened = time.monotonic()
    received = b""
    with slow, httpx.Client(base_url=limited.url, timeout=10) as other:
        # The request line, then a header that never ends: one byte each half second.
        trickle = iter(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"a" * 1000)
        slow.settimeout(0.5)
        while time.monotonic() - opened < timeout + 15:
            try:
                slow.sendall(bytes([next(trickle)]))
                chunk = slow.recv(65536)
            except TimeoutError:
                answered.append(other.get("/health").status_code)
                continue
            except OSError:  # reset, or a send after the server closed
                break
            if not chunk:
                break
            received += chunk
        took = time.monotonic() - opened
    assert timeout - 0.1 <= took < timeout + 10, took
    assert received.startswith(b"HTTP/1.1 408 "), received
    assert b"api.header_timeout_s" in received
    assert len(answered) >= 3 and set(answered) == {200}, answered


def test_a_stalled_body_is_answered_408_after_body_timeout_and_closed(limited: Limited) -> None:
    timeout = LIMITS["body_timeout_s"]
    with _connect(limited.address) as sock:
        sock.sendall(
            b"POST /prediction HTTP/1.1\r\n" + HOST + b"Content-Type: application/json\r\n"
            b"Content-Length: 1000\r\n\r\n" + b'{"records"'
        )
        sent = time.monotonic()
        assert httpx.get(f"{limited.url}/health", timeout=10).status_code == 200  # meanwhile
        answer = _read_answer(sock)
        took = time.monotonic() - sent
        assert answer.status == 408
        assert "api.body_timeout_s" in answer.json()["detail"]
        assert timeout - 0.1 <= took < timeout + 10, took
        assert _closed_within(sock, 10)
    assert httpx.get(f"{limited.url}/health", timeout=10).status_code == 200


def test_an_idle_keep_alive_connection_is_closed_after_keepalive_timeout(
    limited: Limited,
) -> None:
    timeout = LIMITS["keepalive_timeout_s"]
    with _connect(limited.address) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\n" + HOST + b"\r\n")
        assert _read_answer(sock).status == 200
        answered = time.monotonic()
        assert _closed_within(sock, 20)
        took = time.monotonic() - answered
    # Before the header timeout (3 s) and uvicorn's default keep-alive (5 s) would close it.
    assert timeout - 0.5 <= took < LIMITS["header_timeout_s"] - 0.1, took


def test_connections_over_max_connections_are_refused_503_until_idle_ones_time_out(
    limited: Limited,
) -> None:
    limit = LIMITS["max_connections"]
    with contextlib.ExitStack() as stack:
        idle = [stack.enter_context(_connect(limited.address)) for _ in range(limit)]
        started = time.monotonic()
        with _connect(limited.address) as refused:
            refused.sendall(b"GET /health HTTP/1.1\r\n" + HOST + b"\r\n")
            answer = _read_answer(refused)
            assert answer.status == 503
            assert answer.headers["retry-after"] == "1"
            assert "api.max_connections" in answer.json()["detail"]
            assert _closed_within(refused, 10)
        # The idle ones send nothing, so the header timeout closes them; then others get in.
        while True:
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{limited.url}/health", timeout=10).status_code == 200:
                    break
            assert time.monotonic() - started < LIMITS["header_timeout_s"] + 20
            time.sleep(0.2)
        assert all(_closed_within(sock, 10) for sock in idle)


def test_spawned_workers_enforce_the_configured_limits(tmp_path: Path) -> None:
    _, config_path = make_workspace(tmp_path / "ws", run=False, api=LIMITS)
    with serving(config_path, "--workers", "2") as url:
        host, port = url.removeprefix("http://").split(":")
        for _ in range(6):  # more than one connection, so that both workers take some
            with _connect((host, int(port))) as sock:
                sock.sendall(_request(LIMITS["max_header_bytes"] + 1, "one long header"))
                assert _read_answer(sock).status == 431
        with _connect((host, int(port))) as sock:
            opened = time.monotonic()
            assert _closed_within(sock, 20)  # sent nothing: the header timeout
            assert time.monotonic() - opened < LIMITS["header_timeout_s"] + 10


@contextlib.contextmanager
def _in_process(app: Any, limits: HttpLimits, loop: str = "auto") -> Iterator[uvicorn.Server]:
    """uvicorn with ``LimitedHttpProtocol`` on a thread of this process, to watch the app."""
    config = LimitedConfig(app, limits=limits, host="127.0.0.1", port=0, loop=loop, lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 20
        while not server.started:
            assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
            time.sleep(0.02)
        yield server
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def _address(server: uvicorn.Server) -> tuple[str, int]:
    (listener,) = [s for srv in server.servers for s in srv.sockets]
    host, port = listener.getsockname()[:2]
    return host, port


@pytest.mark.parametrize("loop", LOOPS)
def test_an_app_waiting_for_a_stalled_body_sees_the_client_disconnect(loop: str) -> None:
    """The 408 does not leave the app hanging in ``receive()`` (on each event loop, whose
    transports hand the connection over to the lingering close)."""
    seen: list[str] = []
    done = threading.Event()

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            seen.append(message["type"])
            if message["type"] == "http.disconnect" or not message.get("more_body"):
                break
        done.set()

    limits = HttpLimits.from_api(ApiSettings(body_timeout_s=0.5))
    with _in_process(app, limits, loop) as server, _connect(_address(server)) as sock:
        sock.sendall(b"POST / HTTP/1.1\r\n" + HOST + b"Content-Length: 1000\r\n\r\n0123456789")
        assert _read_answer(sock).status == 408
        assert done.wait(10)
        assert seen[-1] == "http.disconnect"
        assert _closed_within(sock, 10)


def test_shutdown_answers_a_request_whose_headers_were_arriving() -> None:
    """Graceful shutdown closes idle connections, but one with part of a request in is
    answered (and then closed), not dropped."""

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    limits = HttpLimits.from_api(ApiSettings())
    with (
        _in_process(app, limits) as server,
        _connect(_address(server)) as idle,
        _connect(_address(server)) as arriving,
    ):
        arriving.sendall(b"GET / HTTP/1.1\r\n" + HOST)
        idle.sendall(b"GET / HTTP/1.1\r\n" + HOST + b"\r\n")
        assert idle.recv(65536).startswith(b"HTTP/1.1 200 ")
        time.sleep(0.3)  # the server has read both
        server.should_exit = True
        assert _closed_within(idle, 10)
        arriving.sendall(b"Accept: */*\r\n\r\n")
        answer = arriving.recv(65536)
        assert answer.startswith(b"HTTP/1.1 200 ") and b"connection: close" in answer
        assert _closed_within(arriving, 10)


def test_a_request_still_running_when_the_grace_period_ends_is_dropped_not_answered_500() -> None:
    """uvicorn cancels the app when ``shutdown_grace_s`` is over, and answers a cancelled
    request 500; the connection is closed before, with no answer."""
    cancelled = threading.Event()

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    limits = HttpLimits.from_api(ApiSettings(shutdown_grace_s=1.0))
    with _in_process(app, limits) as server, _connect(_address(server)) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\n" + HOST + b"\r\n")
        time.sleep(0.3)  # the app is running
        server.should_exit = True
        sock.settimeout(20)
        assert sock.recv(65536) == b""  # closed, nothing sent
        assert cancelled.wait(10)  # uvicorn did cancel the app, after the close


def test_the_soft_open_file_limit_is_raised_so_max_connections_fit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))
        assert raise_open_file_limit(1000) == resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] >= min(1000, hard)
        before = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        raise_open_file_limit(10)  # already enough: left alone
        assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] == before
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


# SIGTERM with requests in flight


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, bytes]:
    """A workspace with a production model, and a CSV body of its test data's rows, repeated
    to some thousands so that parsing one takes a while (a signal then comes in the middle)."""
    settings, config_path = make_workspace(tmp_path_factory.mktemp("sigterm") / "ws")
    (test_file,) = settings.test_data.glob("*.csv")
    header, *rows = test_file.read_bytes().splitlines(keepends=True)
    return config_path, header + b"".join(rows * (6000 // len(rows)))


@contextlib.contextmanager
def _beryl_serve(config_path: Path, *extra: str) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    """``beryl serve`` in a subprocess, its base URL and the process (to signal it)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if k not in ("BERYL_CONFIG", "BERYL_API_TOKEN")}
    url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryFile(mode="w+") as log:
        command = [sys.executable, "-m", "beryl", "--config", str(config_path), "serve"]
        process = subprocess.Popen(
            [*command, "--port", str(port), *extra], stdout=log, stderr=subprocess.STDOUT, env=env
        )
        try:
            deadline = time.monotonic() + 60
            while True:
                assert process.poll() is None, "the server exited"
                with contextlib.suppress(httpx.HTTPError):
                    if httpx.get(f"{url}/ready", timeout=1).status_code == 200:
                        break
                assert time.monotonic() < deadline, "the server did not get ready"
                time.sleep(0.1)
            yield url, process
        finally:
            if process.poll() is None:
                process.kill()
            process.wait()
            log.seek(0)
            print(log.read())  # shown when the test fails


@dataclass
class Outcome:
    kind: str  # "csv" or "json"
    started: float
    ended: float
    status: int | None  # None: no answer (the connection failed)
    error: str | None = None


def _post_until(
    url: str, kind: str, csv_body: bytes, stop: threading.Event, outcomes: list[Outcome]
) -> None:
    record = {"lastmonth_activity": 20, "lastyear_activity": 300, "number_of_employees": 5}
    with httpx.Client(base_url=url, timeout=60) as client:
        while not stop.is_set():
            started = time.monotonic()
            try:
                if kind == "csv":
                    headers = {"Content-Type": "text/csv"}
                    answer = client.post("/prediction", content=csv_body, headers=headers)
                else:
                    answer = client.post("/prediction", json={"records": [record] * 5})
            except httpx.TransportError as exc:
                outcomes.append(Outcome(kind, started, time.monotonic(), None, repr(exc)))
                time.sleep(0.05)
                continue
            outcomes.append(Outcome(kind, started, time.monotonic(), answer.status_code))


@pytest.mark.parametrize("workers", ["1", "2"])
def test_sigterm_finishes_requests_in_flight_and_answers_none_with_a_5xx(
    trained: tuple[Path, bytes], workers: str
) -> None:
    config_path, csv_body = trained
    outcomes: list[Outcome] = []
    stop = threading.Event()
    with _beryl_serve(config_path, "--workers", workers) as (url, process):
        threads = [
            threading.Thread(target=_post_until, args=(url, kind, csv_body, stop, outcomes))
            for kind in ["csv", "json"] * 4
        ]
        for thread in threads:
            thread.start()
        try:
            deadline = time.monotonic() + 60
            while sum(o.status == 200 for o in outcomes) < 40:  # all eight under way
                assert time.monotonic() < deadline, "too few answers before SIGTERM"
                time.sleep(0.05)
            signalled = time.monotonic()
            process.send_signal(signal.SIGTERM)
            returncode = process.wait(timeout=60)  # grace is 30 s: it must not need it all
            stopped = time.monotonic()
        finally:
            stop.set()
            for thread in threads:
                thread.join(timeout=70)
    answered = [o for o in outcomes if o.status is not None]
    summary = sorted({(o.kind, o.status, o.error and o.error[:60]) for o in outcomes}, key=str)
    assert not [o for o in answered if o.status >= 500], summary
    assert {o.status for o in answered} == {200}, summary
    # Requests that were being answered when the signal came were finished, not dropped.
    in_flight = [o for o in answered if o.started < signalled < o.ended]
    assert in_flight, summary
    assert returncode in (0, -signal.SIGTERM), returncode
    assert stopped - signalled < 30
