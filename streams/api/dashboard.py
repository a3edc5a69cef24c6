"""The panel's pages: a public sign-in form; the dashboard and its assets behind a token."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import faust
from aiohttp import web as aioweb
from faust.web import Request, Response, View

from streams.api.auth import COOKIE_NAME, AuthError
from streams.api.gate import cross_origin, json_response, starting, unauthorized
from streams.api.tokens import TokenFeed

DASHBOARD_DIR = Path(__file__).resolve().parent / "static"


def _with_headers(body: bytes, content_type: str, headers: dict[str, str]) -> Any:
    return aioweb.Response(body=body, content_type=content_type, charset="utf-8",
                           headers=headers)


def register_dashboard(app: faust.App, token_feed: TokenFeed) -> None:
    """The panel's pages: a public sign-in form; everything else behind a token."""
    files = {name: (DASHBOARD_DIR / name) for name in ("index.html", "app.js", "style.css",
                                                        "login.html", "login.js", "login.css")}
    types = {".html": "text/html", ".js": "text/javascript", ".css": "text/css"}

    def static(name: str) -> Any:
        path = files[name]
        return _with_headers(path.read_bytes(), types[path.suffix], {"Cache-Control": "no-store"})

    @app.page("/dashboard")
    async def dashboard(web: View, request: Request) -> Response:
        return static("index.html")

    @app.page("/dashboard/app.js")
    async def dashboard_js(web: View, request: Request) -> Response:
        return static("app.js")

    @app.page("/dashboard/style.css")
    async def dashboard_css(web: View, request: Request) -> Response:
        return static("style.css")

    @app.page("/dashboard/plotly.min.js")
    async def plotly_js(web: View, request: Request) -> Response:
        body = plotly_bundle()
        return _with_headers(body, "text/javascript", {"Cache-Control": "max-age=86400"})

    _register_login(app, token_feed, lambda: static("login.html"))

    @app.page("/login.js")  # the form's script and style: no inline code under the CSP
    async def login_js(web: View, request: Request) -> Response:
        return static("login.js")

    @app.page("/login.css")
    async def login_css(web: View, request: Request) -> Response:
        return static("login.css")

    @app.page("/favicon.ico")
    async def favicon(web: View, request: Request) -> Response:
        return web.bytes(b"", status=204)  # browsers ask; nothing to show, nothing to leak


def _register_login(app: faust.App, token_feed: TokenFeed, form: Callable[[], Any]) -> None:
    """/login (the form; a token checked and kept in a cookie) and /logout."""

    class Login(View):
        async def get(self, request: Request) -> Response:
            return form()

        async def post(self, request: Request) -> Response:
            """Check a token and keep it in an HttpOnly cookie for the panel's requests."""
            if cross_origin(request):  # type: ignore[arg-type]
                return cross_origin_refused()
            posted = await request.post()  # type: ignore[attr-defined]
            token = str(posted.get("token", "")).strip()
            if not token_feed.ready.is_set():
                return starting()
            try:
                principal = token_feed.book.authenticate(token)
            except AuthError as exc:
                return unauthorized(exc)
            response = json_response(principal.to_json(), 200)
            response.set_cookie(COOKIE_NAME, token, httponly=True, samesite="Strict",
                                path="/", secure=request.secure)  # type: ignore[attr-defined]
            return response

    class Logout(View):
        async def post(self, request: Request) -> Response:
            if cross_origin(request):  # type: ignore[arg-type]
                return cross_origin_refused()
            response = json_response({"signed_out": True}, 200)
            response.del_cookie(COOKIE_NAME, path="/")
            return response

    app.page("/login")(Login)
    app.page("/logout")(Logout)


def cross_origin_refused() -> Any:
    return json_response({"error": "forbidden",
                          "reason": "a sign-in or sign-out from another site"}, 403)


_PLOTLY: list[bytes] = []


def plotly_bundle() -> bytes:
    """plotly.js as the plotly Python package ships it: served by the worker, no CDN."""
    if not _PLOTLY:
        from plotly.offline import get_plotlyjs

        _PLOTLY.append(get_plotlyjs().encode())
    return _PLOTLY[0]
