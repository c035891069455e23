"""The HTTP protocol of ``beryl serve``: uvicorn's httptools protocol, with limits per connection.

``LimitedHttpProtocol`` enforces the ``api`` section's limits per worker:

- ``max_header_bytes``: the request line and headers, counted in ``data_received`` from the first
  byte of a request until httptools reports the headers complete. A request over it is answered
  ``431 Request Header Fields Too Large`` or, when the request line alone does not fit, ``414 URI
  Too Long``; both close the connection.
- ``header_timeout_s``: from the connection's start, or from the end of the previous answer on a
  keep-alive connection, until the headers are complete. Past it the connection is closed, after a
  ``408`` if part of a request had come.
- ``body_timeout_s``: from the end of the headers until the end of the body. Past it the client
  gets a ``408`` (if no answer had started) and the connection is closed; the app, if it is
  waiting in ``receive()``, gets ``http.disconnect`` as when a client leaves.
- ``keepalive_timeout_s``: uvicorn's own keep-alive timer (``timeout_keep_alive``), set to it.
- ``max_connections``: a connection accepted while that many are open is answered ``503`` with
  ``Retry-After`` at once, before its request is read, and closed; it never waits in line.

On shutdown (SIGTERM) an idle connection is closed at once; a request under way, even one whose
headers are still arriving, is answered with ``Connection: close``. A connection still open
half a second before ``shutdown_grace_s`` ends is closed without an answer: uvicorn would
otherwise cancel the app when the grace period ends and answer ``500``.

Every error answer has the JSON body every Beryl error has: ``{"error": ..., "detail": ...}``.

uvicorn's own ``limit_concurrency`` is not used for ``max_connections``: it looks only once a
request's headers are complete, so connections that never send them (the ones a client opens to
hold a worker) are never counted against it, and it answers a plain-text 503 to requests on
connections already accepted. Counting in ``connection_made`` refuses the connection itself.

The per-request cost is kept to integer operations (about 0.1 µs with the two calls into
uvicorn's own callbacks): ``data_received`` subtracts each read from the room left for headers
(one subtraction, one comparison) and ``on_message_complete`` resets it; only a read that goes
past it looks closer (body or headers?). A pipelined request that begins in the read that ends
the one before it is counted from the next read on. The timeouts take no timer per request: one
sweep per worker, every half second (or a quarter of the shortest timeout), notes when each
connection entered its current stage (waiting for headers, for the body) and ends those that
stayed in it too long. A deadline is thus met between its value and two sweep intervals later; a
timer per request would cost about 2.5 µs (a ``call_later`` and its ``cancel`` on uvloop), some
7 % of a one-record answer.

A connection that ends with an answer is not closed under it: the answer is written, the write
side shut, and what the client still sends is read and dropped for up to ``LINGER_S`` (closing a
socket with unread data resets it, and a reset can destroy an answer the client has not read).
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import weakref
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol
from uvicorn.server import ServerState

from beryl.config import ApiSettings

LINGER_S = 2.0  # how long a connection closed with an answer still reads what the client sends
SWEEP_S = 0.5  # the longest interval between two looks at each connection's deadline
LOG_EVERY_S = 10.0  # connections cut by a limit are logged as one line per this interval
ABANDON_EARLY_S = 0.5  # how long before the end of the grace period open connections are closed

# Room for headers while a body or nothing is being read: never runs out.
_UNLIMITED = 1 << 62
# " HTTP/1.1\r\n" and the space after the method: what a request line holds besides its target.
_REQUEST_LINE_FRAME = 12

_HEADERS, _BODY, _APP = 0, 1, 2  # the stage a connection is in, as the sweep sees it

logger = logging.getLogger("uvicorn.error")


@dataclass(frozen=True)
class HttpLimits:
    """The limits the protocol enforces on each connection (from ``ApiSettings``)."""

    max_header_bytes: int
    header_timeout_s: float
    body_timeout_s: float
    keepalive_timeout_s: float
    max_connections: int
    shutdown_grace_s: float

    @classmethod
    def from_api(cls, api: ApiSettings) -> HttpLimits:
        return cls(
            max_header_bytes=api.max_header_bytes,
            header_timeout_s=api.header_timeout_s,
            body_timeout_s=api.body_timeout_s,
            keepalive_timeout_s=api.keepalive_timeout_s,
            max_connections=api.max_connections,
            shutdown_grace_s=api.shutdown_grace_s,
        )

    @property
    def sweep_interval_s(self) -> float:
        return min(SWEEP_S, self.header_timeout_s / 4, self.body_timeout_s / 4)


class LimitedConfig(uvicorn.Config):
    """uvicorn's ``Config`` serving with ``LimitedHttpProtocol`` under ``limits``.

    The limits travel with the config: uvicorn pickles it whole into each spawned worker.
    """

    def __init__(
        self, app: str | Callable[..., Any], *, limits: HttpLimits, **options: Any
    ) -> None:
        super().__init__(
            app,
            http=LimitedHttpProtocol,
            # Typed as whole seconds, used as a delay for ``call_later``: a float works.
            timeout_keep_alive=limits.keepalive_timeout_s,  # type: ignore[arg-type]
            # Whole seconds: rounded up, so that the protocol's own end of it comes first.
            timeout_graceful_shutdown=math.ceil(limits.shutdown_grace_s),
            **options,
        )
        self.limits = limits


_DEFAULT_LIMITS = HttpLimits.from_api(ApiSettings())

# uvicorn's plain callbacks, called without ``super()``'s lookup on the per-request path.
_data_received = HttpToolsProtocol.data_received
_on_message_complete = HttpToolsProtocol.on_message_complete


class LimitedHttpProtocol(HttpToolsProtocol):
    """``HttpToolsProtocol`` with the limits of ``HttpLimits`` (see the module's docstring).

    Its limits come from a ``LimitedConfig``; with a plain uvicorn ``Config`` it uses the
    defaults of ``ApiSettings`` (and that config's keep-alive timeout).
    """

    def __init__(
        self,
        config: uvicorn.Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        limits = config.limits if isinstance(config, LimitedConfig) else _DEFAULT_LIMITS
        self.limits = limits
        self._max_header_bytes = limits.max_header_bytes
        self._header_room = limits.max_header_bytes  # bytes left before the headers are too many
        self._draining = False  # the server is shutting down: answer what came, then close
        self._sweeper = _sweeper(server_state, self.loop, limits)
        # The stage the sweep last saw (the request's cycle and what it waits for), and since when.
        self._seen: tuple[object, int] = (None, _HEADERS)
        self._seen_at = 0.0

    # Connection

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        if len(self.connections) >= self.limits.max_connections:
            self._sweeper.count("503, api.max_connections open")
            _write_error(
                transport,
                self.server_state,
                503,
                f"the server has {self.limits.max_connections} connections open, its limit",
                "retry in a moment; raise api.max_connections or run more workers",
                retry_after=1,
            )
            _Lingering(transport, self.loop)
            return
        super().connection_made(transport)
        self._seen_at = self.loop.time()
        self._sweeper.start()

    def shutdown(self) -> None:
        """Graceful shutdown: close an idle connection; let a request under way be answered
        (with ``Connection: close``), including one whose headers have only partly arrived.

        The sweep calls it again for as long as the connection stays open, and closes it once
        idle; every answer from now on says ``Connection: close`` (``_Sweeper.drain``).
        """
        self._draining = True
        self._sweeper.drain()
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            cycle.keep_alive = False
        elif not self._request_begun():
            self.transport.close()

    # Per request: keep these to a few integer operations.

    def data_received(self, data: bytes | memoryview) -> None:
        room = self._header_room - len(data)
        self._header_room = room
        if room < 0:
            self._past_header_room(data)
            return
        _data_received(self, data)  # type: ignore[arg-type]

    def on_message_complete(self) -> None:
        self._header_room = self._max_header_bytes
        _on_message_complete(self)

    # Limits

    def _request_begun(self) -> bool:
        """Part of a request has come whose headers are not complete yet."""
        scope = self.scope  # a new one from each request's first byte on
        return scope is not None and (self.cycle is None or self.cycle.scope is not scope)

    def _past_header_room(self, data: bytes | memoryview) -> None:
        """A read that goes past the room left since the last request ended: feed the part that
        fits; if the request's headers are still not complete, they are over the limit.

        The room counts a body too (so that no callback per request has to stop the count when
        the headers end): a read past it in the body sets it aside until the request ends.
        """
        allowed = self._header_room + len(data)  # the room before this read
        self._header_room = 0
        view = memoryview(data)
        if allowed:
            _data_received(self, view[:allowed])  # type: ignore[arg-type]
            if self.transport.is_closing() or self not in self.connections:
                return  # answered 400, upgraded to a WebSocket, or gone
        if self._header_room == 0:  # no request ended in what fitted: room is counted anew
            if self.cycle is None or self.cycle.scope is not self.scope:
                self._headers_too_large()
                return
            self._header_room = _UNLIMITED  # in the body, until on_message_complete
        if allowed < len(data):
            self.data_received(view[allowed:])

    def _headers_too_large(self) -> None:
        limit = self._max_header_bytes
        target: bytes = getattr(self, "url", b"")  # uvicorn sets it when a request begins
        method = self.parser.get_method()
        if len(method) + len(target) + _REQUEST_LINE_FRAME > limit:
            self._sweeper.count("414, request line over api.max_header_bytes")
            status, error = 414, f"the request line is longer than {limit} bytes"
            detail = "send a shorter URL (parameters go in the body), or raise api.max_header_bytes"
        else:
            self._sweeper.count("431, headers over api.max_header_bytes")
            status, error = 431, f"the request line and headers are larger than {limit} bytes"
            detail = "send fewer or shorter headers, or raise api.max_header_bytes"
        _write_error(self.transport, self.server_state, status, error, detail)
        self._leave()

    def _check_deadline(self, now: float) -> None:
        """Called by the sweep: end the connection if it stayed too long in its stage."""
        if self.transport.is_closing():
            return  # closed, connection_lost to come
        if self._draining:
            self.shutdown()
            if self.transport.is_closing():
                return
        cycle = self.cycle
        if cycle is None or cycle.response_complete:
            stage = _HEADERS
        elif cycle.more_body:
            stage = _BODY
        else:
            stage = _APP
        seen = (cycle, stage)
        if seen[0] is not self._seen[0] or stage != self._seen[1]:
            self._seen, self._seen_at = seen, now
            return
        waited = now - self._seen_at
        if stage == _HEADERS and waited >= self.limits.header_timeout_s:
            self._header_timeout()
        elif stage == _BODY and waited >= self.limits.body_timeout_s:
            self._body_timeout()

    def _header_timeout(self) -> None:
        if not self._request_begun():  # nothing of a request came: just close
            self._sweeper.count("closed, no request within api.header_timeout_s")
            self.transport.close()
            return
        self._sweeper.count("408, headers not complete within api.header_timeout_s")
        _write_error(
            self.transport,
            self.server_state,
            408,
            f"the request's headers did not arrive within {self.limits.header_timeout_s:g} s",
            "send the whole request line and headers at once, or raise api.header_timeout_s",
        )
        self._leave()

    def _body_timeout(self) -> None:
        self._sweeper.count("408, body not complete within api.body_timeout_s")
        if not self.cycle.response_started:
            _write_error(
                self.transport,
                self.server_state,
                408,
                f"the request's body did not arrive within {self.limits.body_timeout_s:g} s",
                "send the body as fast as its Content-Length says, or raise api.body_timeout_s",
            )
        self._leave()

    def _abandon(self) -> None:
        """The grace period ends with this connection still open: close it, the app's request
        marked disconnected, rather than let uvicorn cancel the app and answer ``500``."""
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            self._sweeper.count("closed, request still running at the end of api.shutdown_grace_s")
            cycle.disconnected = True
            cycle.message_event.set()
        self.transport.close()

    def _leave(self) -> None:
        """Hand the connection to a ``_Lingering`` closer, as uvicorn's ``connection_lost``
        would leave it: the app, if it still runs, sees ``http.disconnect`` and its sends go
        nowhere."""
        self.connections.discard(self)
        self._unset_keepalive_if_required()
        self.pipeline.clear()
        cycle = self.cycle
        if cycle is not None:
            if not cycle.response_complete:
                cycle.disconnected = True
            cycle.message_event.set()
        self.flow.resume_writing()
        _Lingering(self.transport, self.loop)
        self.parser = None  # type: ignore[assignment]


class _Lingering(asyncio.Protocol):
    """What is left of a connection after its last answer: the answer flushed, the write side
    shut, anything the client still sends read and dropped until it closes or ``LINGER_S``."""

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self.transport = transport
        transport.set_protocol(self)
        if transport.can_write_eof():
            transport.write_eof()
        if not transport.is_reading():
            transport.resume_reading()
        self._timer = loop.call_later(LINGER_S, transport.close)

    def data_received(self, data: bytes) -> None:
        pass

    def eof_received(self) -> bool:
        return False  # the transport closes itself

    def connection_lost(self, exc: Exception | None) -> None:
        self._timer.cancel()


def _write_error(
    transport: asyncio.Transport,
    state: ServerState,
    status: int,
    error: str,
    detail: str,
    *,
    retry_after: int | None = None,
) -> None:
    """Write a complete ``Connection: close`` answer with Beryl's JSON error body."""
    body = json.dumps({"error": error, "detail": detail}).encode()
    head = [STATUS_LINE[status]]
    for name, value in state.default_headers:
        head += [name, b": ", value, b"\r\n"]
    head += [
        b"content-type: application/json\r\n",
        b"content-length: %d\r\n" % len(body),
        b"connection: close\r\n",
    ]
    if retry_after is not None:
        head.append(b"retry-after: %d\r\n" % retry_after)
    head += [b"\r\n", body]
    transport.write(b"".join(head))


class _Sweeper:
    """One per server: every ``sweep_interval_s`` while connections are open, ends those past a
    deadline, and logs a summary of the connections a limit ended."""

    def __init__(
        self, state: ServerState, loop: asyncio.AbstractEventLoop, limits: HttpLimits
    ) -> None:
        self.state = state
        self.connections = state.connections
        self.draining = False
        self.loop = loop
        self.interval = limits.sweep_interval_s
        self.grace_s = limits.shutdown_grace_s
        self.ended: Counter[str] = Counter()
        self.logged_at = loop.time()
        self._handle: asyncio.TimerHandle | None = None

    def start(self) -> None:
        if self._handle is None:
            self._handle = self.loop.call_later(self.interval, self._sweep)

    def drain(self) -> None:
        """The server shuts down: from now on every answer says ``Connection: close``, and
        connections still open ``ABANDON_EARLY_S`` before the grace period ends are closed.

        ``Connection: close`` goes through uvicorn's default headers, which each new request's
        cycle takes (and which its clock no longer rewrites once the server shuts down): no
        check per request.
        """
        if not self.draining:
            self.draining = True
            # uvicorn cancels the app a little after the grace period (it waits 0.1 s first).
            ends = self.loop.time() + self.grace_s - min(ABANDON_EARLY_S, self.grace_s / 2)
            self.loop.call_at(ends, self._abandon_all)
            self.state.default_headers = [*self.state.default_headers, (b"connection", b"close")]

    def _abandon_all(self) -> None:
        for connection in list(self.connections):
            if isinstance(connection, LimitedHttpProtocol):
                connection._abandon()

    def count(self, reason: str) -> None:
        self.ended[reason] += 1

    def _sweep(self) -> None:
        self._handle = None
        if self.connections:
            self.start()  # first: a check that fails (the loop logs it) stops no later sweep
        now = self.loop.time()
        for connection in list(self.connections):  # a copy: ending one changes the set
            if isinstance(connection, LimitedHttpProtocol):
                connection._check_deadline(now)
        if self.ended and (now - self.logged_at >= LOG_EVERY_S or not self.connections):
            summary = "; ".join(f"{reason} ({n})" for reason, n in sorted(self.ended.items()))
            logger.warning(
                "Connections ended by a limit in the last %.0f s: %s", now - self.logged_at, summary
            )
            self.ended.clear()
            self.logged_at = now


_SWEEPERS: weakref.WeakKeyDictionary[ServerState, _Sweeper] = weakref.WeakKeyDictionary()


def _sweeper(state: ServerState, loop: asyncio.AbstractEventLoop, limits: HttpLimits) -> _Sweeper:
    sweeper = _SWEEPERS.get(state)
    if sweeper is None:
        sweeper = _SWEEPERS[state] = _Sweeper(state, loop, limits)
    return sweeper
