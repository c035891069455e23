"""The app factory: ``create_app(settings)`` wires routers, errors, limits and authentication."""

from __future__ import annotations

import copy
import hmac
import threading
from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from beryl.api.holder import ModelHolder
from beryl.config import Settings
from beryl.errors import (
    BerylError,
    DataError,
    EmptyDatasetError,
    IntegrityError,
    ModelNotFoundError,
)
from beryl.registry import Registry

OPEN_PATHS = frozenset({"/health", "/ready"})


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
    """HTTP status of a domain error: the caller's fault is 4xx; a missing model is 503."""
    if isinstance(exc, ModelNotFoundError | EmptyDatasetError | IntegrityError):
        return 503
    if isinstance(exc, DataError):
        return 422
    return 400


def request_headers(scope: Scope) -> dict[str, str]:
    """A request's headers by lower-case name (the last of a repeated header wins)."""
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}


def authorised(headers: Mapping[str, str], token: str) -> bool:
    """``Authorization: Bearer <token>``, or else ``X-API-Token: <token>``, names ``token``."""
    supplied = headers.get("authorization", "")
    if supplied.lower().startswith("bearer "):
        supplied = supplied[7:].strip()
    else:
        supplied = headers.get("x-api-token", "")
    return hmac.compare_digest(supplied.encode(), token.encode())


def declares_too_large(headers: Mapping[str, str], max_body_bytes: int) -> bool:
    """The request's Content-Length is over the limit (the body is then never read)."""
    declared = headers.get("content-length")
    return declared is not None and declared.isdigit() and int(declared) > max_body_bytes


class LimitsMiddleware:
    """Refuse bodies over ``max_body_bytes`` (413) and, with a token set, unauthenticated calls."""

    def __init__(self, app: ASGIApp, *, max_body_bytes: int, token: str | None) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.token = token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = request_headers(scope)
        if self.token and scope["path"] not in OPEN_PATHS and not authorised(headers, self.token):
            response = _error(
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
    from beryl.api.metrics import ApiMetrics, MetricsMiddleware
    from beryl.api.routes import health, monitoring, observability, prediction

    app = FastAPI(
        title="Beryl",
        summary="Predict and monitor customer attrition with the workspace's production model.",
        version=_package_version(),
    )
    app.state.settings = settings
    app.state.holder = ModelHolder(Registry(settings.model_folder))
    app.state.outdated_lock = threading.Lock()

    app.include_router(prediction.router)
    app.include_router(monitoring.router)
    app.include_router(observability.router)
    app.include_router(health.router)
    app.state.metrics = ApiMetrics(settings)

    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return _error(exc.status, exc.error, exc.detail)

    @app.exception_handler(BerylError)
    async def _beryl_error(_: Request, exc: BerylError) -> JSONResponse:
        return _error(status_for(exc), exc.message, exc.hint)

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
