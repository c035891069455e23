"""A login form for the API's own pages, so a browser can open them when ``api.token`` is set.

A browser that opens ``/dashboard``, ``/docs`` or ``/redoc`` without the token gets a small
offline form (401) instead of the JSON 401 that API clients get. ``POST /login`` checks the
token as the header check does and, when it is right, sets a session cookie
(``beryl.api.session``) and sends the browser back to the page (303). ``/logout`` clears it.

Which requests a cookie authorises: only ``GET`` (and ``HEAD``) of the pages, the documents
and assets they load (``/openapi.json``, ``/docs/assets/...``), and only when the browser says
the request came from Beryl's own pages or from the user (``Sec-Fetch-Site`` ``same-origin``
or ``none``, or no such header). Every other route still needs the token in a header.
``SameSite=Strict`` keeps the cookie from requests started by other sites, but a "site" is
the host without its port, so a page served from another port of the same host (any local
program's page on ``127.0.0.1``) is same-site and its requests would carry the cookie; a
cookie that reads pages only, never predicts or reads a workspace file, and is refused when
``Sec-Fetch-Site`` says ``same-site``, keeps such a page from using it. The prediction fast
path checks only the header, which is the same rule: it never serves a page.

The cookie is ``HttpOnly``, ``SameSite=Strict``, ``Path=/``, lives 12 hours (the server checks
the expiry too), and is ``Secure`` whenever the request came over https (directly, or
from a trusted proxy that says so in ``X-Forwarded-Proto``). Over plain http it is not
``Secure``: Chromium keeps such a cookie from ``localhost`` and ``127.0.0.1`` but drops it from
any other host, where no login would then hold.
"""

from __future__ import annotations

import html
import time
from collections import deque
from collections.abc import Callable, Mapping
from typing import Annotated
from urllib.parse import parse_qsl, urlsplit

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.types import Scope

from beryl.api import session
from beryl.api.app import DOCS_ASSETS, ApiError, authorised

router = APIRouter(tags=["login"])

PAGES = ("/dashboard", "/docs", "/redoc")  # where a browser without the token gets the form
# What a cookie authorises: the pages and what they load (Swagger UI fetches the document).
_COOKIE_PATHS = frozenset({*PAGES, "/openapi.json", "/docs/oauth2-redirect"})
_OWN_FETCHES = frozenset({"same-origin", "none"})  # Sec-Fetch-Site of Beryl's pages, the user
_MAX_FORM_BYTES = 4096
_FAILURES = 10  # wrong tokens from one address in _WINDOW_S before the form waits
_WINDOW_S = 60.0
_ADDRESSES = 4096  # addresses remembered; past that, new ones share one allowance

_STYLE = """
body { font: 16px/1.4 system-ui, sans-serif; background: #f4f6f8; color: #1d2733; margin: 0; }
main { max-width: 22rem; margin: 12vh auto; background: #fff; padding: 2rem;
       border-radius: 8px; box-shadow: 0 1px 4px rgb(0 0 0 / 15%); }
h1 { margin: 0 0 .5rem; font-size: 1.4rem; }
label { display: block; margin: 1rem 0 .3rem; font-weight: 600; }
input { box-sizing: border-box; width: 100%; padding: .5rem; font: inherit; }
button { margin-top: 1rem; padding: .5rem 1.2rem; font: inherit; cursor: pointer; }
.error { color: #b00020; margin: .8rem 0 0; }
"""
_CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)


def login_form(page: str, *, status: int, error: str | None = None) -> HTMLResponse:
    """The login form, which sends the browser to ``page`` (one of ``PAGES``) once it is in."""
    shown = f'<p class="error" role="alert">{html.escape(error)}</p>' if error else ""
    body = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Beryl: log in</title><style>{_STYLE}</style></head>
<body><main>
<h1>Beryl</h1>
<p>This page needs the API token (<code>api.token</code> in the config).</p>
<form id="login" method="post" action="/login">
<input type="hidden" name="next" value="{html.escape(safe_page(page))}">
<label for="token">API token</label>
<input id="token" name="token" type="password" autocomplete="current-password" required autofocus>
{shown}
<button type="submit">Log in</button>
</form>
</main></body></html>
"""
    headers = {
        "Cache-Control": "no-store",
        "Content-Security-Policy": _CSP,
        "X-Content-Type-Options": "nosniff",
    }
    if status == 401:
        headers["WWW-Authenticate"] = "Bearer"
    return HTMLResponse(body, status_code=status, headers=headers)


def safe_page(asked: str | None) -> str:
    """``asked`` if it is one of Beryl's pages, else the dashboard: never another site."""
    return asked if asked in PAGES else PAGES[0]


class BrowserLogin:
    """The browser side of token authentication: cookies, the form, and its rate limit."""

    def __init__(self, token: str, clock: Callable[[], float] = time.time) -> None:
        self.token = token.encode("ascii")
        self.clock = clock
        self._failures: dict[str, deque[float]] = {}

    def admits(self, scope: Scope, headers: Mapping[str, str]) -> bool:
        """A request without the token header that a valid cookie authorises (see the module)."""
        path = scope["path"]
        if scope["method"] not in ("GET", "HEAD"):
            return False
        if path not in _COOKIE_PATHS and not path.startswith(f"{DOCS_ASSETS}/"):
            return False
        if headers.get("sec-fetch-site", "none").lower() not in _OWN_FETCHES:
            return False
        now = self.clock()
        return any(
            session.valid(value, self.token, now)
            for value in session.values(headers.get("cookie", ""))
        )

    def refusal(self, scope: Scope, headers: Mapping[str, str]) -> HTMLResponse | None:
        """The form for a browser opening one of the pages; ``None``: the JSON 401."""
        if (
            scope["method"] in ("GET", "HEAD")
            and scope["path"] in PAGES
            and "text/html" in headers.get("accept", "").lower()
        ):
            return login_form(scope["path"], status=401)
        return None

    def wait_s(self, address: str) -> float:
        """Seconds before ``address`` may try another token (0: now)."""
        now = self.clock()
        tried = self._failures.get(self._key(address, now), ())
        recent = [t for t in tried if t > now - _WINDOW_S]
        return 0.0 if len(recent) < _FAILURES else min(recent[0] + _WINDOW_S - now, _WINDOW_S)

    def failed(self, address: str) -> None:
        now = self.clock()
        key = self._key(address, now)
        self._failures.setdefault(key, deque(maxlen=_FAILURES)).append(now)

    def succeeded(self, address: str) -> None:
        self._failures.pop(address, None)

    def _key(self, address: str, now: float) -> str:
        """Where ``address``'s wrong tokens are counted: its own entry while there is room
        (entries whose window has passed make room), else one shared by the newcomers."""
        if address in self._failures or len(self._failures) < _ADDRESSES:
            return address
        for known in [a for a, t in self._failures.items() if t[-1] <= now - _WINDOW_S]:
            del self._failures[known]
        return address if len(self._failures) < _ADDRESSES else ""


async def _login(request: Request) -> BrowserLogin:
    login: BrowserLogin = request.app.state.login
    return login


LoginDep = Annotated[BrowserLogin, Depends(_login)]


def _refuse_other_sites(request: Request) -> None:
    """403 unless the request came from Beryl's own pages (or the user, or a non-browser
    client): ``Sec-Fetch-Site`` and ``Origin``, when sent, must both say so."""
    site = request.headers.get("sec-fetch-site")
    origin = request.headers.get("origin")
    if site is not None and site.lower() not in _OWN_FETCHES:
        shown = f"Sec-Fetch-Site: {site[:40]!r}"
    elif origin is not None and _authority(urlsplit(origin).netloc) != _authority(
        request.headers.get("host", "")
    ):
        shown = f"Origin: {origin[:100]!r}"
    else:
        return
    raise ApiError(
        403,
        f"{request.url.path} is refused from a page on another site ({shown})",
        "log in from Beryl's own login form",
    )


def _authority(netloc: str) -> str:
    """``host[:port]`` as compared: lower case, without a default port."""
    netloc = netloc.strip().lower()
    for default in (":80", ":443"):
        netloc = netloc.removesuffix(default)
    return netloc


async def _form(request: Request) -> dict[str, str]:
    """The fields of a small form-encoded body (decoded byte for byte, as Latin-1)."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "application/x-www-form-urlencoded":
        raise ApiError(
            415, "POST /login takes a form", "send application/x-www-form-urlencoded token=..."
        )
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > _MAX_FORM_BYTES:
            raise ApiError(413, f"the login form is larger than {_MAX_FORM_BYTES} bytes")
    try:
        fields = parse_qsl(body.decode("latin-1"), encoding="latin-1", max_num_fields=8)
    except ValueError as exc:
        raise ApiError(422, "the login form has too many fields", {"field": "token"}) from exc
    return dict(fields)


def _client(request: Request) -> str:
    return request.client.host if request.client else ""


@router.get("/login", include_in_schema=False, response_class=HTMLResponse)
async def login_page(page: Annotated[str | None, Query(alias="next")] = None) -> HTMLResponse:
    """The login form on its own (where logging out leads)."""
    return login_form(safe_page(page), status=200)


@router.post("/login", include_in_schema=False)
async def log_in(request: Request, login: LoginDep) -> Response:
    """Check the token from the form; if right, set the session cookie and go to the page."""
    _refuse_other_sites(request)
    form = await _form(request)
    page = safe_page(form.get("next"))
    address = _client(request)
    wait = login.wait_s(address)
    if wait > 0:
        answer = login_form(page, status=429, error="Too many wrong tokens: wait a minute.")
        answer.headers["Retry-After"] = str(int(wait) + 1)
        return answer
    if not authorised({"x-api-token": form.get("token", "").strip()}, login.token):
        login.failed(address)
        return login_form(page, status=401, error="Wrong token: try again.")
    login.succeeded(address)
    response = RedirectResponse(page, status_code=303, headers={"Cache-Control": "no-store"})
    response.set_cookie(
        session.COOKIE,
        session.issue(login.token, login.clock()),
        max_age=session.LIFETIME_S,
        path="/",
        secure=request.url.scheme == "https",
        httponly=True,
        samesite="strict",
    )
    return response


@router.api_route("/logout", methods=["GET", "POST"], include_in_schema=False)
async def log_out(request: Request) -> Response:
    """Clear the session cookie and show the form again."""
    _refuse_other_sites(request)
    response = RedirectResponse("/login", status_code=303, headers={"Cache-Control": "no-store"})
    response.delete_cookie(
        session.COOKIE,
        path="/",
        secure=request.url.scheme == "https",
        httponly=True,
        samesite="strict",
    )
    return response
