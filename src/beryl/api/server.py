"""``beryl serve``: uvicorn in one process or several, each answering with ``TCP_NODELAY`` set.

Each worker builds its app with ``app_from_environment``: the API from ``create_app`` behind the
prediction fast path, the production model loaded and frozen out of the collector's reach.

With several workers uvicorn binds the shared listening socket itself and leaves its ``proto``
at 0 (Kludex/uvicorn#3149). Accepted connections inherit that, asyncio then skips
``TCP_NODELAY``, and each keep-alive answer (headers and body written apart) waits about 40 ms
for the client's delayed ACK. Beryl re-opens that socket as TCP before handing it to the workers.
"""

from __future__ import annotations

import contextlib
import gc
import os
import shutil
import socket
import tempfile
from pathlib import Path

from beryl import config as config_module
from beryl.api.app import create_app
from beryl.api.fastpath import PredictionFastPath
from beryl.config import CONFIG_ENV, Settings
from beryl.errors import BerylError

APP_FACTORY = "beryl.api.server:app_from_environment"


def serve(
    settings: Settings, *, host: str | None, port: int | None, workers: int, access_log: bool
) -> None:
    """Serve the workspace's API until interrupted (each worker loads the config itself)."""
    import uvicorn

    os.environ[CONFIG_ENV] = str(settings.config_path.resolve())
    host, port = host or settings.api.host, port or settings.api.port
    if workers <= 1:
        uvicorn.run(
            APP_FACTORY, factory=True, host=host, port=port, log_level="info", access_log=access_log
        )
        return
    from uvicorn.supervisors import Multiprocess

    from beryl.api.metrics import MULTIPROC_ENV

    # Each worker writes its metrics here; a scrape adds them up.
    metrics_dir = Path(tempfile.mkdtemp(prefix="beryl-metrics-"))
    os.environ[MULTIPROC_ENV] = str(metrics_dir)
    try:
        config = uvicorn.Config(
            APP_FACTORY,
            factory=True,
            host=host,
            port=port,
            workers=workers,
            log_level="info",
            access_log=access_log,
        )
        Multiprocess(config, sockets=[tcp_listener(config.bind_socket())]).run()
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)


def tcp_listener(sock: socket.socket) -> socket.socket:
    """``sock`` (bound, not yet listening) as an ``IPPROTO_TCP`` socket, so that the
    connections it accepts carry that protocol and asyncio sets ``TCP_NODELAY`` on them.

    The same file descriptor is kept (and stays inheritable); a socket that already says TCP,
    or is not an internet socket, is returned as it is.
    """
    if sock.family not in (socket.AF_INET, socket.AF_INET6) or sock.proto == socket.IPPROTO_TCP:
        return sock
    tcp = socket.socket(sock.family, sock.type, socket.IPPROTO_TCP, fileno=sock.detach())
    tcp.set_inheritable(True)
    return tcp


def app_from_environment() -> PredictionFastPath:
    """Factory for each worker of ``beryl serve``: the config comes from ``BERYL_CONFIG``.

    The production model is loaded before the first request, and everything loaded so far is
    frozen out of the garbage collector's reach: a full collection over pandas, scikit-learn and
    SciPy objects otherwise pauses a worker for tens of milliseconds under load.
    """
    app = create_app(config_module.load(config_module.resolve_path(None, dict(os.environ))))
    with contextlib.suppress(BerylError):
        app.state.holder.get()  # no model yet: it is loaded when one is promoted
    gc.collect()
    gc.freeze()
    return PredictionFastPath(app)
