"""The API never blocks its event loop, by construction.

Checked two ways. By ordering: while a route's disk work is held in progress on a worker thread
(the dataset profile, made to wait on an event), a prediction is answered; a route that did the
same work on the event loop holds the prediction back (the check can fail). Statically: every
``async def`` in ``beryl.api.routes`` reaches disk and SQLite only inside a function it hands to
``run_in_threadpool``.
"""

from __future__ import annotations

import ast
import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from tests.test_api import make_workspace

import beryl.api.routes
from beryl.api.app import create_app
from beryl.config import Settings
from beryl.monitoring.diagnostics import Profile, ProfileSource
from beryl.workspace import Workspace

RECORD = {"lastmonth_activity": 5, "lastyear_activity": 300, "number_of_employees": 12}
ROUTES = Path(beryl.api.routes.__file__).parent


@contextlib.contextmanager
def in_process(settings: Settings) -> Iterator[tuple[str, FastAPI]]:
    """The app on a uvicorn thread, so the test can hold faults in place around requests."""
    app = create_app(settings)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}", app
    finally:
        server.should_exit = True
        thread.join(timeout=10)


class HeldProfiles:
    """A profile source that, once entered, waits for ``release`` before computing."""

    def __init__(self, real: ProfileSource) -> None:
        self.real = real
        self.entered = threading.Event()
        self.release = threading.Event()

    def __call__(self, workspace: Workspace) -> Profile:
        self.entered.set()
        if not self.release.wait(timeout=120):
            raise TimeoutError("the test never released the profile")
        return self.real(workspace)


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    made, _ = make_workspace(tmp_path_factory.mktemp("event-loop") / "ws")
    (made.output_folder / "profile.json").unlink(missing_ok=True)  # every reader computes it
    return made


@pytest.mark.parametrize("route", ["/summarystats", "/dashboard", "/diagnostics"])
def test_a_prediction_is_answered_while_a_route_recomputes(settings: Settings, route: str) -> None:
    with in_process(settings) as (url, app):
        held = HeldProfiles(app.state.profiles)
        app.state.profiles = held
        order: list[str] = []
        answers: dict[str, httpx.Response] = {}

        def ask() -> None:
            answers[route] = httpx.get(f"{url}{route}", timeout=120)
            order.append(route)

        asking = threading.Thread(target=ask)
        asking.start()
        try:
            assert held.entered.wait(timeout=60), f"{route} never asked for the profile"
            prediction = httpx.post(f"{url}/prediction", json={"records": [RECORD]}, timeout=60)
            order.append("prediction")
            assert not held.release.is_set() and asking.is_alive()  # still recomputing
        finally:
            held.release.set()
            asking.join(timeout=120)
        assert prediction.status_code == 200
        assert answers[route].status_code == 200, answers[route].text
        assert order == ["prediction", route]


def test_a_route_that_recomputes_on_the_event_loop_holds_predictions_back(
    settings: Settings,
) -> None:
    """The ordering check can fail: the same held work done in a coroutine stops the server."""
    with in_process(settings) as (url, app):
        held = HeldProfiles(app.state.profiles)

        async def on_the_loop() -> dict[str, Any]:
            return dict(held(app.state.workspace))

        app.add_api_route("/held-on-the-loop", on_the_loop)
        asking = threading.Thread(
            target=lambda: httpx.get(f"{url}/held-on-the-loop", timeout=120), daemon=True
        )
        asking.start()
        try:
            assert held.entered.wait(timeout=60)
            with pytest.raises(httpx.TimeoutException):  # nobody answers while the loop is held
                httpx.post(f"{url}/prediction", json={"records": [RECORD]}, timeout=1.0)
        finally:
            held.release.set()
            asking.join(timeout=120)
        answer = httpx.post(f"{url}/prediction", json={"records": [RECORD]}, timeout=60)
        assert answer.status_code == 200


# -- statically: disk and SQLite only on worker threads -------------------------------------------
# Calls that open, read, stat or query something: constructors of the stores, file methods,
# the history's queries, and the monitoring functions that read the workspace.
BLOCKING_CALLS = frozenset(
    {
        *("History", "Dataset", "Registry", "Workspace", "open", "connect"),
        *("read_bytes", "read_text", "write_bytes", "write_text", "stat", "exists"),
        *("iterdir", "glob", "unlink", "mkdir"),
        *("runs", "latest_drift", "scores", "promotions", "last_step", "start_run"),
        *("record_drift", "record_score", "record_promotion", "record_step", "finish_run"),
        *("profiles", "profile", "compute_profile", "dashboard_data", "diagnose"),
        *("recorded_timings", "current", "render", "production", "card", "model"),
    }
)
BLOCKING_ATTRIBUTES = frozenset({"dataset"})  # ``Workspace.dataset`` reads dataset.json


def _name(node: ast.expr) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return None


def _handed_to_threads(function: ast.AST) -> set[ast.AST]:
    """The lambdas and local functions a coroutine passes to ``run_in_threadpool``."""
    handed: set[ast.AST] = set()
    names: set[str] = set()
    for node in ast.walk(function):
        if isinstance(node, ast.Call) and _name(node.func) == "run_in_threadpool" and node.args:
            first = node.args[0]
            if isinstance(first, ast.Lambda):
                handed.add(first)
            elif isinstance(first, ast.Name):
                names.add(first.id)
    for node in ast.walk(function):
        if isinstance(node, ast.FunctionDef) and node.name in names:
            handed.add(node)
    return handed


def _reaches(body: list[ast.stmt], skip: set[ast.AST], blocking: set[str]) -> list[str]:
    """Where these statements (outside ``skip``) call or read something in ``blocking``."""
    found: list[str] = []

    def visit(node: ast.AST) -> None:
        if node in skip:
            return
        if isinstance(node, ast.Call) and _name(node.func) in blocking:
            found.append(f"line {node.lineno}: {_name(node.func)}(")
        if isinstance(node, ast.Attribute) and node.attr in BLOCKING_ATTRIBUTES:
            found.append(f"line {node.lineno}: .{node.attr}")
        for child in ast.iter_child_nodes(node):
            visit(child)

    for statement in body:
        visit(statement)
    return found


def blocking_in_coroutines(sources: dict[str, str]) -> dict[str, list[str]]:
    """Per ``async def`` of these modules (by name: source): where it reaches disk or SQLite on
    the event loop, keyed ``module:function``.

    A plain function of any of the modules that reaches them (directly or through another)
    counts as blocking too, so calling it from a coroutine is found as well.
    """
    trees = {name: ast.parse(source) for name, source in sources.items()}
    plain = [n for tree in trees.values() for n in tree.body if isinstance(n, ast.FunctionDef)]
    blocking = set(BLOCKING_CALLS)
    changed = True
    while changed:  # plain functions that reach a blocking call, until nothing is added
        changed = False
        for function in plain:
            if function.name not in blocking and _reaches(function.body, set(), blocking):
                blocking.add(function.name)
                changed = True
    return {
        f"{name}:{node.name}": _reaches(node.body, _handed_to_threads(node), blocking)
        for name, tree in trees.items()
        for node in ast.walk(tree)
        if isinstance(node, ast.AsyncFunctionDef)
    }


def test_route_coroutines_reach_disk_and_sqlite_only_through_the_thread_pool() -> None:
    modules = {p.name: p.read_text(encoding="utf-8") for p in sorted(ROUTES.glob("*.py"))}
    assert set(modules) >= {"monitoring.py", "observability.py", "prediction.py", "health.py"}
    found = blocking_in_coroutines(modules)
    assert len(found) >= 10  # every route coroutine was read
    assert {where: lines for where, lines in found.items() if lines} == {}


def test_the_static_check_finds_blocking_work_in_a_coroutine() -> None:
    """The check can fail: each way of reaching the disk from a coroutine is found."""
    source = """
from starlette.concurrency import run_in_threadpool

def _rows(history, limit):
    return history.runs(limit)

async def direct(workspace):
    return workspace.history.latest_drift()

async def through_a_helper(workspace):
    return _rows(workspace.history, 10)

async def through_another_module(settings):
    return await run_in_threadpool(history_of(settings).latest_drift)

async def reads_the_dataset(workspace):
    return workspace.dataset.rows

async def a_local_function_called_here(settings):
    def read():
        return History(settings.history_db).runs()
    return read()

async def fine(workspace):
    def read():
        return _rows(workspace.history, 5)
    rows = await run_in_threadpool(read)
    latest = await run_in_threadpool(workspace.history.latest_drift)
    return await run_in_threadpool(lambda: (rows, latest, workspace.dataset.rows))
"""
    elsewhere = "def history_of(settings):\n    return History(settings.history_db)\n"
    found = blocking_in_coroutines({"routes.py": source, "other.py": elsewhere})
    assert found["routes.py:fine"] == []
    for name in (
        "direct",
        "through_a_helper",
        "through_another_module",
        "reads_the_dataset",
        "a_local_function_called_here",
    ):
        assert found[f"routes.py:{name}"], name
