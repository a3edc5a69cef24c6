"""The access gate: one aiohttp middleware that decides, for every path, whether a token
is needed and whose (:func:`streams.api.auth.endpoint_access`: deny by default), and how
often a token may call (:mod:`streams.api.ratelimit`); the security headers of every answer.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
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
from streams.api.ratelimit import Limit, RateLimiter, retry_after_s
from streams.api.tokens import TokenFeed

Handler = Callable[[aioweb.Request], Awaitable[aioweb.StreamResponse]]
PRINCIPAL = aioweb.RequestKey("principal", Principal)  # set by the access gate
TOKEN = aioweb.RequestKey("token", str)  # the token it checked: what a forward carries

# The panel serves its own JS, CSS and plotly: nothing from elsewhere, never in a frame.
# plotly.js adds <style> rules of its own at run time, hence style-src 'unsafe-inline'.
CONTENT_SECURITY_POLICY = ("default-src 'self'; style-src 'self' 'unsafe-inline'; "
                           "img-src 'self' data:; object-src 'none'; base-uri 'none'; "
                           "form-action 'self'; frame-ancestors 'none'")
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


async def add_security_headers(request: aioweb.Request, response: aioweb.StreamResponse
                               ) -> None:
    """``on_response_prepare``: every answer, errors and redirects included."""
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    if request.secure:
        response.headers.setdefault("Strict-Transport-Security", "max-age=31536000")


def cross_origin(request: aioweb.Request) -> bool:
    """A browser's POST from another site: its Origin is not this server's (a client that
    is no browser sends no Origin, and no browser omits it on a cross-origin POST)."""
    if request.headers.get("Sec-Fetch-Site", "") in ("cross-site", "same-site"):
        return True
    origin = request.headers.get("Origin")
    if origin is None:
        return False
    return origin.rstrip("/").lower() != f"{request.scheme}://{request.host}".lower()


@dataclass
class RateLimits:
    """Per-token request limits: tenants' and operators' (settings ``web_*rate*``)."""

    tenant: Limit
    operator: Limit
    limiter: RateLimiter = field(default_factory=RateLimiter)
    clock: Callable[[], float] = time.monotonic

    def wait_s(self, principal: Principal) -> float:
        limit = self.operator if principal.is_operator else self.tenant
        return self.limiter.take(principal.token_id, limit, self.clock())

    def status(self) -> dict[str, int]:
        return {"requests_allowed": self.limiter.allowed,
                "requests_refused_429": self.limiter.refused,
                "tokens_tracked": len(self.limiter)}


def json_response(body: dict[str, Any], status: int, **headers: str) -> Any:
    """An aiohttp response (what faust's Response is at run time) with any headers."""
    return aioweb.Response(body=orjson.dumps(body), status=status,
                           content_type="application/json", headers=headers)


def body_response(body: bytes, status: int, content_type: str, headers: dict[str, str]
                  ) -> Any:
    """An aiohttp response of ready bytes (what faust's Response is at run time)."""
    return aioweb.Response(body=body, status=status, content_type=content_type,
                           headers=headers)


def auth_middleware(token_feed: TokenFeed, limits: RateLimits) -> Any:
    """Who may call what: PUBLIC paths pass, every other one needs a valid token, and
    operator paths an operator's; a token over its rate gets 429. The caller is put in
    ``request[PRINCIPAL]``."""

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
        wait_s = limits.wait_s(principal)
        if wait_s > 0:
            return json_response({"error": "too many requests",
                                  "reason": f"this token's rate limit; retry in {wait_s:.2f} s"},
                                 429, **{"Retry-After": retry_after_s(wait_s)})
        request[PRINCIPAL] = principal
        request[TOKEN] = text
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
