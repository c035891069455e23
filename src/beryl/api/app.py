"""The app factory: ``create_app(settings)`` wires routers, errors, limits and authentication."""

from __future__ import annotations

import copy
import hmac
import ipaddress
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from beryl.api.holder import ModelHolder
from beryl.config import Settings
from beryl.errors import (
    BerylError,
    ConfigError,
    DataError,
    EmptyDatasetError,
    IntegrityError,
    ModelError,
    ModelNotFoundError,
    StateError,
)
from beryl.workspace import Workspace, open_history

if TYPE_CHECKING:
    from beryl.api.routes.login import BrowserLogin

# /login and /logout make their own checks (beryl.api.routes.login).
OPEN_PATHS = frozenset(
    {"/health", "/ready", "/login", "/logout", "/v2/health/live", "/v2/health/ready"}
)
DOCS_ASSETS = "/docs/assets"


class ApiError(Exception):
    """An error answer: status, message and optional detail."""

    def __init__(self, status: int, error: str, detail: Any = None) -> None:
        super().__init__(error)
        self.status = status
        self.error = error
        self.detail = detail


def _error(
    status: int, error: str, detail: Any = None, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    return JSONResponse({"error": error, "detail": detail}, status_code=status, headers=headers)


def status_for(exc: BerylError) -> int:
    """HTTP status of a domain error: 4xx only for the caller's mistakes; a missing model and
    damaged or unavailable workspace state are 503 (server faults the caller cannot fix)."""
    if isinstance(
        exc, ModelNotFoundError | EmptyDatasetError | IntegrityError | StateError | ModelError
    ):
        return 503
    if isinstance(exc, ConfigError):
        return 503  # the server's own configuration
    if isinstance(exc, DataError):
        return 422
    return 503


def request_headers(scope: Scope) -> dict[str, str]:
    """A request's headers by lower-case name (the last of a repeated header wins)."""
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}


def authorised(headers: Mapping[str, str], token: bytes) -> bool:
    """``Authorization: Bearer <token>``, or else ``X-API-Token: <token>``, names ``token``.

    Compared as bytes, exactly as sent (headers are decoded as Latin-1, which maps every byte).
    """
    supplied = headers.get("authorization", "")
    if supplied[:7].lower() == "bearer ":
        supplied = supplied[7:].strip(" \t")
    else:
        supplied = headers.get("x-api-token", "")
    return hmac.compare_digest(supplied.encode("latin-1"), token)


LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
_WILDCARDS = frozenset({"", "0.0.0.0", "::", "*"})  # noqa: S104  (names, not a bind)


def is_loopback(host: str) -> bool:
    name = host.lower().strip("[]").rstrip(".")
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def allowed_hosts(settings: Settings) -> frozenset[str] | None:
    """The ``Host`` names the API answers to; None: any (``api.allowed_hosts: ["*"]``).

    The configured names, or by default the address it listens on; listening on every
    interface needs the names spelled out. The loopback names are always answered: DNS
    rebinding needs a name the attacker controls, and a page cannot be same-origin with
    ``localhost`` or ``127.0.0.1``.
    """
    configured = settings.api.allowed_hosts
    if configured is not None:
        return None if "*" in configured else frozenset(configured) | LOOPBACK_NAMES
    host = settings.api.host.lower().strip("[]")
    if is_loopback(host):
        return LOOPBACK_NAMES | {host}
    if host in _WILDCARDS:
        raise ConfigError(
            f"api.host {settings.api.host!r} listens on every interface, so api.allowed_hosts "
            "must name the host names clients use",
            hint='e.g. "allowed_hosts": ["beryl.example.com", "10.0.0.5"] in config.json, or '
            '["*"] to answer any Host header (DNS rebinding then reaches the API)',
        )
    return frozenset({host}) | LOOPBACK_NAMES


class HostCheck:
    """Whether a ``Host`` header names this server: its name is allowed, whatever the port."""

    def __init__(self, allowed: frozenset[str] | None) -> None:
        self.allowed = allowed
        self._seen: dict[str, bool] = {}  # raw header value -> verdict, bounded below

    def __call__(self, host: str | None) -> bool:
        if self.allowed is None:
            return True
        if host is None:
            return False
        verdict = self._seen.get(host)
        if verdict is None:
            verdict = self._name(host) in self.allowed
            if len(self._seen) < 256:
                self._seen[host] = verdict
        return verdict

    @staticmethod
    def _name(host: str) -> str:
        host = host.strip().lower()
        if host.startswith("["):  # [::1]:8000
            return host[1 : host.find("]")] if "]" in host else host
        name, _, port = host.rpartition(":")
        if name and port.isdigit() and ":" not in name:
            host = name
        return host.rstrip(".")


def refuse_host(host: str | None) -> JSONResponse:
    shown = "no Host header" if host is None else f"Host {host[:100]!r}"
    return _error(
        400,
        f"{shown} is not served here",
        "call the API by a loopback name or by one in api.allowed_hosts (config.json)",
    )


def declares_too_large(headers: Mapping[str, str], max_body_bytes: int) -> bool:
    """The request's Content-Length is over the limit (the body is then never read)."""
    declared = headers.get("content-length")
    return declared is not None and declared.isdigit() and int(declared) > max_body_bytes


class LimitsMiddleware:
    """Refuse other hosts (400), bodies over ``max_body_bytes`` (413) and, with a token set,
    unauthenticated calls (401; a browser opening a page gets ``browser``'s login form, and
    its session cookie stands for the token on the pages only)."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        max_body_bytes: int,
        token: str | None,
        hosts: HostCheck,
        browser: BrowserLogin | None = None,
    ) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.token = token.encode("ascii") if token else None
        self.hosts = hosts
        self.browser = browser

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = request_headers(scope)
        if not self.hosts(headers.get("host")):
            await refuse_host(headers.get("host"))(scope, receive, send)
            return
        if (
            self.token
            and scope["path"] not in OPEN_PATHS
            and not authorised(headers, self.token)
            and not (self.browser and self.browser.admits(scope, headers))
        ):
            page = self.browser.refusal(scope, headers) if self.browser else None
            response = page or _error(
                401, "missing or wrong API token", "send 'Authorization: Bearer <token>'"
            )
            response.headers["WWW-Authenticate"] = "Bearer"
            await response(scope, receive, send)
            return
        if declares_too_large(headers, self.max_body_bytes):
            await self._too_large(scope, receive, send)
            return
        received = 0
        too_large = False

        async def limited_receive() -> Message:
            nonlocal received, too_large
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    too_large = True
                    raise _BodyTooLarge
            return message

        try:
            await self.app(scope, limited_receive, send)
        except _BodyTooLarge:
            await self._too_large(scope, receive, send)

    async def _too_large(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = _error(
            413,
            f"request body is larger than {self.max_body_bytes} bytes",
            "send fewer records per request, or raise api.max_body_bytes",
        )
        await response(scope, receive, send)


class _BodyTooLarge(Exception):
    pass


def create_app(settings: Settings) -> FastAPI:
    """Build the API for one workspace."""
    from fastapi_offline import FastAPIOffline

    from beryl.api.metrics import ApiMetrics, MetricsMiddleware
    from beryl.api.routes import (
        health,
        inference,
        login,
        monitoring,
        observability,
        prediction,
    )
    from beryl.monitoring.diagnostics import OutdatedCache, ProfileCache

    # /docs and /redoc with their scripts and styles served from the package, under
    # /docs/assets: the pages work on a host without internet.
    app = FastAPIOffline(
        title="Beryl",
        summary="Predict and monitor customer attrition with the workspace's production model.",
        version=_package_version(),
        static_url=DOCS_ASSETS,
    )
    app.state.settings = settings
    app.state.hosts = HostCheck(allowed_hosts(settings))
    # The API waits for a history database another process holds at most api.db_timeout_s.
    history = open_history(settings, timeout=settings.api.db_timeout_s)
    app.state.workspace = workspace = Workspace(settings, history=history, follow=True)
    app.state.holder = ModelHolder(workspace.registry, poll_s=settings.api.registry_poll_s)
    app.state.profiles = ProfileCache()
    app.state.outdated = OutdatedCache(settings)

    app.include_router(prediction.router)
    app.include_router(monitoring.router)
    app.include_router(observability.router)
    app.include_router(health.router)
    app.include_router(inference.router)
    app.state.login = None
    if settings.api_token:  # a login form for the pages; without a token they are open
        app.state.login = login.BrowserLogin(settings.api_token)
        app.include_router(login.router)
    app.state.metrics = ApiMetrics(settings)
    app.state.metrics.collector.ready = lambda: _loaded(app.state.holder)

    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return _error(exc.status, exc.error, exc.detail)

    @app.exception_handler(BerylError)
    async def _beryl_error(_: Request, exc: BerylError) -> JSONResponse:
        status = status_for(exc)
        retry = getattr(exc, "retry_after_s", None)
        headers = {"Retry-After": str(retry)} if retry is not None else None
        return _error(status, exc.message, exc.hint, headers=headers)

    @app.exception_handler(Exception)
    async def _bug(_: Request, exc: Exception) -> JSONResponse:
        # Starlette logs the traceback after this answer; the caller gets JSON, not text.
        return _error(500, "internal error", "a fault in Beryl: the server log has the details")

    @app.exception_handler(OSError)
    async def _os_error(_: Request, exc: OSError) -> JSONResponse:
        # The disk or the file system failed the server (full, read-only, permissions).
        where = f" ({exc.filename})" if exc.filename else ""
        return _error(503, f"the server cannot use its workspace: {exc.strerror}{where}")

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        detail = [
            {"field": ".".join(str(p) for p in e.get("loc", ())), "problem": e.get("msg")}
            for e in exc.errors()
        ]
        return _error(422, "invalid request", detail)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return _error(exc.status_code, str(exc.detail), headers=exc.headers)  # 405: Allow

    app.add_middleware(
        LimitsMiddleware,
        max_body_bytes=settings.api.max_body_bytes,
        token=settings.api_token,
        hosts=app.state.hosts,
        browser=app.state.login,
    )
    app.add_middleware(MetricsMiddleware, metrics=app.state.metrics)  # outermost: sees 401/413
    # FastAPI's documented way to extend the document: replace the app's ``openapi`` method.
    app.openapi = lambda: _openapi(app, settings)  # type: ignore[method-assign]
    return app


def _openapi(app: FastAPI, settings: Settings) -> dict[str, Any]:
    """FastAPI's document plus what the workspace knows: model features, limits and token."""
    from beryl.api.schemas import ErrorResponse, prediction_request_schema

    document = copy.deepcopy(FastAPI.openapi(app))  # FastAPI caches the part the routes give
    holder: ModelHolder = app.state.holder
    try:
        schema = holder.get().schema
    except BerylError:
        schema = None  # no model yet: records are documented as plain objects
    components = document.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    schemas["PredictionRequest"] = prediction_request_schema(schema, settings.api.max_records)
    schemas.setdefault("ErrorResponse", ErrorResponse.model_json_schema())
    error = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorResponse"}}}
    too_large = f"The body is larger than {settings.api.max_body_bytes} bytes"
    if settings.api_token:
        components["securitySchemes"] = {
            "bearerToken": {"type": "http", "scheme": "bearer", "description": "api.token"},
            "apiToken": {"type": "apiKey", "in": "header", "name": "X-API-Token"},
        }
    for path, operations in document.get("paths", {}).items():
        for operation in operations.values():
            responses = operation.setdefault("responses", {})
            responses.setdefault("413", {"description": too_large, "content": error})
            if settings.api_token and path not in OPEN_PATHS:
                operation["security"] = [{"bearerToken": []}, {"apiToken": []}]
                responses["401"] = {
                    "description": "Missing or wrong API token",
                    "headers": {"WWW-Authenticate": {"schema": {"type": "string"}}},
                    "content": error,
                }
    return document


def _package_version() -> str:
    from importlib import metadata

    try:
        return metadata.version("beryl")
    except metadata.PackageNotFoundError:
        return "0"


def _loaded(holder: ModelHolder) -> bool:
    """Whether ``/ready`` would answer 200: a verified production model is (or can be) loaded."""
    try:
        holder.get()
    except BerylError:  # no model, or the registry cannot be read
        return False
    return True
