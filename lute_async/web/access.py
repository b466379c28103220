"""Who may see the dashboard: the holder of its token, as Jupyter does it.

The token (random, printed at start) is given once as ``?token=...``; the gate then sets it as
an HttpOnly, SameSite=Strict cookie and redirects to the same address without it, so the token
leaves the address bar and the history. Later requests carry the cookie (or an
``Authorization: Bearer`` header, for scripts). Every comparison is constant-time. A request
without the token gets 403 and nothing of the dashboard. A form that changes something (cancel)
also carries a CSRF value derived from the token, and its Origin, when sent, must be this host.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from http.cookies import CookieError, SimpleCookie
from typing import Any, Final
from urllib.parse import parse_qsl, urlencode

__all__ = [
    "SECURITY_HEADERS",
    "TokenGate",
    "cookie_name",
    "csrf_value",
    "new_token",
    "same_origin",
]

Scope = dict[str, Any]
Receive = Any
Send = Any

#: Sent with every response: no inline script, nothing from elsewhere, no framing.
SECURITY_HEADERS: Final = [
    (
        b"content-security-policy",
        b"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        b"connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    ),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"cache-control", b"no-store"),
]


def new_token() -> str:
    """A fresh random token (32 bytes, URL-safe)."""
    return secrets.token_urlsafe(32)


def cookie_name(token: str) -> str:
    """The cookie holding ``token``: named after it, so two dashboards on one host (the browser
    keeps cookies per host, not per port) do not overwrite each other's."""
    return "lute_async_token_" + hashlib.sha256(token.encode()).hexdigest()[:12]


def csrf_value(token: str) -> str:
    """The value a control form carries: derived from the token, never the token itself."""
    return hmac.new(token.encode(), b"lute-async dashboard csrf", hashlib.sha256).hexdigest()


def _equal(given: str | None, expected: str) -> bool:
    return given is not None and hmac.compare_digest(given.encode(), expected.encode())


def same_origin(headers: dict[str, str]) -> bool:
    """True unless the request says it comes from another origin than the host it asks."""
    origin = headers.get("origin")
    if origin is None:
        return True
    host = headers.get("host", "")
    return origin in (f"http://{host}", f"https://{host}")


class TokenGate:
    """ASGI middleware: only requests with the token reach ``app``."""

    def __init__(self, app: Any, token: str, cookie: str) -> None:
        self.app = app
        self.token = token
        self.cookie = cookie

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":  # none served
            await send({"type": "websocket.close", "code": 1008})
            return
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {
            key.decode("latin-1").lower(): value.decode("latin-1")
            for key, value in scope.get("headers", [])
        }
        query = parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
        given = [value for key, value in query if key == "token"]
        if given:
            if len(given) == 1 and _equal(given[0], self.token):
                rest = urlencode([(key, value) for key, value in query if key != "token"])
                path = scope.get("raw_path") or scope.get("path", "/").encode("utf-8")
                await self._redirect(send, path + (f"?{rest}".encode() if rest else b""))
            else:
                await self._forbidden(send)
            return
        if _equal(self._cookie(headers), self.token) or _equal(self._bearer(headers), self.token):
            await self.app(scope, receive, _with_headers(send))
            return
        await self._forbidden(send)

    def _cookie(self, headers: dict[str, str]) -> str | None:
        jar: SimpleCookie = SimpleCookie()
        try:
            jar.load(headers.get("cookie", ""))
        except CookieError:
            return None
        morsel = jar.get(self.cookie)
        return morsel.value if morsel is not None else None

    @staticmethod
    def _bearer(headers: dict[str, str]) -> str | None:
        scheme, _, value = headers.get("authorization", "").partition(" ")
        return value.strip() if scheme.lower() == "bearer" else None

    async def _redirect(self, send: Send, location: bytes) -> None:
        cookie = f"{self.cookie}={self.token}; Path=/; HttpOnly; SameSite=Strict"
        headers = [
            (b"location", location),
            (b"set-cookie", cookie.encode()),
            (b"content-length", b"0"),
            *SECURITY_HEADERS,
        ]
        await send({"type": "http.response.start", "status": 303, "headers": headers})
        await send({"type": "http.response.body", "body": b""})

    @staticmethod
    async def _forbidden(send: Send) -> None:
        body = (
            b"403 Forbidden: this lute-async dashboard needs its token; open the address "
            b"printed when it started (it ends in ?token=...).\n"
        )
        headers = [
            (b"content-type", b"text/plain; charset=utf-8"),
            (b"content-length", str(len(body)).encode()),
            *SECURITY_HEADERS,
        ]
        await send({"type": "http.response.start", "status": 403, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def _with_headers(send: Send) -> Send:
    """``send`` adding the security headers to the response's start."""

    async def sending(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            message = {**message, "headers": [*message.get("headers", []), *SECURITY_HEADERS]}
        await send(message)

    return sending
