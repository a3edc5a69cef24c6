"""The access gate as aiohttp runs it (no faust, no broker): rate limits with 429 and
Retry-After per token, the security headers on every answer, the cross-origin check."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from types import SimpleNamespace
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer, make_mocked_request
from yarl import URL

from streams.api.auth import OPERATOR, TENANT, TokenBook, new_token
from streams.api.gate import (
    SECURITY_HEADERS,
    RateLimits,
    add_security_headers,
    auth_middleware,
    cross_origin,
)
from streams.api.ratelimit import Limit

NOW = 1_795_000_000_000_000_000


class FakeClock:
    def __init__(self) -> None:
        self.now_s = 1000.0

    def __call__(self) -> float:
        return self.now_s


def _feed() -> tuple[Any, dict[str, str]]:
    book, texts = TokenBook(), {}
    for name, role, tenant in (("op", OPERATOR, None), ("a", TENANT, "a"), ("b", TENANT, "b")):
        text, record = new_token(role, tenant, NOW)
        book.apply(record)
        texts[name] = text
    ready = asyncio.Event()
    ready.set()
    return SimpleNamespace(ready=ready, book=book), texts


async def _ok(request: web.Request) -> web.Response:
    return web.json_response({"ok": True})


def _run(limits: RateLimits,
         scenario: Callable[[TestClient[Any, Any], dict[str, str]], Awaitable[None]]) -> None:
    async def main() -> None:
        feed, texts = _feed()
        app = web.Application(middlewares=[auth_middleware(feed, limits)])
        app.on_response_prepare.append(add_security_headers)
        app.router.add_get("/whoami", _ok)
        app.router.add_get("/status", _ok)
        app.router.add_get("/login", _ok)
        async with TestClient(TestServer(app)) as client:
            await scenario(client, texts)

    asyncio.run(main())


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_a_token_over_its_burst_gets_429_with_retry_after_and_others_pass() -> None:
    clock = FakeClock()
    limits = RateLimits(Limit(0.5, 3), Limit(100.0, 10), clock=clock)

    async def scenario(client: TestClient[Any, Any], texts: dict[str, str]) -> None:
        statuses = [(await client.get("/whoami", headers=_auth(texts["a"]))).status
                    for _ in range(4)]
        assert statuses == [200, 200, 200, 429]
        refused = await client.get("/whoami", headers=_auth(texts["a"]))
        assert refused.status == 429 and refused.headers["Retry-After"] == "2"  # 1 / 0.5 s
        assert (await refused.json())["error"] == "too many requests"
        # Another tenant's token and the operator's (its own, higher limit) still pass.
        assert (await client.get("/whoami", headers=_auth(texts["b"]))).status == 200
        for _ in range(10):
            assert (await client.get("/status", headers=_auth(texts["op"]))).status == 200
        assert (await client.get("/status", headers=_auth(texts["op"]))).status == 429
        clock.now_s += 2.0  # the wait it was told: one request refilled
        assert (await client.get("/whoami", headers=_auth(texts["a"]))).status == 200
        assert (await client.get("/whoami", headers=_auth(texts["a"]))).status == 429
        # Bad tokens are refused before the limiter (they have no bucket) and public paths
        # are not limited.
        assert (await client.get("/whoami", headers=_auth("nonsense"))).status == 401
        assert (await client.get("/login")).status == 200
        assert limits.status() == {"requests_allowed": 3 + 1 + 10 + 1,
                                   "requests_refused_429": 2 + 1 + 1, "tokens_tracked": 3}

    _run(limits, scenario)


def test_every_answer_carries_the_security_headers() -> None:
    limits = RateLimits(Limit(1.0, 1), Limit(1.0, 1), clock=FakeClock())

    async def scenario(client: TestClient[Any, Any], texts: dict[str, str]) -> None:
        answers = [
            await client.get("/whoami", headers=_auth(texts["a"])),  # 200
            await client.get("/whoami", headers=_auth(texts["a"])),  # 429
            await client.get("/whoami"),  # 401
            await client.get("/status", headers=_auth(texts["b"])),  # 403
            await client.get(URL("/volumes/%2E%2E/status", encoded=True)),  # 400: dots
            await client.get("/no/such", headers=_auth(texts["op"])),  # 404
            await client.get("/", allow_redirects=False),  # 302 to the panel
            await client.get("/login"),
        ]
        assert [a.status for a in answers] == [200, 429, 401, 403, 400, 404, 302, 200]
        for answer in answers:
            for name, value in SECURITY_HEADERS.items():
                assert answer.headers.get(name) == value, (answer.status, name)
        csp = SECURITY_HEADERS["Content-Security-Policy"]
        assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp

    _run(limits, scenario)


@pytest.mark.parametrize(("headers", "refused"), [
    ({}, False),  # no browser: curl, the CLI, a test's urllib
    ({"Origin": "http://127.0.0.1:6066"}, False),
    ({"Origin": "http://127.0.0.1:6066/"}, False),
    ({"Origin": "http://evil.example"}, True),
    ({"Origin": "http://127.0.0.1:6067"}, True),
    ({"Origin": "https://127.0.0.1:6066"}, True),
    ({"Origin": "null"}, True),  # a sandboxed frame or a file: page
    ({"Sec-Fetch-Site": "cross-site"}, True),
    ({"Sec-Fetch-Site": "same-site", "Origin": "http://127.0.0.1:6066"}, True),
    ({"Sec-Fetch-Site": "same-origin", "Origin": "http://127.0.0.1:6066"}, False),
])
def test_a_post_from_another_origin_is_cross_origin(headers: dict[str, str],
                                                    refused: bool) -> None:
    request = make_mocked_request("POST", "/login",
                                  headers={"Host": "127.0.0.1:6066", **headers})
    assert cross_origin(request) is refused
