"""Signed session cookies, so a browser can open the API's own pages when ``api.token`` is set.

A cookie's value is ``v1.<expiry>.<nonce>.<signature>``: the expiry in Unix seconds, 16 random
bytes, and an HMAC-SHA256 of both keyed by the API token. It never holds the token, and
learning one tells nothing about the token that a wrong guess does not. Changing the token
invalidates every cookie at once; the expiry is checked here, by the server, not only by the
browser's ``Max-Age``. Cookies hold no state on the server, so every worker accepts the cookies
any other worker issued, and a restart keeps them.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets

COOKIE = "beryl_session"
LIFETIME_S = 12 * 60 * 60
_CLOCK_SLACK_S = 60  # a server clock set back a little does not refuse fresh cookies
_VALUE = re.compile(r"v1\.([0-9]{1,12})\.([A-Za-z0-9_-]{22})\.([A-Za-z0-9_-]{43})")
_MAX_CANDIDATES = 8  # cookies of this name looked at in one request


def _signature(token: bytes, expiry: int, nonce: str) -> str:
    message = f"beryl-session\x00v1\x00{expiry}\x00{nonce}".encode("ascii")
    digest = hmac.new(token, message, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def issue(token: bytes, now: float) -> str:
    """A new cookie value for ``token``, valid for ``LIFETIME_S`` from ``now``."""
    expiry = int(now) + LIFETIME_S
    nonce = base64.urlsafe_b64encode(secrets.token_bytes(16)).rstrip(b"=").decode("ascii")
    return f"v1.{expiry}.{nonce}.{_signature(token, expiry, nonce)}"


def valid(value: str, token: bytes, now: float) -> bool:
    """``value`` was issued for ``token`` and has not expired at ``now``.

    An expiry further ahead than a fresh cookie's is refused too: only the holder of the token
    could have signed it, but it is no cookie Beryl issues.
    """
    match = _VALUE.fullmatch(value)
    if match is None:
        return False
    expiry, nonce, signature = int(match[1]), match[2], match[3]
    if not now < expiry <= now + LIFETIME_S + _CLOCK_SLACK_S:
        return False
    return hmac.compare_digest(signature, _signature(token, expiry, nonce))


def values(cookie_header: str) -> list[str]:
    """The values of the session cookies in a ``Cookie`` header (a browser may send several)."""
    found = []
    for pair in cookie_header.split(";"):
        name, _, value = pair.strip().partition("=")
        if name == COOKIE:
            found.append(value.strip('"'))
            if len(found) == _MAX_CANDIDATES:
                break
    return found
