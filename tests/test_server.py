"""``beryl serve --workers N``: the shared listener hands TCP_NODELAY to every connection."""

from __future__ import annotations

import importlib.util
import pickle
import socket
import statistics
import threading
import time
from collections.abc import Iterator
from multiprocessing.reduction import ForkingPickler
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from tests.test_api import make_workspace, serving

from beryl.api.server import tcp_listener

# asyncio only sets TCP_NODELAY on sockets that say IPPROTO_TCP; uvloop is checked too when present.
LOOPS = ["asyncio", *(["uvloop"] if importlib.util.find_spec("uvloop") else [])]


async def _ok(scope: dict[str, Any], receive: Any, send: Any) -> None:
    assert scope["type"] == "http"
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


@pytest.fixture
def worker_server(request: pytest.FixtureRequest) -> Iterator[uvicorn.Server]:
    """What one worker of ``beryl serve --workers 2`` runs: uvicorn on the shared listener."""
    config = uvicorn.Config(
        _ok, host="127.0.0.1", port=0, workers=2, loop=request.param, lifespan="off"
    )
    listener = tcp_listener(config.bind_socket())
    # Sent to a spawned worker the way multiprocessing sends it: family, type and proto kept.
    handed = pickle.loads(ForkingPickler.dumps(listener))
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [handed]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the worker did not start"
        time.sleep(0.02)
    try:
        yield server
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        handed.close()
        listener.close()


@pytest.mark.parametrize("worker_server", LOOPS, indirect=True)
def test_connections_accepted_by_a_worker_have_tcp_nodelay(worker_server: uvicorn.Server) -> None:
    (listener,) = [s for server in worker_server.servers for s in server.sockets]
    host, port = listener.getsockname()[:2]
    with httpx.Client(base_url=f"http://{host}:{port}") as client:
        assert client.get("/").text == "ok"
        (connection,) = worker_server.server_state.connections
        accepted = connection.transport.get_extra_info("socket")  # type: ignore[attr-defined]
        assert accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0


def test_tcp_listener_keeps_the_descriptor_and_leaves_tcp_sockets_alone() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM, 0) as bare:
        bare.bind(("127.0.0.1", 0))
        fd, address = bare.fileno(), bare.getsockname()
        tcp = tcp_listener(bare)
        with tcp:
            assert (tcp.fileno(), tcp.getsockname(), tcp.proto) == (fd, address, socket.IPPROTO_TCP)
            assert tcp.get_inheritable()
            assert tcp_listener(tcp) is tcp


def test_two_worker_server_answers_keep_alive_requests_without_the_delayed_ack(
    tmp_path: Path,
) -> None:
    _, config_path = make_workspace(tmp_path / "ws")
    record = {"lastmonth_activity": 20, "lastyear_activity": 300, "number_of_employees": 5}
    with serving(config_path, "--workers", "2") as url, httpx.Client(base_url=url) as client:
        for _ in range(5):  # warm up: both workers loaded the model
            client.post("/prediction", json={"records": [record]}).raise_for_status()
        took = []
        for _ in range(20):  # one connection: every request after the first reuses it
            started = time.perf_counter()
            client.post("/prediction", json={"records": [record]}).raise_for_status()
            took.append(time.perf_counter() - started)
    # Without TCP_NODELAY each answer waits for the client's delayed ACK: 40 ms on Linux. (This
    # runs the loop `beryl serve` picks; the test above covers asyncio's and uvloop's directly.)
    assert statistics.median(took) < 0.015, [round(t * 1000, 1) for t in took]
