"""``beryl apicalls``: call every endpoint of a running server and record the answers."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from beryl._io import atomic_write_text, utc_now
from beryl.config import Settings
from beryl.data.csvfiles import csv_files
from beryl.errors import ServiceError
from beryl.loop.passes import ApiCallsDone
from beryl.workspace import Workspace

API_RETURNS_FILE = "apireturns.txt"


@dataclass
class CallResult:
    method: str
    path: str
    status: int
    seconds: float
    body: Any


@dataclass
class ApiCalls:
    """Every endpoint's answer, and where they were written."""

    base_url: str
    calls: list[CallResult] = field(default_factory=list)
    written: list[Path] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(c.status == 200 for c in self.calls)

    def to_dict(self) -> dict[str, Any]:
        return {
            "base_url": self.base_url,
            "time": utc_now(),
            "calls": [c.__dict__ for c in self.calls],
        }


def base_url(settings: Settings) -> str:
    host = settings.api.host
    if host in ("0.0.0.0", "::", ""):  # noqa: S104  (a listen address: call it on loopback)
        host = "127.0.0.1"
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{settings.api.port}"


def server_answers(url: str, timeout: float = 1.0) -> bool:
    import httpx

    try:
        return httpx.get(f"{url}/health", timeout=timeout).status_code == 200
    except httpx.HTTPError:
        return False


def call_all(settings: Settings, url: str | None = None, *, timeout: float = 30.0) -> ApiCalls:
    """Call every endpoint (prediction on the test data) and write ``apireturns.txt``."""
    import httpx

    url = (url or base_url(settings)).rstrip("/")
    headers = {"Authorization": f"Bearer {settings.api_token}"} if settings.api_token else {}
    result = ApiCalls(base_url=url)
    requests: list[tuple[str, str, dict[str, Any] | None]] = [
        ("POST", "/prediction", _prediction_body(settings)),
        ("GET", "/scoring", None),
        ("GET", "/summarystats", None),
        ("GET", "/diagnostics", None),
        ("GET", "/health", None),
        ("GET", "/ready", None),
    ]
    with httpx.Client(base_url=url, headers=headers, timeout=timeout) as client:
        for method, path, body in requests:
            started = time.perf_counter()
            try:
                if body is not None and "csv" in body:
                    response = client.request(
                        method, path, content=body["csv"], headers={"Content-Type": "text/csv"}
                    )
                else:
                    response = client.request(method, path, json=body)
            except httpx.HTTPError as exc:
                raise ServiceError(
                    f"cannot reach the Beryl API at {url}: {exc}",
                    hint="start it with `beryl serve`, or check api.host/api.port in config.json",
                ) from exc
            try:
                answer: Any = response.json()
            except ValueError:
                answer = response.text
            result.calls.append(
                CallResult(
                    method, path, response.status_code, time.perf_counter() - started, answer
                )
            )
    text = json.dumps(result.to_dict(), indent=2, default=str) + "\n"
    folder = settings.model_folder
    stamp = utc_now().replace(":", "").replace("-", "").split(".")[0]
    for target in (folder / API_RETURNS_FILE, folder / "apireturns" / f"apireturns-{stamp}.txt"):
        atomic_write_text(target, text)
        result.written.append(target)
    return result


def _prediction_body(settings: Settings) -> dict[str, Any]:
    """The test data as ``file_location`` when it is in the workspace, else as a CSV body."""
    files = csv_files(settings.test_data)
    if not files:
        return {"records": []}
    first = files[0].resolve()
    root = settings.root.resolve()
    if first.is_relative_to(root):
        return {"file_location": str(first.relative_to(root))}
    return {"csv": first.read_bytes()}


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def in_process_server(settings: Settings) -> Iterator[str]:
    """Serve the workspace's API on a free loopback port in a thread; yields its base URL."""
    import uvicorn

    from beryl.api import create_app

    port = _free_port()
    local = settings.model_copy(
        update={"api": settings.api.model_copy(update={"host": "127.0.0.1"})}
    )
    server = uvicorn.Server(
        uvicorn.Config(create_app(local), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, name="beryl-in-process-api", daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise ServiceError("the in-process API server did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def call_configured_or_in_process(settings: Settings) -> ApiCalls:
    """Call the configured server if it answers, else an in-process one."""
    url = base_url(settings)
    if server_answers(url):
        return call_all(settings, url)
    with in_process_server(settings) as local:
        return call_all(settings, local)


def calls_after_promotion(workspace: Workspace) -> ApiCallsDone:
    """What a pass hands the loop to call after a promotion: every endpoint, on the configured
    server if it answers, else on an in-process one."""
    calls = call_configured_or_in_process(workspace.settings)
    return ApiCallsDone(
        ok=sum(c.status == 200 for c in calls.calls),
        total=len(calls.calls),
        file=str(calls.written[0]),
        base_url=calls.base_url,
    )
