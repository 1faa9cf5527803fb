"""The ASGI app of `flowsh serve`: the API, the pages, and the guard in front of both.

The guard: a token (Bearer header), or the session cookie a `?token=` link sets (a value of
this server's start, never the token), compared in constant time; the Host header checked
on loopback (a DNS-rebinding page cannot talk to it); POSTs carry the CSRF token and are
refused under --read-only.
"""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from flowsh.errors import FlowshError
from flowsh.web import api, pages
from flowsh.web.config import ServeConfig, is_loopback, secret_matches

HEADERS = [
    (b"x-frame-options", b"DENY"), (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),  # a `?token=` link must not leak onwards
    (b"content-security-policy",
     b"default-src 'self'; img-src 'self' data:; style-src 'self'; frame-ancestors 'none'"),
]


class Guard:
    def __init__(self, app: ASGIApp, cfg: ServeConfig) -> None:
        self.app, self.cfg = app, cfg

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        refusal = self._refuse(request)
        if refusal is not None:
            await refusal(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *HEADERS]
            await send(message)

        await self.app(scope, receive, send_with_headers)

    def _refuse(self, request: Request) -> Response | None:
        cfg, path = self.cfg, request.url.path
        if cfg.loopback:
            host = _hostname(request.headers.get("host") or "")
            if not is_loopback(host):
                return _error(400, f"unexpected Host {host!r} for a loopback server", 2)
        if cfg.token is not None:
            query_token = request.query_params.get("token")
            if request.method == "GET" and secret_matches(query_token, cfg.token):
                # A link with the token logs the browser in; the address bar loses it.
                rest = urlencode([(k, v) for k, v in parse_qsl(request.url.query)
                                  if k != "token"])
                # One leading slash: `//evil.example/` is another site to a browser.
                target = "/" + path.lstrip("/") + (f"?{rest}" if rest else "")
                resp = RedirectResponse(target, 303)
                resp.set_cookie(cfg.cookie_name, cfg.session, httponly=True, samesite="strict",
                                secure=request.url.scheme == "https")
                return resp
            auth = request.headers.get("authorization", "")
            bearer = auth[7:] if auth.lower().startswith("bearer ") else None
            # Starlette's parser, not SimpleCookie: that one stops at another app's cookie
            # with a space or a quote in it (cookies are shared across a host's ports).
            from_cookie = request.cookies.get(cfg.cookie_name)
            if not (secret_matches(bearer, cfg.token)
                    or secret_matches(from_cookie, cfg.session)):
                return _error(401, "this server needs its token: open the URL "
                              "`flowsh serve` printed, or send Authorization: Bearer TOKEN", 2)
        if request.method == "POST":
            length = request.headers.get("content-length", "0")
            if "transfer-encoding" in request.headers or not length.isdigit():
                return _error(411, "a request body needs a Content-Length", 2)
            if int(length) > MAX_BODY:
                return _error(413, f"a request body may be at most {MAX_BODY} bytes", 2)
            if cfg.read_only:
                return _error(403, "this server is read-only (--read-only)", 2)
            # Pages post forms with the token in a field (checked in pages.py).
            if path.startswith("/api/") and not secret_matches(request.headers.get("x-csrf-token"),
                                                      cfg.csrf_token):
                return _error(403, "missing or wrong X-CSRF-Token (GET /api/v1/session)", 2)
        return None


# Params and a form fit in far less; a larger body is refused before it is read.
MAX_BODY = 1024 * 1024


def _hostname(header: str) -> str:
    """The host of a Host header: `[::1]:8765` and `[::1]` give `::1`, `h:80` gives `h`."""
    if header.startswith("["):
        return header[1:].split("]", 1)[0]
    return header.rsplit(":", 1)[0]


def _error(status: int, message: str, code: int) -> Response:
    return JSONResponse({"error": message, "exit_code": code}, status)


async def _flowsh_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, FlowshError)
    if request.url.path.startswith(("/api/", "/metrics")):
        return api.error_response(exc)
    return pages.error_page(request, exc)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if request.url.path.startswith(("/api/", "/metrics")) or exc.status_code != 404:
        return JSONResponse({"error": exc.detail, "exit_code": 4 if exc.status_code == 404
                             else 2}, exc.status_code, headers=exc.headers)
    return pages.not_found(request)


def create_app(cfg: ServeConfig) -> Starlette:
    app = Starlette(
        routes=[*api.ROUTES, *pages.ROUTES],
        middleware=[Middleware(Guard, cfg=cfg)],
        exception_handlers={FlowshError: _flowsh_error, HTTPException: _http_error},
    )
    app.state.cfg = cfg
    return app
