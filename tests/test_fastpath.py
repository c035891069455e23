"""The prediction fast path answers exactly as the FastAPI route does, or hands the request on."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st
from tests.test_api import make_mixed_workspace, make_workspace

from beryl.api.app import create_app
from beryl.api.fastpath import PredictionFastPath
from beryl.config import Settings
from beryl.data.demo import add_batch
from beryl.data.ingestion import ingest
from beryl.errors import BerylError
from beryl.model.deployment import deploy
from beryl.model.training import train

TOKEN = "s3cret"
MAX_BODY_BYTES = 4_000
MAX_RECORDS = 20
NUMERIC = ["lastmonth_activity", "lastyear_activity", "number_of_employees", "margin"]
RECORD = {"lastmonth_activity": 20, "lastyear_activity": 300, "number_of_employees": 5}


@dataclass(frozen=True)
class Request:
    """One HTTP request as ASGI messages: the body may come in several chunks."""

    method: str = "POST"
    path: str = "/prediction"
    headers: tuple[tuple[str, str], ...] = (("content-type", "application/json"),)
    chunks: tuple[bytes, ...] = (b"",)
    disconnect: bool = False  # the client leaves before sending the body
    query: str = ""  # the query string, without "?"


@dataclass
class Answer:
    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes


@dataclass
class Spy:
    """ASGI middleware inside the app: records which requests reached FastAPI."""

    app: Any
    seen: list[str]

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        self.seen.append(f"{scope['method']} {scope['path']}")
        await self.app(scope, receive, send)


def post(
    body: Any, *headers: tuple[str, str], raw: bool = False, chunk: int = 0, query: str = ""
) -> Request:
    """A POST /prediction; ``body`` is sent as JSON unless ``raw`` (bytes as they are)."""
    data = body if raw else json.dumps(body).encode()
    chunks = tuple(data[i : i + chunk] for i in range(0, len(data), chunk)) if chunk else (data,)
    given = headers or (("content-type", "application/json"),)
    if not any(name == "content-length" for name, _ in given) and not chunk:
        given = (*given, ("content-length", str(len(data))))
    return Request(headers=given, chunks=chunks or (b"",), query=query)


async def _call(app: Any, request: Request) -> Answer:
    if request.disconnect:
        messages = [{"type": "http.disconnect"}]
    else:
        last = len(request.chunks) - 1
        messages = [
            {"type": "http.request", "body": chunk, "more_body": i < last}
            for i, chunk in enumerate(request.chunks)
        ]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1",
        "method": request.method,
        "scheme": "http",
        "path": request.path,
        "raw_path": request.path.encode(),
        "query_string": request.query.encode("latin-1"),
        "root_path": "",
        "headers": [
            (k.lower().encode("latin-1"), v.encode("latin-1"))
            for k, v in (
                request.headers
                if any(k.lower() == "host" for k, _ in request.headers)
                else (("host", "127.0.0.1:8000"), *request.headers)
            )
        ],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
        "state": {},
    }
    await app(scope, receive, send)
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return Answer(start["status"], list(start.get("headers", [])), body)


def call(app: Any, request: Request) -> Answer:
    return asyncio.run(_call(app, request))


@dataclass
class Pair:
    """The API as built by ``create_app`` and another one behind the fast path."""

    route: Any
    fast: PredictionFastPath
    reached_app: list[str] = field(default_factory=list)  # requests the fast path handed on

    def both(self, request: Request) -> tuple[Answer, Answer, bool]:
        """Both answers, and whether the fast path answered by itself."""
        before = len(self.reached_app)
        fast = call(self.fast, request)
        return call(self.route, request), fast, len(self.reached_app) == before


def pair(settings: Settings) -> Pair:
    inner = create_app(settings)
    with contextlib.suppress(BerylError):
        inner.state.holder.get()  # as ``beryl serve`` does before the first request
    both = Pair(create_app(settings), PredictionFastPath(inner))
    inner.add_middleware(Spy, seen=both.reached_app)
    return both


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """A model with a categorical feature (``segment``) beside numeric ones; with this seed the
    tiny-spread ``margin`` weighs about 4 once scaling is folded in, so 1e308 cannot be scored."""
    root = tmp_path_factory.mktemp("fastpath") / "ws"
    limits = {"max_body_bytes": MAX_BODY_BYTES, "max_records": MAX_RECORDS}
    return make_mixed_workspace(root, seed=5, **limits)[0]


@pytest.fixture(scope="module")
def open_pair(workspace: Settings) -> Pair:
    return pair(workspace)


@pytest.fixture(scope="module")
def guarded_pair(workspace: Settings) -> Pair:
    api = workspace.api.model_copy(update={"token": TOKEN})
    return pair(workspace.model_copy(update={"api": api}))


def record(**changes: Any) -> dict[str, Any]:
    return {**RECORD, "margin": 0.004, "segment": "smb", **changes}


def _deep(levels: int) -> bytes:
    return b'{"records": ' + b"[" * levels + b"]" * levels + b"}"


# (name, request, whether the fast path answers it itself)
CASES: list[tuple[str, Request, bool]] = [
    ("one record", post({"records": [record()]}), True),
    ("several records", post({"records": [record(lastmonth_activity=i) for i in range(7)]}), True),
    ("missing values", post({"records": [record(lastyear_activity=None, segment=None)]}), True),
    ("numbers as text", post({"records": [record(number_of_employees=" 12 ", segment=3)]}), True),
    ("blank text", post({"records": [record(lastmonth_activity="", segment="  ")]}), True),
    ("unseen category", post({"records": [record(segment="galactic")]}), True),
    ("extra record fields", post({"records": [record(note="ignored", id=7)]}), True),
    ("non-ASCII category", post({"records": [record(segment="Zürich ✓")]}), True),
    ("the record limit", post({"records": [record()] * MAX_RECORDS}), True),
    (
        "charset parameter",
        post({"records": [record()]}, ("Content-Type", "Application/JSON; charset=utf-8")),
        True,
    ),
    # JSON must be declared: a cross-site POST comes without a Content-Type (415 from the route)
    ("no content type", post({"records": [record()]}, ("accept", "*/*")), False),
    ("text/plain", post({"records": [record()]}, ("content-type", "text/plain")), False),
    (
        "another host",
        post({"records": [record()]}, ("content-type", "application/json"), ("host", "evil.test")),
        False,
    ),
    ("body in chunks", post({"records": [record()] * 3}, chunk=17), True),
    ("explain", post({"records": [record(), record(segment=None)], "explain": 2}), True),
    ("explain, every feature", post({"records": [record()], "explain": 99}), True),
    ("explain as text", post({"records": [record()], "explain": " 3 "}), True),
    ("explain null", post({"records": [record()], "explain": None}), True),
    ("explain, many records", post({"records": [record()] * MAX_RECORDS, "explain": 1}), True),
    ("explain 0", post({"records": [record()], "explain": 0}), False),
    ("explain 2.5", post({"records": [record()], "explain": 2.5}), False),
    ("explain true", post({"records": [record()], "explain": True}), False),
    ("explain in the query", post({"records": [record()]}, query="explain=2"), False),
    ("another query", post({"records": [record()]}, query="x=1"), False),
    ("explain, a missing feature", post({"records": [{"segment": "x"}], "explain": 1}), False),
    ("a missing feature", post({"records": [{"lastmonth_activity": 1, "segment": "x"}]}), False),
    ("a bool for a number", post({"records": [record(lastyear_activity=True)]}), False),
    ("text for a number", post({"records": [record(lastyear_activity="lots")]}), False),
    ("an object for a category", post({"records": [record(segment={"a": 1})]}), False),
    ("a list for a number", post({"records": [record(lastmonth_activity=[1])]}), False),
    ("an infinite number", post({"records": [record(lastmonth_activity=1e400)]}), False),
    ("a huge integer", post({"records": [record(lastmonth_activity=10**400)]}), False),
    ("too extreme to score", post({"records": [record(margin=1e308)]}), False),
    ("a lone surrogate", post({"records": [record(segment="\ud800")]}), False),
    ("a record that is a list", post({"records": [[1, 2, 3]]}), False),
    ("records not a list", post({"records": "all of them"}), False),
    ("no records", post({"records": []}), False),
    ("one record too many", post({"records": [record()] * (MAX_RECORDS + 1)}), False),
    ("an unknown top-level key", post({"records": [record()], "rows": []}), False),
    ("no records key", post({"rows": [record()]}), False),
    ("both forms", post({"records": [record()], "file_location": "testdata/testdata.csv"}), False),
    ("not an object", post([record()]), False),
    ("bad JSON", post(b"{nope", raw=True), False),
    ("not UTF-8", post(b'{"records": [{"segment": "\xff"}]}', raw=True), False),
    ("empty body", post(b"", raw=True), False),
    ("nested too deeply", post(_deep(100_000), raw=True), False),
    ("a file in the workspace", post({"file_location": "testdata/testdata.csv"}), False),
    ("a file outside", post({"file_location": "../../etc/passwd"}), False),
    ("no such file", post({"file_location": "nothing.csv"}), False),
    (
        "CSV",
        post(
            b"lastmonth_activity,lastyear_activity,number_of_employees,margin,segment\n"
            b"1,2,3,0.01,smb\n",
            ("content-type", "text/csv"),
            raw=True,
        ),
        False,
    ),
    ("XML", post(b"<a/>", ("content-type", "application/xml"), raw=True), False),
    ("a declared body too large", post({"records": [record()]} | {"pad": "x" * 5000}), False),
    (
        "a chunked body too large",
        post({"records": [record()] * 60}, ("content-type", "application/json"), chunk=500),
        False,
    ),
    (
        "a repeated content type",
        post({"records": [record()]}, ("content-type", "text/csv"), ("content-type", "text/xml")),
        False,
    ),
    ("the client left", Request(disconnect=True), False),
    ("GET", Request(method="GET", chunks=(b"",)), False),
    ("a trailing slash", Request(path="/prediction/"), False),
]

AUTH = ("authorization", f"Bearer {TOKEN}")
JSON = ("content-type", "application/json")
ONE = {"records": [RECORD | {"margin": 0.0, "segment": "smb"}]}
# (name, request, whether the fast path answers it itself, the status both give)
GUARDED: list[tuple[str, Request, bool, int]] = [
    ("the token", post(ONE, JSON, AUTH), True, 200),
    ("the token, lower case", post(ONE, JSON, ("authorization", f"bearer  {TOKEN} ")), True, 200),
    ("the token header", post(ONE, JSON, ("x-api-token", TOKEN)), True, 200),
    ("no token", post(ONE, JSON), False, 401),
    ("a wrong token", post(ONE, JSON, ("authorization", "Bearer nope")), False, 401),
    ("another scheme", post(ONE, JSON, ("authorization", f"Basic {TOKEN}")), False, 401),
    ("two tokens", post(ONE, JSON, AUTH, ("authorization", "Bearer nope")), False, 401),
    ("the token, bad JSON", post(b"{nope", JSON, AUTH, raw=True), False, 400),
    ("no token, too large", post({"pad": "x" * 5000}, JSON), False, 401),
    ("the token, too large", post({"pad": "x" * 5000}, JSON, AUTH), False, 413),
]


def assert_same(route: Answer, fast: Answer) -> None:
    assert fast.status == route.status
    assert fast.headers == route.headers  # same names, values and order
    assert fast.body == route.body


@pytest.mark.parametrize(("name", "request_", "answered"), CASES, ids=[c[0] for c in CASES])
def test_fast_path_answers_as_the_route(
    open_pair: Pair, name: str, request_: Request, answered: bool
) -> None:
    route, fast, handled = open_pair.both(request_)
    assert_same(route, fast)
    assert route.status < 500, route.body
    assert handled is answered
    if name == "too extreme to score":  # valid input the model refuses: the route says why
        error = json.loads(route.body)["error"]
        assert (route.status, error) == (422, "the model cannot score these records")
    if answered:
        payload = json.loads(fast.body)
        assert fast.status == 200 and payload["model_version"] == "v0001"


@pytest.mark.parametrize(
    ("name", "request_", "answered", "status"), GUARDED, ids=[c[0] for c in GUARDED]
)
def test_fast_path_checks_the_token_as_the_app(
    guarded_pair: Pair, name: str, request_: Request, answered: bool, status: int
) -> None:
    route, fast, handled = guarded_pair.both(request_)
    assert_same(route, fast)
    assert (fast.status, handled) == (status, answered)
    if status == 401:
        assert (b"www-authenticate", b"Bearer") in fast.headers


def _samples(text: str, name: str) -> dict[str, float]:
    return {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(name)
    }


def test_fast_path_records_the_same_metrics(workspace: Settings) -> None:
    both = pair(workspace)
    for _, request, _ in CASES:
        call(both.route, request)
        call(both.fast, request)
    both.route.state.metrics.flush()  # as /metrics does before it renders
    both.fast.app.state.metrics.flush()
    route = both.route.state.metrics.render().decode()
    fast = both.fast.app.state.metrics.render().decode()
    for name in (
        "beryl_http_requests_total",
        "beryl_http_request_duration_seconds_count",
        "beryl_predictions_total",
    ):
        assert _samples(fast, name) == _samples(route, name) != {}
    answered = sum(ok for _, _, ok in CASES)
    key = 'beryl_http_requests_total{method="POST",route="/prediction",status="200"}'
    assert _samples(fast, "beryl_http_requests_total")[key] >= answered


def test_a_promotion_is_picked_up_by_the_fast_path(tmp_path: Path) -> None:
    settings, _ = make_workspace(tmp_path / "ws")
    add_batch(settings.input_folder, "more.csv", rows=400, seed=11)
    ingest(settings)
    assert train(settings).id == "v0002"  # a candidate, not yet in production
    fast = pair(settings).fast
    request = post({"records": [RECORD]})
    before = call(fast, request)
    deploy(settings, "v0002")  # while the app is up
    after = call(fast, request)
    assert json.loads(before.body)["model_version"] == "v0001"
    assert json.loads(after.body)["model_version"] == "v0002"
    assert json.loads(after.body)["probabilities"] != json.loads(before.body)["probabilities"]


def test_overridden_dependencies_send_every_request_to_the_route(workspace: Settings) -> None:
    from beryl.api.deps import get_holder

    both = pair(workspace)
    inner = both.fast.app
    holder = inner.state.holder
    inner.dependency_overrides[get_holder] = lambda: holder
    answer = call(both.fast, post({"records": [record()]}))
    assert answer.status == 200 and both.reached_app == ["POST /prediction"]


# Any JSON value where a record's value goes, any extra key, any feature left out; and records
# that are valid but for their values' forms (numbers as text, blanks, nulls, unseen categories).
_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(10**20), 10**20)
    | st.floats(allow_nan=False)
    | st.text(max_size=8)
    | st.sampled_from(["smb", "mid", "enterprise", " 12.5 ", "", "1e3"]),
    lambda inner: (
        st.lists(inner, max_size=2) | st.dictionaries(st.text(max_size=3), inner, max_size=2)
    ),
    max_leaves=4,
)
_number = (
    st.none()
    | st.integers(-(10**6), 10**6)
    | st.floats(-1e6, 1e6)
    | st.sampled_from([" 12.5 ", "", "1e3", "-0"])
)
_category = st.none() | st.text(max_size=6) | st.sampled_from(["smb", "mid", "enterprise"])
_plausible = st.fixed_dictionaries(
    dict.fromkeys(NUMERIC, _number) | {"segment": _category}, optional={"extra": _values}
)
_anything = st.dictionaries(st.sampled_from([*NUMERIC, "segment", "extra"]), _values, min_size=3)
_records = st.lists(_plausible | _anything, min_size=1, max_size=4)


@settings(max_examples=300, deadline=None, derandomize=True, database=None)
@given(records=_records)
def test_any_records_get_the_same_answer_either_way(open_pair: Pair, records: Any) -> None:
    route, fast, handled = open_pair.both(post({"records": records}))
    event(f"status {route.status}")
    assert_same(route, fast)
    assert route.status in (200, 422)
    assert handled is (route.status == 200)


def test_an_answer_is_compact_json_with_its_length_and_type(open_pair: Pair) -> None:
    answer = call(open_pair.fast, post({"records": [record()]}))
    assert re.fullmatch(
        rb'\{"predictions":\[[01]\],"probabilities":\[[0-9.e-]+\],"model_version":"v0001"\}',
        answer.body,
    )
    assert answer.headers == [
        (b"content-length", str(len(answer.body)).encode()),
        (b"content-type", b"application/json"),
    ]
