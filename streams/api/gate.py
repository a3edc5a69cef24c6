"""The access gate: one aiohttp middleware that decides, for every path, whether a token
is needed and whose (:func:`streams.api.auth.endpoint_access`: deny by default)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web as aioweb
from faust.web import Request

from streams.api.auth import (
    COOKIE_NAME,
    Access,
    AuthError,
    Principal,
    bearer_token,
    endpoint_access,
)
from streams.api.tokens import TokenFeed

Handler = Callable[[aioweb.Request], Awaitable[aioweb.StreamResponse]]
PRINCIPAL = aioweb.RequestKey("principal", Principal)  # set by the access gate


def json_response(body: dict[str, Any], status: int, **headers: str) -> Any:
    """An aiohttp response (what faust's Response is at run time) with any headers."""
    return aioweb.Response(body=orjson.dumps(body), status=status,
                           content_type="application/json", headers=headers)


def auth_middleware(token_feed: TokenFeed) -> Any:
    """Who may call what: PUBLIC paths pass, every other one needs a valid token, and
    operator paths an operator's. The caller is put in ``request["principal"]``."""

    @aioweb.middleware
    async def check(request: aioweb.Request, handler: Handler) -> aioweb.StreamResponse:
        path = request.path
        if path == "/":
            raise aioweb.HTTPFound("/dashboard")
        if any(segment in (".", "..") for segment in path.split("/")):
            # Never resolved by aiohttp's router, but a path that names one place and
            # reaches another is no request a client of ours makes.
            return json_response({"error": "bad path", "reason": "dot segments"}, 400)
        access = endpoint_access(path)
        if access is Access.PUBLIC:
            return await _json_errors(handler, request)
        if not token_feed.ready.is_set():
            return starting()
        try:
            text = bearer_token(request.headers.get("Authorization"),
                                request.cookies.get(COOKIE_NAME))
            principal = token_feed.book.authenticate(text)
        except AuthError as exc:
            if path.startswith("/dashboard") and "text/html" in request.headers.get("Accept", ""):
                raise aioweb.HTTPSeeOther("/login") from None  # a browser: to the sign-in form
            return unauthorized(exc)
        if access is Access.OPERATOR and not principal.is_operator:
            return json_response({"error": "forbidden",
                                  "reason": "this endpoint needs an operator token"}, 403)
        request[PRINCIPAL] = principal
        return await _json_errors(handler, request)

    return check


def starting() -> Any:
    """503 until this worker has read the whole token store."""
    return json_response({"error": "starting", "reason": "reading the token store"}, 503,
                         **{"Retry-After": "1"})


def unauthorized(exc: AuthError) -> Any:
    return json_response({"error": "unauthorized", "reason": str(exc)}, 401,
                         **{"WWW-Authenticate": 'Bearer realm="ioacct"'})


async def _json_errors(handler: Handler, request: aioweb.Request) -> aioweb.StreamResponse:
    """aiohttp's own errors (no such route, wrong method) as JSON, like every other answer."""
    try:
        return await handler(request)
    except aioweb.HTTPException as exc:
        if exc.status < 400:
            raise
        return json_response({"error": exc.reason.lower()}, exc.status)


def principal_of(request: Request) -> Principal:
    principal = request.get(PRINCIPAL)  # type: ignore[attr-defined]
    assert isinstance(principal, Principal), "auth_middleware did not run"
    return principal
