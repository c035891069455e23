"""Property-based fuzzing of the REST API over real HTTP (DESIGN section 4: a 5xx is a bug).

Schemathesis generates requests for every operation of the server's own ``/openapi.json`` and
checks each answer against that document; hypothesis adds hostile bodies the document does not
describe. Every run is derandomized, so CI sees the same cases each time.
"""

from __future__ import annotations

import json
import string
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from schemathesis import Case, GenerationMode
from tests.test_api import make_mixed_workspace, serving

from beryl.config import Settings

pytestmark = pytest.mark.slow

MAX_BODY_BYTES = 64_000
MAX_RECORDS = 200
TOKEN = "fuzz-s3cret"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
AUTH_HEADERS = frozenset({"authorization", "x-api-token"})
OPEN_PATHS = frozenset({"/health", "/ready", "/v2/health/live", "/v2/health/ready"})
NUMERIC = ["lastmonth_activity", "lastyear_activity", "number_of_employees", "margin"]
FEATURES = [*NUMERIC, "segment"]

# One seed-free, database-free profile: the same cases on every machine and every run.
FUZZ = settings(
    deadline=None,
    derandomize=True,
    database=None,
    print_blob=False,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.filter_too_much,
        HealthCheck.large_base_example,
    ],
)

CHECKS = [
    schemathesis.checks.not_a_server_error,
    schemathesis.checks.status_code_conformance,
    schemathesis.checks.content_type_conformance,
    schemathesis.checks.response_schema_conformance,
]


@dataclass
class Api:
    url: str
    settings: Settings
    log: Path

    def log_tail(self, lines: int = 60) -> str:
        """The end of the server's log: the traceback behind a 500 is there."""
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


def _fuzz_workspace(root: Path, *, run: bool = True, **api: object) -> tuple[Settings, Path]:
    """``make_mixed_workspace`` with the fuzzing limits."""
    limits = {"max_body_bytes": MAX_BODY_BYTES, "max_records": MAX_RECORDS, **api}
    return make_mixed_workspace(root, run=run, **limits)


def _api(root: Path, *, run: bool = True, **api: object) -> Iterator[Api]:
    settings, config_path = _fuzz_workspace(root / "ws", run=run, **api)
    log = root / "server.log"
    with serving(config_path, log_path=log) as url:
        yield Api(url, settings, log)


@pytest.fixture(scope="module")
def open_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    yield from _api(tmp_path_factory.mktemp("fuzz"))


@pytest.fixture(scope="module")
def guarded_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    yield from _api(tmp_path_factory.mktemp("fuzz-token"), token=TOKEN)


@pytest.fixture(scope="module")
def modelless_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    """Nothing ingested, nothing in production: the model's routes answer 503."""
    yield from _api(tmp_path_factory.mktemp("fuzz-empty"), run=False)


# -- schema-driven fuzzing ------------------------------------------------------------------------
_header_value = st.text(string.ascii_letters + string.digits + "-_.~ ", max_size=30).map(str.strip)
_undeclared = {
    # Query parameters and headers the document does not declare: the server must ignore them.
    "params": st.dictionaries(
        st.text(string.ascii_letters + "_", min_size=1, max_size=10),
        st.text(max_size=20),
        max_size=3,
    ),
    "headers": st.dictionaries(
        st.sampled_from(["X-Request-Id", "Accept-Language", "X-Forwarded-For", "Cookie"]),
        _header_value,
        max_size=2,
    ),
}
OPERATIONS = {
    "POST /prediction",
    "GET /scoring",
    "GET /summarystats",
    "GET /diagnostics",
    "GET /health",
    "GET /ready",
    "GET /drift",
    "GET /history",
    "GET /metrics",
    "GET /dashboard",
    "GET /v2",
    "GET /v2/health/live",
    "GET /v2/health/ready",
    "GET /v2/models/{name}",
    "GET /v2/models/{name}/versions/{version}",
    "GET /v2/models/{name}/ready",
    "GET /v2/models/{name}/versions/{version}/ready",
    "POST /v2/models/{name}/infer",
    "POST /v2/models/{name}/versions/{version}/infer",
}

Check = Callable[[Case, requests.Session, dict[str, Any]], None]
Budget = Callable[[str, GenerationMode], int]


def _fuzz(
    api: Api,
    budget: Budget,
    check: Check,
    *,
    headers: Mapping[str, str] | None = None,
    extras: Mapping[str, st.SearchStrategy[Any]] = _undeclared,
) -> Counter[str]:
    """Run ``check`` on generated cases of every documented operation; count them per operation.

    Failures of all operations are collected, so one run reports every broken operation.
    """
    schema = schemathesis.openapi.from_url(
        f"{api.url}/openapi.json", headers=dict(headers or {}), timeout=10
    )
    counts: Counter[str] = Counter()
    failures: list[str] = []
    with requests.Session() as session:
        for result in schema.get_all_operations():
            operation = result.ok()
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
                examples = budget(operation.method.upper(), mode)
                if not examples:
                    continue

                @settings(FUZZ, max_examples=examples)
                @given(
                    case=operation.as_strategy(generation_mode=mode),
                    extra=st.fixed_dictionaries(dict(extras)),
                )
                def run(case: Case, extra: dict[str, Any]) -> None:
                    counts[case.operation.label] += 1
                    check(case, session, extra)

                try:
                    run()
                except (Exception, BaseExceptionGroup) as exc:
                    notes = "\n".join(getattr(exc, "__notes__", []))
                    failures.append(f"{operation.label} [{mode.value}]: {exc}\n{notes}")
    assert not failures, "\n\n".join([*failures, f"server log:\n{api.log_tail()}"])
    assert set(counts) == OPERATIONS
    return counts


def _budget(method: str, mode: GenerationMode) -> int:
    """Most examples for the one operation with a body; GETs have little to vary."""
    if method == "POST":
        return 250 if mode is GenerationMode.POSITIVE else 150
    return 30 if mode is GenerationMode.POSITIVE else 0


def test_schema_fuzzing_finds_no_server_error_and_matches_the_document(open_api: Api) -> None:
    statuses: Counter[tuple[str, int]] = Counter()

    def check(case: Case, session: requests.Session, extra: dict[str, Any]) -> None:
        response = case.call(base_url=open_api.url, session=session, timeout=30, **extra)
        statuses[(case.operation.label, response.status_code)] += 1
        case.validate_response(response, checks=CHECKS)

    counts = _fuzz(open_api, _budget, check)
    total = sum(counts.values())
    print(f"\nschema fuzzing: {total} cases {dict(counts)}\n  answers: {dict(statuses)}")
    assert total >= 500
    assert counts["POST /prediction"] >= 300
    # The generated cases reached the model, not only the validation errors.
    assert statuses[("POST /prediction", 200)] >= 20
    assert statuses[("POST /prediction", 422)] >= 20


def test_schema_fuzzing_without_a_model_answers_documented_503s(modelless_api: Api) -> None:
    url = modelless_api.url

    def check(case: Case, session: requests.Session, extra: dict[str, Any]) -> None:
        response = case.call(base_url=url, session=session, timeout=30, **extra)
        # 503 "no model yet" is the one deliberate 5xx; it must be documented like any answer.
        case.validate_response(response, checks=CHECKS[1:])
        expected = {"/health": 200, "/history": 200, "/metrics": 200, "/dashboard": 200}
        expected["/drift"] = 404  # no drift check yet: a plain "not found", not an outage
        expected |= {"/v2": 200, "/v2/health/live": 200}  # the server, not the model
        path = case.operation.path
        if path.startswith("/v2/models/") and (case.path_parameters or {}).get("name") != (
            "attrition"
        ):
            expected[path] = 404  # a model this server does not serve, model or not
        assert response.status_code == expected.get(path, 503), response.text

    def budget(method: str, mode: GenerationMode) -> int:
        if mode is GenerationMode.NEGATIVE:
            return 0
        return 40 if method == "POST" else 5

    counts = _fuzz(modelless_api, budget, check)
    print(f"\nschema fuzzing without a model: {sum(counts.values())} cases {dict(counts)}")
    assert sum(counts.values()) >= 40


# -- token authentication -------------------------------------------------------------------------
def test_the_document_declares_the_token_and_its_401(guarded_api: Api) -> None:
    assert httpx.get(f"{guarded_api.url}/openapi.json").status_code == 401
    document = httpx.get(f"{guarded_api.url}/openapi.json", headers=AUTH).json()
    assert set(document["components"]["securitySchemes"]) == {"bearerToken", "apiToken"}
    for path, operations in document["paths"].items():
        for operation in operations.values():
            guarded = path not in OPEN_PATHS
            assert ("security" in operation) is guarded, path
            assert ("401" in operation["responses"]) is guarded, path


def test_token_guards_every_operation_but_health_and_ready_under_fuzzing(
    guarded_api: Api,
) -> None:
    url = guarded_api.url
    refused: Counter[str] = Counter()

    def check(case: Case, session: requests.Session, extra: dict[str, Any]) -> None:
        case.headers = {
            k: v for k, v in (case.headers or {}).items() if k.lower() not in AUTH_HEADERS
        }
        wrong = extra["wrong_token"]
        attempts = {
            "no token": {},
            "wrong bearer token": {"Authorization": f"Bearer {wrong}"},
            "wrong X-API-Token": {"X-API-Token": wrong},
            "the token in another scheme": {"Authorization": f"Basic {TOKEN}"},
        }
        for name, headers in attempts.items():
            response = case.call(
                base_url=url, session=session, headers=headers, params=extra["params"], timeout=30
            )
            case.validate_response(response, checks=CHECKS)
            if case.operation.path in OPEN_PATHS:
                assert response.status_code != 401, name
                continue
            assert response.status_code == 401, (name, response.status_code, response.text)
            assert response.headers["www-authenticate"] == ["Bearer"]
            assert "token" in response.json()["error"]
            refused[case.operation.label] += 1
        for headers in (AUTH, {"X-API-Token": TOKEN}):
            response = case.call(base_url=url, session=session, headers=headers, timeout=30)
            assert response.status_code != 401, headers
            case.validate_response(response, checks=CHECKS)

    def budget(method: str, mode: GenerationMode) -> int:
        if mode is GenerationMode.NEGATIVE:
            return 0
        return 60 if method == "POST" else 15

    wrong_token = st.text(string.ascii_letters + string.digits + "-._~+/=", max_size=40)
    counts = _fuzz(
        guarded_api,
        budget,
        check,
        headers=AUTH,
        extras={"params": _undeclared["params"], "wrong_token": wrong_token},
    )
    print(f"\ntoken fuzzing: {sum(counts.values())} cases x 6 requests {dict(counts)}")
    assert sum(counts.values()) >= 100
    assert set(refused) == OPERATIONS - {f"GET {path}" for path in OPEN_PATHS}


_segment = st.text(string.ascii_letters + string.digits + "-_~", min_size=1, max_size=12)
_any_path = st.one_of(
    st.sampled_from(
        [
            *(op.split(" ")[1] for op in OPERATIONS),
            *("/docs", "/redoc", "/openapi.json", "/docs/oauth2-redirect", "/", "/health/"),
        ]
    ),
    st.lists(_segment, min_size=1, max_size=4).map(lambda parts: "/" + "/".join(parts)),
)


def test_token_guards_any_path_and_method_but_health_and_ready(guarded_api: Api) -> None:
    seen: list[tuple[str, str, int]] = []

    @settings(FUZZ, max_examples=150)
    @given(
        method=st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"]),
        path=_any_path,
        body=st.binary(max_size=64),
        wrong=st.none() | st.text(string.ascii_letters + string.digits, min_size=1, max_size=20),
    )
    @example(method="GET", path="/health", body=b"", wrong=None)
    @example(method="GET", path="/ready", body=b"", wrong="nope")
    @example(method="GET", path="/docs", body=b"", wrong=None)
    @example(method="POST", path="/prediction", body=b"{}", wrong="nope")
    def run(method: str, path: str, body: bytes, wrong: str | None) -> None:
        headers = {} if wrong is None else {"Authorization": f"Bearer {wrong}"}
        with httpx.Client(base_url=guarded_api.url, timeout=30) as client:
            response = client.request(method, path, content=body or None, headers=headers)
        seen.append((method, path, response.status_code))
        assert response.status_code < 500
        if path in OPEN_PATHS:
            assert response.status_code != 401, (method, path)
        else:
            assert response.status_code == 401, (method, path, response.status_code)
            if method != "HEAD":
                assert "token" in response.json()["error"]

    run()
    print(f"\nany path and method without the token: {len(seen)} requests")
    assert len(seen) >= 100
    assert {path for _, path, _ in seen} >= {"/health", "/ready", "/docs", "/prediction"}


# -- hostile bodies the document does not describe ------------------------------------------------
_surrogate = st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF)
_text = st.text(st.one_of(st.characters(), _surrogate), max_size=40)
_long_text = st.tuples(
    st.sampled_from(["a", "é", "\u2028", "😀", "1", " "]), st.integers(1, 20_000)
)
_numbers = st.one_of(
    st.integers(),
    st.integers(min_value=10**300, max_value=10**4000).flatmap(lambda n: st.sampled_from([n, -n])),
    st.floats(),  # NaN and ±Infinity included: json.dumps writes them as bare literals
    st.sampled_from([1.7976931348623157e308, -1.7976931348623157e308, 5e-324, 1e307, -1e300]),
)
_numeric_text = st.one_of(
    st.from_regex(r"\A\s?-?[0-9_]{0,30}(\.[0-9]*)?([eE][-+]?[0-9]{1,4})?\s?\Z"),
    st.sampled_from(["nan", "inf", "-Infinity", "1e999", "\u0661\u0662", "0x10", "1_0", " ", ""]),
    st.integers(300, 500).map(lambda n: "9" * n),
)
_scalars = st.one_of(
    st.none(),
    st.booleans(),
    _numbers,
    _text,
    _numeric_text,
    _long_text.map(lambda pair: pair[0] * pair[1]),
)
_json = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_text, inner, max_size=4),
    max_leaves=12,
)
_record = st.one_of(
    st.fixed_dictionaries(
        {column: _scalars for column in FEATURES}, optional={"corporation": _scalars}
    ),
    st.fixed_dictionaries({column: st.one_of(_numbers, st.none()) for column in NUMERIC}).map(
        lambda r: {**r, "segment": "smb"}
    ),
    st.dictionaries(st.sampled_from([*FEATURES, "exited"]) | _text, _json, max_size=6),
    _json,
)
_location = st.one_of(
    _text,
    st.lists(
        st.sampled_from(
            [
                *("..", ".", "", "testdata", "testdata.csv", "models", "sourcedata", "/etc"),
                *("passwd", "config.json", "beryl.sqlite", "\x00", "\ud800", "~", "a" * 300),
            ]
        ),
        max_size=6,
    ).map("/".join),
)
_scorable = st.fixed_dictionaries(
    {
        **{
            column: st.none() | st.integers() | st.floats(allow_infinity=False)
            for column in NUMERIC
        },
        "segment": st.none() | st.text(st.characters(exclude_categories=("Cs",)), max_size=20),
    }
)
_payload = st.one_of(
    st.fixed_dictionaries({"records": st.lists(_scorable, min_size=1, max_size=8)}),
    st.fixed_dictionaries({"records": st.lists(_record, max_size=8)}),
    st.fixed_dictionaries({"file_location": _location}),
    st.fixed_dictionaries({"records": _json}),
    st.dictionaries(
        st.sampled_from(["records", "file_location", "rows"]) | _text, _json, max_size=3
    ),
    _json,
)
# JSON must be declared: a body without a Content-Type is refused (415), as the raw-body test sees.
_json_types = st.sampled_from(
    ["application/json", "application/json; charset=utf-8", "Application/JSON"]
)
_cell = st.one_of(
    st.sampled_from(["", "NA", "nan", "inf", "-1e400", "1e308", '"', '""', "'", ",", "\\", "é"]),
    _numeric_text,
    st.text(st.characters(exclude_characters="\x00", exclude_categories=("Cs",)), max_size=12),
)
_csv = st.builds(
    lambda header, rows, newline: newline.join(",".join(cells) for cells in [header, *rows]),
    st.lists(st.sampled_from([*FEATURES, "corporation", "", "x"]), min_size=1, max_size=7),
    st.lists(st.lists(_cell, max_size=8), max_size=10),
    st.sampled_from(["\n", "\r\n", "\r"]),
)
_nesting = st.tuples(st.integers(1, 30_000), st.sampled_from(["[", '{"a":'])).map(
    lambda pair: (pair[1] * pair[0] + ("]" if pair[1] == "[" else "}") * pair[0]).encode()
)
_raw = st.one_of(
    st.binary(max_size=2048),
    _csv.flatmap(lambda text: st.sampled_from([text.encode(), text.encode("latin-1", "replace")])),
    _nesting,
    _nesting.map(lambda inner: b'{"records":' + inner + b"}"),
    _nesting.map(lambda inner: b'{"records":[{"lastmonth_activity":' + inner + b"}]}"),
    st.integers(300, 6_000).map(lambda n: b'{"records":[{"margin":' + b"9" * n + b"}]}"),
    st.sampled_from(
        [b"NaN", b"Infinity", b"-Infinity", b"null", b"{}", b"[]", b'""', b"\xef\xbb\xbf"]
    ),
)
_raw_types = st.one_of(
    st.sampled_from(["application/json", "text/csv"]),
    st.sampled_from([None, "application/csv", "text/csv; charset=latin-1", "Application/JSON"]),
    st.sampled_from(
        [
            *("text/plain", "application/xml", "multipart/form-data; boundary=x", "*/*", ";"),
            *("application/x-www-form-urlencoded", "application/octet-stream", "json"),
        ]
    ),
    st.text(string.ascii_letters + "/;=-+. ", max_size=40).map(str.strip),
)


def _assert_clean_answer(api: Api, response: httpx.Response, sent: bytes) -> None:
    """< 500, JSON, and either a well-formed prediction or an ``{"error", "detail"}`` object."""
    problem = _problem(response)
    assert problem is None, (
        f"POST /prediction {sent[:200]!r} -> {response.status_code}: {problem}\n"
        f"{response.text[:300]}\nserver log:\n{api.log_tail()}"
    )


def _problem(response: httpx.Response) -> str | None:
    if response.status_code >= 500:
        return "a server error"
    if response.headers.get("content-type") != "application/json":
        return "not JSON"
    payload = response.json()
    if response.status_code == 200:
        probabilities = payload["probabilities"]
        if not len(payload["predictions"]) == len(probabilities) >= 1:
            return "predictions and probabilities differ in length"
        if not all(0.0 <= p <= 1.0 for p in probabilities):  # NaN fails this too
            return "a probability outside [0, 1]"
    elif not (
        isinstance(payload, dict)
        and set(payload) == {"error", "detail"}
        and isinstance(payload["error"], str)
        and payload["error"]
    ):
        return "not an error object"
    return None


def _post(client: httpx.Client, body: bytes, content_type: str | None) -> httpx.Response:
    headers = {} if content_type is None else {"Content-Type": content_type}
    return client.post("/prediction", content=body, headers=headers)


def test_hostile_json_bodies_never_get_a_server_error(open_api: Api) -> None:
    statuses: Counter[int] = Counter()
    with httpx.Client(base_url=open_api.url, timeout=30) as client:

        @settings(FUZZ, max_examples=300)
        @given(payload=_payload, ascii_only=st.booleans(), content_type=_json_types)
        def run(payload: Any, ascii_only: bool, content_type: str | None) -> None:
            text = json.dumps(payload, ensure_ascii=ascii_only)  # NaN, Infinity as bare literals
            body = text.encode("utf-8", "surrogatepass")  # lone surrogates: invalid UTF-8
            response = _post(client, body, content_type)
            statuses[response.status_code] += 1
            _assert_clean_answer(open_api, response, body)

        run()
    print(f"\nhostile JSON bodies: {sum(statuses.values())} requests, answers {dict(statuses)}")
    assert sum(statuses.values()) >= 250
    assert statuses[200] >= 30 and statuses[422] >= 50


def test_hostile_raw_bodies_and_content_types_never_get_a_server_error(open_api: Api) -> None:
    statuses: Counter[int] = Counter()
    with httpx.Client(base_url=open_api.url, timeout=30) as client:

        @settings(FUZZ, max_examples=250)
        @given(body=_raw, content_type=_raw_types)
        def run(body: bytes, content_type: str | None) -> None:
            response = _post(client, body, content_type)
            statuses[response.status_code] += 1
            _assert_clean_answer(open_api, response, body)

        run()
    print(f"\nhostile raw bodies: {sum(statuses.values())} requests, answers {dict(statuses)}")
    assert sum(statuses.values()) >= 200
    assert {400, 413, 415, 422} <= set(statuses)


def test_every_file_of_the_workspace_as_file_location(open_api: Api) -> None:
    root = open_api.settings.root
    files = sorted(p for p in root.rglob("*") if p.is_file())
    assert len(files) >= 10
    with httpx.Client(base_url=open_api.url, timeout=30) as client:
        for path in files:
            body = json.dumps({"file_location": str(path.relative_to(root))}).encode()
            _assert_clean_answer(open_api, _post(client, body, "application/json"), body)


_WIDE = 1.7976931348623157e308


def _records_body(**values: Any) -> bytes:
    record = {"lastmonth_activity": 1, "lastyear_activity": 2, "number_of_employees": 3}
    return json.dumps({"records": [{**record, "margin": 0.0, "segment": "smb", **values}]}).encode()


@pytest.mark.parametrize(
    ("body", "status"),
    [
        pytest.param(_records_body(margin=10**400), 422, id="integer-beyond-the-float-range"),
        pytest.param(
            b'{"records":' + b"[" * 20_000 + b"]" * 20_000 + b"}", 400, id="nested-20000-deep"
        ),
        pytest.param(b'{"file_location":"\\ud800"}', 422, id="file-location-high-surrogate"),
        pytest.param(b'{"file_location":"\\udc80.csv"}', 422, id="file-location-low-surrogate"),
        pytest.param(_records_body(segment="\ud800"), 422, id="category-lone-surrogate"),
        # The compiled model folds scaling into its weights, so these huge but finite inputs get
        # a certain answer (probability 0 or 1) where the pipeline's scaling overflowed.
        pytest.param(_records_body(margin=1e307), 200, id="finite-but-overflows-when-scaled"),
        pytest.param(_records_body(margin=-_WIDE, lastmonth_activity=_WIDE), 200, id="max-float"),
        pytest.param(_records_body(margin=float("nan")), 200, id="nan-literal-is-missing"),
        pytest.param(_records_body(margin=float("inf")), 422, id="infinity-literal"),
        pytest.param(_records_body(lastyear_activity=1e300), 200, id="huge-but-scorable"),
    ],
)
def test_hostile_requests_that_once_were_server_errors(
    open_api: Api, body: bytes, status: int
) -> None:
    with httpx.Client(base_url=open_api.url, timeout=30) as client:
        response = _post(client, body, "application/json")
    _assert_clean_answer(open_api, response, body)
    assert response.status_code == status, response.text


# -- limits ---------------------------------------------------------------------------------------
def _chunks(body: bytes, size: int) -> Iterator[bytes]:
    for start in range(0, len(body), size):
        yield body[start : start + size]


@pytest.mark.parametrize("content_type", ["text/csv", "application/json"])
def test_a_body_over_the_limit_is_413_with_or_without_content_length(
    open_api: Api, content_type: str
) -> None:
    headers = {"Content-Type": content_type}
    over = b"x" * (MAX_BODY_BYTES + 1)
    at_limit = over[:MAX_BODY_BYTES]
    with httpx.Client(base_url=open_api.url, timeout=30) as client:
        declared = client.post("/prediction", content=over, headers=headers)
        assert declared.request.headers["Content-Length"] == str(MAX_BODY_BYTES + 1)
        chunked = client.post("/prediction", content=_chunks(over, 4096), headers=headers)
        assert "Content-Length" not in chunked.request.headers
        assert chunked.request.headers["Transfer-Encoding"] == "chunked"
        for response in (declared, chunked):
            assert response.status_code == 413
            assert str(MAX_BODY_BYTES) in response.json()["error"]
        for body in (at_limit, _chunks(at_limit, 4096)):
            response = client.post("/prediction", content=body, headers=headers)
            assert response.status_code in (400, 422), response.text  # read, then refused


def test_413_exactly_when_the_body_exceeds_the_limit_chunked_or_not(open_api: Api) -> None:
    seen: Counter[bool] = Counter()
    with httpx.Client(base_url=open_api.url, timeout=30) as client:

        @settings(FUZZ, max_examples=40)
        @given(
            size=st.one_of(
                st.integers(MAX_BODY_BYTES - 64, MAX_BODY_BYTES + 64), st.integers(1, 200_000)
            ),
            chunk=st.one_of(st.none(), st.integers(512, 70_000)),
        )
        def run(size: int, chunk: int | None) -> None:
            body = b"1" * size
            content = body if chunk is None else _chunks(body, chunk)
            answer = client.post(
                "/prediction", content=content, headers={"Content-Type": "text/csv"}
            )
            over = size > MAX_BODY_BYTES
            seen[over] += 1
            assert (answer.status_code == 413) is over, (size, chunk, answer.text)

        run()
    print(f"\nbody sizes around the limit: {sum(seen.values())} requests")
    assert seen[True] >= 5 and seen[False] >= 5


def _csv_rows(count: int) -> bytes:
    lines = [",".join(FEATURES), *(f"{i},{i * 10},3,0.01,smb" for i in range(count))]
    return ("\n".join(lines) + "\n").encode()


def test_record_counts_are_bounded(open_api: Api) -> None:
    seen: Counter[int] = Counter()
    record = {
        "lastmonth_activity": 1,
        "lastyear_activity": 2,
        "number_of_employees": 3,
        "margin": 0.0,
        "segment": "smb",
    }
    with httpx.Client(base_url=open_api.url, timeout=30) as client:

        @settings(FUZZ, max_examples=30)
        @given(
            count=st.one_of(
                st.integers(MAX_RECORDS - 2, MAX_RECORDS + 2), st.integers(1, 2 * MAX_RECORDS)
            ),
            as_csv=st.booleans(),
        )
        def run(count: int, as_csv: bool) -> None:
            if as_csv:
                answer = client.post(
                    "/prediction", content=_csv_rows(count), headers={"Content-Type": "text/csv"}
                )
            else:
                answer = client.post("/prediction", json={"records": [record] * count})
            seen[answer.status_code] += 1
            if count > MAX_RECORDS:
                assert answer.status_code == 413, answer.text
                assert f"the limit is {MAX_RECORDS}" in answer.json()["error"]
            else:
                assert answer.status_code == 200, answer.text
                assert len(answer.json()["predictions"]) == count

        run()
        big = open_api.settings.root / "big.csv"
        big.write_bytes(_csv_rows(MAX_RECORDS + 1))
        try:
            by_file = client.post("/prediction", json={"file_location": "big.csv"})
        finally:
            big.unlink()
    assert by_file.status_code == 413
    print(f"\nrecord counts around the limit: {sum(seen.values())} requests {dict(seen)}")
    assert seen[200] >= 5 and seen[413] >= 5


def test_limits_and_token_order_and_405_allow(guarded_api: Api) -> None:
    over = b"x" * (MAX_BODY_BYTES + 1)
    with httpx.Client(base_url=guarded_api.url, timeout=30) as client:
        anonymous = client.post("/prediction", content=over)
        assert anonymous.status_code == 401  # nothing is read before the token is checked
        assert client.post("/prediction", content=over, headers=AUTH).status_code == 413
        wrong_method = client.get("/prediction", headers=AUTH)
    assert wrong_method.status_code == 405
    assert wrong_method.headers["Allow"] == "POST"
    assert set(wrong_method.json()) == {"error", "detail"}
