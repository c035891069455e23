"""The login form and session cookie of the API's pages, over real HTTP (a uvicorn thread).

With ``api.token`` set, a browser opening ``/dashboard``, ``/docs`` or ``/redoc`` gets a login
form; the cookie it then holds opens those pages (and what they load) and nothing else.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from http.cookies import Morsel, SimpleCookie

import httpx
import pytest
from tests.test_api import make_workspace
from tests.test_event_loop import in_process

from beryl.api import session
from beryl.api.routes.login import BrowserLogin
from beryl.config import Settings

TOKEN = "s3cret-Token_42"
HTML = {"Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"}
RECORD = {"lastmonth_activity": 5, "lastyear_activity": 300, "number_of_employees": 12}


def _with_token(settings: Settings, token: str | None) -> Settings:
    return settings.model_copy(update={"api": settings.api.model_copy(update={"token": token})})


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    made, _ = make_workspace(tmp_path_factory.mktemp("login") / "ws", api={"token": TOKEN})
    return made


@pytest.fixture(scope="module")
def url(settings: Settings) -> Iterator[str]:
    with in_process(settings) as (base, _):
        yield base


def _log_in(
    url: str, token: str = TOKEN, page: str = "/dashboard", **headers: str
) -> httpx.Response:
    own = {"Sec-Fetch-Site": "same-origin", "Origin": url, **HTML}
    return httpx.post(
        f"{url}/login", data={"token": token, "next": page}, headers=own | headers, timeout=30
    )


def _cookie(response: httpx.Response) -> Morsel[str]:
    (header,) = response.headers.get_list("set-cookie")
    jar: SimpleCookie = SimpleCookie()
    jar.load(header)
    return jar[session.COOKIE]


def _page(url: str, path: str, cookie: str | None, **headers: str) -> httpx.Response:
    sent = HTML | headers | ({"Cookie": f"{session.COOKIE}={cookie}"} if cookie else {})
    return httpx.get(f"{url}{path}", headers=sent, timeout=30)


def _is_form(response: httpx.Response) -> bool:
    return response.headers["content-type"].startswith("text/html") and (
        '<form id="login" method="post" action="/login">' in response.text
    )


def test_a_browser_opening_a_page_without_the_token_gets_the_login_form(url: str) -> None:
    for path in ("/dashboard", "/docs", "/redoc"):
        answer = _page(url, path, None)
        assert answer.status_code == 401
        assert answer.headers["www-authenticate"] == "Bearer"
        assert _is_form(answer), answer.text
        assert f'name="next" value="{path}"' in answer.text
        assert answer.headers["cache-control"] == "no-store"
        assert "frame-ancestors 'none'" in answer.headers["content-security-policy"]
        # Offline and script-free: nothing is loaded from anywhere.
        assert "<script" not in answer.text
        assert not re.findall(r'(?:src|href)="', answer.text)
        # An API client asking for the same page still gets the JSON 401.
        plain = httpx.get(f"{url}{path}", timeout=30)
        assert plain.status_code == 401
        assert plain.json()["error"] == "missing or wrong API token"


def test_api_routes_keep_their_json_401_with_the_cookie_and_the_header_still_works(
    url: str,
) -> None:
    """Even a browser holding a session cookie gets the JSON 401 from the API's routes (and
    ``/metrics``): the cookie opens the pages only, the token in a header opens everything."""
    cookie = _cookie(_log_in(url)).value
    browser = HTML | {"Cookie": f"{session.COOKIE}={cookie}", "Sec-Fetch-Site": "same-origin"}
    for method, path in (
        ("GET", "/scoring"),
        ("GET", "/history"),
        ("GET", "/metrics"),
        ("POST", "/prediction"),
    ):
        body = {"records": [RECORD]} if method == "POST" else None
        for headers in (HTML, browser):
            answer = httpx.request(method, f"{url}{path}", json=body, headers=headers, timeout=30)
            assert answer.status_code == 401, (method, path)
            assert answer.headers["www-authenticate"] == "Bearer"
            assert answer.json() == {
                "error": "missing or wrong API token",
                "detail": "send 'Authorization: Bearer <token>'",
            }
        right = httpx.request(
            method, f"{url}{path}", json=body, headers={"Authorization": f"Bearer {TOKEN}"}
        )
        assert right.status_code == 200, right.text
    assert httpx.get(f"{url}/dashboard", headers={"X-API-Token": TOKEN}).status_code == 200
    # Nor does the cookie stand for the token in a write to a page's path.
    post = httpx.post(f"{url}/dashboard", headers=browser, timeout=30)
    assert post.status_code == 401 and post.json()["error"] == "missing or wrong API token"


def test_a_wrong_token_shows_the_form_again_with_an_error_and_no_cookie(url: str) -> None:
    answer = _log_in(url, token="not-the-token", page="/docs")
    assert answer.status_code == 401
    assert _is_form(answer)
    assert "Wrong token: try again." in answer.text
    assert 'name="next" value="/docs"' in answer.text
    assert "set-cookie" not in answer.headers
    assert "not-the-token" not in answer.text


def test_the_right_token_sets_a_strict_http_only_cookie_that_opens_the_pages(url: str) -> None:
    answer = _log_in(url, page="/docs")
    assert answer.status_code == 303
    assert answer.headers["location"] == "/docs"
    assert answer.headers["cache-control"] == "no-store"
    cookie = _cookie(answer)
    assert cookie["httponly"] is True
    assert cookie["samesite"].lower() == "strict"
    assert cookie["path"] == "/"
    assert cookie["max-age"] == str(session.LIFETIME_S)
    assert not cookie["secure"]  # plain http: a Secure cookie would be dropped off loopback
    assert TOKEN not in answer.headers["set-cookie"]
    assert TOKEN.lower() not in cookie.value.lower()
    assert re.fullmatch(r"v1\.[0-9]+\.[\w-]{22}\.[\w-]{43}", cookie.value)
    # The pages and what they load open with it ...
    for path in ("/dashboard", "/docs", "/redoc", "/openapi.json"):
        page = _page(url, path, cookie.value)
        assert page.status_code == 200, (path, page.text[:200])
    dashboard = _page(url, "/dashboard", cookie.value)
    assert 'id="f1-chart"' in dashboard.text and not _is_form(dashboard)
    asset = _page(url, "/docs/assets/swagger-ui-bundle.js", cookie.value, Accept="*/*")
    assert asset.status_code == 200 and len(asset.content) > 100


def test_over_https_the_cookie_is_secure(url: str) -> None:
    """Behind a TLS proxy (trusted on 127.0.0.1, as uvicorn trusts it by default) that says
    ``X-Forwarded-Proto: https``, the cookie is ``Secure``, and so is its clearing."""
    answer = _log_in(
        url, **{"X-Forwarded-Proto": "https", "Origin": url.replace("http:", "https:")}
    )
    assert answer.status_code == 303
    assert _cookie(answer)["secure"] is True
    out = httpx.post(
        f"{url}/logout", headers={"X-Forwarded-Proto": "https", "Sec-Fetch-Site": "same-origin"}
    )
    assert _cookie(out)["secure"] is True


def test_expired_tampered_and_foreign_cookies_are_refused(url: str) -> None:
    good = _cookie(_log_in(url)).value
    token = TOKEN.encode()
    version, expiry, nonce, signature = good.split(".")
    flipped = signature[:-1] + ("A" if signature[-1] != "A" else "B")
    refused = {
        "expired": session.issue(token, time.time() - session.LIFETIME_S - 1),
        "signature changed": ".".join([version, expiry, nonce, flipped]),
        "expiry pushed back": ".".join([version, str(int(expiry) + 3600), nonce, signature]),
        "nonce changed": ".".join([version, expiry, nonce[::-1], signature]),
        "signed for years": session.issue(token, time.time() + 365 * 86400),
        "signed by another token": session.issue(b"another-token", time.time()),
        "the token itself": TOKEN,
        "empty": "",
    }
    assert _page(url, "/dashboard", good).status_code == 200
    for why, value in refused.items():
        answer = _page(url, "/dashboard", value)
        assert answer.status_code == 401, why
        assert _is_form(answer), why


def test_a_cookie_from_before_the_token_changed_is_refused(settings: Settings) -> None:
    with in_process(settings) as (first, _):
        old = _cookie(_log_in(first)).value
        assert _page(first, "/dashboard", old).status_code == 200
    with in_process(_with_token(settings, "a-new-token")) as (second, _):
        assert _page(second, "/dashboard", old).status_code == 401
        assert _log_in(second).status_code == 401  # the old token no longer logs in
        new = _cookie(_log_in(second, token="a-new-token")).value
        assert _page(second, "/dashboard", new).status_code == 200


def test_the_login_never_sends_the_browser_to_another_site(url: str) -> None:
    for asked in (
        "https://evil.example/",
        "//evil.example/dashboard",
        "/\\evil.example",
        "/dashboard/../scoring",
        "/scoring",
        "javascript:alert(1)",
        "",
    ):
        answer = _log_in(url, page=asked)
        assert answer.status_code == 303
        assert answer.headers["location"] == "/dashboard", asked
        form = httpx.get(f"{url}/login", params={"next": asked}, timeout=30)
        assert form.status_code == 200 and 'name="next" value="/dashboard"' in form.text


def test_a_login_or_logout_from_another_site_is_refused(url: str) -> None:
    for headers in (
        {"Sec-Fetch-Site": "cross-site"},
        {"Sec-Fetch-Site": "same-site"},  # another port of the same host is the same site
        {"Origin": "http://evil.example"},
        {"Origin": url.rsplit(":", 1)[0] + ":1"},  # same host, another port
        {"Origin": "null"},
    ):
        answer = _log_in(url, **headers)
        assert answer.status_code == 403, headers
        assert "another site" in answer.json()["error"]
        assert "set-cookie" not in answer.headers
        out = httpx.post(f"{url}/logout", headers=headers, timeout=30)
        assert out.status_code == 403 and "set-cookie" not in out.headers
    # A client that is no browser sends neither header, and logs in.
    plain = httpx.post(f"{url}/login", data={"token": TOKEN}, timeout=30)
    assert plain.status_code == 303


def test_the_cookie_is_refused_for_a_request_from_another_page_of_the_same_host(url: str) -> None:
    """``SameSite`` ignores ports: a page on another port of 127.0.0.1 is the same site, so the
    browser sends the cookie; ``Sec-Fetch-Site: same-site`` tells Beryl not to take it."""
    cookie = _cookie(_log_in(url)).value
    assert _page(url, "/dashboard", cookie, **{"Sec-Fetch-Site": "same-origin"}).status_code == 200
    assert _page(url, "/dashboard", cookie, **{"Sec-Fetch-Site": "none"}).status_code == 200
    for site in ("same-site", "cross-site"):
        answer = _page(url, "/dashboard", cookie, **{"Sec-Fetch-Site": site})
        assert answer.status_code == 401 and _is_form(answer), site


def test_logout_clears_the_cookie_and_shows_the_form(url: str) -> None:
    for method, site in (("POST", "same-origin"), ("GET", "none")):
        answer = httpx.request(method, f"{url}/logout", headers={"Sec-Fetch-Site": site})
        assert answer.status_code == 303
        assert answer.headers["location"] == "/login"
        cleared = _cookie(answer)
        assert cleared.value == "" and cleared["max-age"] == "0"
        assert cleared["httponly"] is True and cleared["path"] == "/"
    form = httpx.get(f"{url}/login", headers=HTML, timeout=30)
    assert form.status_code == 200 and _is_form(form)
    assert "www-authenticate" not in form.headers


def test_the_form_takes_only_a_small_form_body(url: str) -> None:
    as_json = httpx.post(f"{url}/login", json={"token": TOKEN}, timeout=30)
    assert as_json.status_code == 415 and "set-cookie" not in as_json.headers
    huge = httpx.post(f"{url}/login", data={"token": TOKEN, "pad": "x" * 5000}, timeout=30)
    assert huge.status_code == 413 and "set-cookie" not in huge.headers
    many = httpx.post(
        f"{url}/login",
        content="&".join(["a=1"] * 20),
        timeout=30,
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert many.status_code == 422


def test_wrong_tokens_are_rate_limited_per_address_and_the_header_still_works(
    settings: Settings,
) -> None:
    with in_process(settings) as (base, _):
        for _ in range(10):
            assert _log_in(base, token="guess").status_code == 401
        held = _log_in(base, token="guess")
        assert held.status_code == 429
        assert 1 <= int(held.headers["retry-after"]) <= 61
        assert "Too many wrong tokens" in held.text
        right = _log_in(base)  # even the right token waits: the limit is on trying
        assert right.status_code == 429 and "set-cookie" not in right.headers
        header = httpx.get(f"{base}/dashboard", headers={"Authorization": f"Bearer {TOKEN}"})
        assert header.status_code == 200


def test_the_limit_counts_each_address_and_forgets_it_after_a_minute() -> None:
    now = [1000.0]
    login = BrowserLogin(TOKEN, clock=lambda: now[0])
    for _ in range(9):
        login.failed("10.0.0.1")
    assert login.wait_s("10.0.0.1") == 0
    login.failed("10.0.0.1")
    assert login.wait_s("10.0.0.1") == 60
    assert login.wait_s("10.0.0.2") == 0
    now[0] += 30
    assert login.wait_s("10.0.0.1") == 30
    now[0] += 30
    assert login.wait_s("10.0.0.1") == 0


def test_the_login_is_there_only_with_a_token_and_outside_the_openapi_document(
    url: str, settings: Settings
) -> None:
    assert httpx.get(f"{url}/login", timeout=30).status_code == 200
    auth = {"Authorization": f"Bearer {TOKEN}"}
    document = httpx.get(f"{url}/openapi.json", headers=auth, timeout=30).json()
    assert "/dashboard" in document["paths"]
    assert not {"/login", "/logout"} & set(document["paths"])
    with in_process(_with_token(settings, None)) as (base, _):
        assert httpx.get(f"{base}/dashboard", headers=HTML).status_code == 200
        assert httpx.get(f"{base}/login").status_code == 404
        assert httpx.post(f"{base}/login", data={"token": "x"}).status_code == 404
        assert httpx.post(f"{base}/logout").status_code == 404


def test_a_cookie_value_is_signed_and_bounded() -> None:
    now = time.time()
    value = session.issue(b"t", now)
    assert session.valid(value, b"t", now)
    assert session.valid(value, b"t", now + session.LIFETIME_S - 1)
    assert not session.valid(value, b"t", now + session.LIFETIME_S + 1)
    assert not session.valid(value, b"u", now)
    assert session.issue(b"t", now) != value  # each login its own cookie
    header = f'other=1; {session.COOKIE}=bad; x=2; {session.COOKIE}="{value}"'
    assert session.values(header) == ["bad", value]
