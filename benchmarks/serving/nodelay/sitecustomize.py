"""Benchmark-only work-around for uvicorn's multi-worker TCP_NODELAY bug (Kludex/uvicorn#3149).

With ``--workers N`` uvicorn binds the listening socket itself (``Config.bind_socket``) with
``proto`` left at 0. Accepted sockets inherit it, and asyncio only sets ``TCP_NODELAY`` when
``proto == IPPROTO_TCP``, so Nagle's algorithm stays on: an answer written as two segments
(headers, then body) waits for the client's delayed ACK, about 40 ms on Linux, on every
keep-alive request. Every peer here runs uvicorn with 2 workers (Beryl, MLflow, the plain
FastAPI endpoint and the bare ASGI one); on asyncio's event loop all four would sit on the same
40 ms floor and the comparison would measure a kernel timer, not the servers. uvloop, which
every peer runs now, sets ``TCP_NODELAY`` on its TCP connections itself, so there this changes
nothing measurable (``run.py --as-deployed`` shows it); it stays so that a peer on asyncio's loop
is still measured fairly.

``run.py`` puts this folder on ``PYTHONPATH`` of every peer alike (unless ``--as-deployed``).
The listening socket is re-wrapped from its file descriptor, which lets Python read the real
protocol (6) from the kernel, the same effect as the upstream fix. Nothing else changes.
"""

from __future__ import annotations

import socket
from typing import Any


def _patch() -> None:
    try:
        from uvicorn.config import Config
    except ImportError:
        return
    original = Config.bind_socket
    if getattr(original, "bench_nodelay", False):
        return

    def bind_socket(self: Any) -> socket.socket:
        sock = original(self)
        if sock.family in (socket.AF_INET, socket.AF_INET6) and sock.proto == 0:
            sock = socket.socket(fileno=sock.detach())  # proto auto-detected: IPPROTO_TCP
            sock.set_inheritable(True)
        return sock

    bind_socket.bench_nodelay = True  # type: ignore[attr-defined]
    Config.bind_socket = bind_socket  # type: ignore[method-assign]


_patch()
