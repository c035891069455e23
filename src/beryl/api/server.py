"""``beryl serve``: uvicorn in one process or several, each answering with ``TCP_NODELAY`` set.

Each worker builds its app with ``app_from_environment``: the API from ``create_app`` behind the
prediction fast path, the production model loaded and frozen out of the collector's reach. Each
serves HTTP with ``LimitedHttpProtocol`` (``beryl.api.protocol``), under the ``api`` section's
limits on header size, slow clients, idle connections and open connections. On SIGTERM a worker
stops accepting, answers the requests it has (for up to ``api.shutdown_grace_s``), then exits.

With several workers uvicorn binds the shared listening socket itself and leaves its ``proto``
at 0 (Kludex/uvicorn#3149). Accepted connections inherit that, asyncio then skips
``TCP_NODELAY``, and each keep-alive answer (headers and body written apart) waits about 40 ms
for the client's delayed ACK. Beryl re-opens that socket as TCP before handing it to the workers.
"""

from __future__ import annotations

import contextlib
import errno
import gc
import logging
import os
import shutil
import socket
import tempfile
from pathlib import Path
from typing import Any

from beryl import config as config_module
from beryl.api.app import allowed_hosts, create_app
from beryl.api.fastpath import PredictionFastPath
from beryl.config import CONFIG_ENV, Settings
from beryl.errors import BerylError, ListenError

APP_FACTORY = "beryl.api.server:app_from_environment"
HOST_ENV = "BERYL_SERVE_HOST"  # the address ``serve`` listens on, for each worker's Host check


def serve(
    settings: Settings, *, host: str | None, port: int | None, workers: int, access_log: bool
) -> None:
    """Serve the workspace's API until interrupted (each worker loads the config itself)."""
    import uvicorn
    from uvicorn.config import STARTUP_FAILURE

    from beryl.api.protocol import HttpLimits, LimitedConfig

    os.environ[CONFIG_ENV] = str(settings.config_path.resolve())
    host, port = host or settings.api.host, port or settings.api.port
    allowed_hosts(listening_on(settings, host))  # refuse a listen address without its names now
    os.environ[HOST_ENV] = host
    options: dict[str, Any] = {
        "factory": True,
        "host": host,
        "port": port,
        "log_level": "info",
        "access_log": access_log,
    }
    check_listen(host, port)
    limits = HttpLimits.from_api(settings.api)
    if workers <= 1:
        config = LimitedConfig(APP_FACTORY, limits=limits, **options)
        raise_open_file_limit(settings.api.max_connections)  # logged the way uvicorn logs
        server = uvicorn.Server(config)
        with contextlib.suppress(KeyboardInterrupt):
            server.run()
        if not server.started:
            raise ListenError(
                f"the server did not start on {host}:{port} (uvicorn exit {STARTUP_FAILURE})",
                hint="see the lines above",
            )
        return
    from uvicorn.supervisors import Multiprocess

    from beryl.api.metrics import MULTIPROC_ENV

    # Each worker writes its metrics here; a scrape adds them up.
    metrics_dir = Path(tempfile.mkdtemp(prefix="beryl-metrics-"))
    os.environ[MULTIPROC_ENV] = str(metrics_dir)
    try:
        config = LimitedConfig(APP_FACTORY, limits=limits, workers=workers, **options)
        raise_open_file_limit(settings.api.max_connections)  # the workers inherit it
        Multiprocess(config, sockets=[tcp_listener(config.bind_socket())]).run()
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)


# Descriptors a worker needs besides its connections: the listener, log and model files, the
# history database, connections closing after a refusal, the event loop's own.
_SPARE_DESCRIPTORS = 256


def check_listen(host: str, port: int) -> None:
    """Refuse, in one line, an address this server cannot listen on (a port another process
    holds, a host that is not this machine's) before any worker starts."""
    try:
        with socket.create_server((host, port)):
            pass
    except OSError as exc:
        why = os.strerror(exc.errno) if exc.errno else str(exc)
        hint = (
            "another process listens there: stop it, or choose --port / api.port"
            if exc.errno == errno.EADDRINUSE
            else "choose an address of this machine with --host / api.host"
        )
        raise ListenError(f"cannot listen on {host}:{port}: {why}", hint=hint) from exc


def raise_open_file_limit(max_connections: int) -> int:
    """Raise this process's soft ``RLIMIT_NOFILE`` (inherited by the workers it starts) so that
    ``max_connections`` connections fit, as far as the hard limit allows; the soft limit after.

    A hard limit too low is logged as one warning: connections past it fail to be accepted.
    """
    try:
        import resource
    except ImportError:  # not on Windows, which has no such limit
        return max_connections + _SPARE_DESCRIPTORS
    needed = max_connections + _SPARE_DESCRIPTORS
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        soft = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    if soft != resource.RLIM_INFINITY and soft < needed:
        logging.getLogger("uvicorn.error").warning(
            "The open-file limit is %d, too low for api.max_connections %d (needs %d): raise "
            "the hard limit (ulimit -Hn, LimitNOFILE=) or lower api.max_connections",
            soft,
            max_connections,
            needed,
        )
    return int(soft)


def listening_on(settings: Settings, host: str) -> Settings:
    """The settings as a server listening on ``host`` (``--host`` overrides ``api.host``)."""
    if host == settings.api.host:
        return settings
    return settings.model_copy(update={"api": settings.api.model_copy(update={"host": host})})


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
    settings = config_module.load(config_module.resolve_path(None, dict(os.environ)))
    app = create_app(listening_on(settings, os.environ.get(HOST_ENV) or settings.api.host))
    with contextlib.suppress(BerylError):
        app.state.holder.get()  # no model yet: it is loaded when one is promoted
    gc.collect()
    gc.freeze()
    return PredictionFastPath(app)
