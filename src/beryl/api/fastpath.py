"""The lean path for JSON ``POST /prediction``: answered in front of FastAPI, the rest handed on.

Scoring a record with the compiled model takes microseconds; FastAPI's middleware stack, routing
and dependency resolution cost several times the whole answer. ``PredictionFastPath`` wraps the
app ``create_app`` builds and answers the common request itself: ``POST /prediction`` with a
JSON ``{"records": [...]}`` body that validates, with or without ``"explain": k``. It applies the
app's token check and body limit, validates and scores with the route's own functions
(``requested_reasons``, ``rows_from_records`` and ``scored``, which predicts with
``beryl.model.predict.predict`` and explains with ``explain``), and sends the route's answer
bytes, headers and metrics. Every other request, and any it has a doubt about (a query string,
such as ``?explain=k``; another content type, ``file_location``, the original system's bare list
of records, a body that does not parse or validate, no model yet, overridden dependencies), goes
to the app unchanged, the body it already read replayed: every error answer still comes from the
route and the app's handlers.
"""

from __future__ import annotations

import time
from collections import deque

from fastapi import FastAPI
from starlette.types import Message, Receive, Scope, Send

from beryl.api import jsoncodec
from beryl.api.app import ApiError, HostCheck, authorised, declares_too_large, request_headers
from beryl.api.holder import LoadedModel, ModelHolder
from beryl.api.metrics import STARTED, ApiMetrics
from beryl.api.routes.prediction import (
    JSON_TYPES,
    RecordPlan,
    answer_headers,
    json_request,
    media_type,
    record_plan,
    requested_reasons,
    rows_from_records,
    scored,
)
from beryl.errors import BerylError

PATH = "/prediction"


class PredictionFastPath:
    """ASGI app: JSON records to ``POST /prediction`` answered directly, all else to ``app``."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app
        settings = app.state.settings
        self.holder: ModelHolder = app.state.holder
        self.metrics: ApiMetrics = app.state.metrics
        self.max_body_bytes: int = settings.api.max_body_bytes
        self.max_records: int = settings.api.max_records
        self.token: bytes | None = (
            settings.api_token.encode("ascii") if settings.api_token else None
        )
        self.hosts: HostCheck = app.state.hosts
        self._plan: tuple[LoadedModel, RecordPlan] | None = None  # for one model snapshot

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["path"] != PATH
            or scope["method"] != "POST"
            or scope.get("root_path")
            or self.app.root_path
            or self.app.dependency_overrides
        ):
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        read: list[Message] = []
        try:
            response = await self._answer(scope, receive, read)
        except BaseException:  # counted as the app counts a request that ended in an error
            self.metrics.observe_request(PATH, "POST", 500, time.perf_counter() - started)
            raise
        if response is None:
            scope[STARTED] = started  # the app's metrics time the request from here
            await self.app(scope, _replay(read, receive) if read else receive, send)
            return
        headers = answer_headers(response)
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": response})
        self.metrics.observe_request(PATH, "POST", 200, time.perf_counter() - started)

    async def _answer(self, scope: Scope, receive: Receive, read: list[Message]) -> bytes | None:
        """The body of the route's answer to a valid JSON records request (status 200, the
        route's headers); ``None``: the app must answer."""
        if scope.get("query_string"):
            return None  # ``?explain=k`` (or anything else in the query): the route reads it
        headers = request_headers(scope)
        if len(headers) != len(scope["headers"]):
            return None  # a repeated header: the app and the route each decide which counts
        if not self.hosts(headers.get("host")):
            return None
        if self.token and not authorised(headers, self.token):
            return None  # the app's 401; a browser's session cookie never opens /prediction
        if declares_too_large(headers, self.max_body_bytes):
            return None
        if media_type(headers.get("content-type", "")) not in JSON_TYPES:
            return None
        body = await self._body(receive, read)
        if body is None:
            return None
        loaded = self.holder.peek()
        if loaded is None:
            return None  # no model yet, or a promotion to load: the route loads it off the loop
        try:
            payload = json_request(body, loaded.schema, bare_list=False)  # a list: the route
            if "records" not in payload:
                return None  # file_location: a file to read, the route's job
            explain = payload.get("explain")
            reasons = None if explain is None else requested_reasons(explain, [], loaded)
            rows = rows_from_records(payload["records"], self._plan_for(loaded), self.max_records)
            return jsoncodec.dumps(await scored(loaded, rows, self.metrics, reasons))
        except (ApiError, BerylError):
            return None

    async def _body(self, receive: Receive, read: list[Message]) -> bytes | None:
        """The whole body (every message kept in ``read``); ``None`` past the limit or when the
        client left, which the app then answers as it always does."""
        size = 0
        while True:
            message = await receive()
            read.append(message)
            if message["type"] != "http.request":
                return None
            size += len(message.get("body", b""))
            if size > self.max_body_bytes:
                return None
            if not message.get("more_body", False):
                break
        if len(read) == 1:
            body: bytes = read[0].get("body", b"")
            return body
        return b"".join(m.get("body", b"") for m in read)

    def _plan_for(self, loaded: LoadedModel) -> RecordPlan:
        """The record plan of this model snapshot, made once: a promotion brings a new one."""
        cached = self._plan
        if cached is None or cached[0] is not loaded:
            cached = self._plan = (loaded, record_plan(loaded.schema))
        return cached[1]


def _replay(messages: list[Message], receive: Receive) -> Receive:
    """``receive`` that first gives back the messages already read, then reads on."""
    pending = deque(messages)

    async def replayed() -> Message:
        if pending:
            return pending.popleft()
        return await receive()

    return replayed
