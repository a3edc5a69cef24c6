"""Requests between workers: a volume view asked of a worker that does not own the volume
is forwarded to its owner, but only to a current member of the consumer group, and with
nothing of the caller's but its token (no cookie, no other header).

faust's own ``table_route`` forwards every header of the caller (its cookie included) to
whatever URL the assignment names, keeping the caller's scheme; this replaces it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from functools import wraps
from ssl import SSLContext
from typing import Any

from aiohttp import ClientError, ClientTimeout
from faust.web import Request, Response, View
from yarl import URL

from streams.api.gate import TOKEN, body_response, json_response

FORWARD_TIMEOUT_S = 10.0
# The owner's answer headers a caller needs (the rest, e.g. its cookies, stay behind).
RELAYED_HEADERS = ("Retry-After", "WWW-Authenticate")


class NotAMember(LookupError):
    """The assignment names an owner URL that is no member of the group."""


def url_ident(url: URL) -> tuple[str, str, int]:
    """(scheme, host, port): what makes two URLs name the same worker."""
    scheme = url.scheme or "http"
    return scheme, (url.host or "").lower(), int(url.port or (443 if scheme == "https" else 80))


def forward_target(owner: URL, members: Iterable[URL | str], me: URL, rel_url: URL
                   ) -> URL | None:
    """The URL to forward a request to, or None when this worker owns it.

    ``members``: the canonical URLs of the group's members as the assignment lists them;
    an owner outside them (or not http/https, or with credentials in it) is refused.
    """
    if url_ident(owner) == url_ident(me):
        return None
    known = {url_ident(URL(str(m))) for m in members}
    if (owner.scheme not in ("http", "https") or owner.user or owner.password
            or url_ident(owner) not in known):
        raise NotAMember(f"{owner} is not a member of the consumer group")
    # The caller's path and query byte for byte (a decoded %2F would name another path).
    return URL.build(scheme=owner.scheme, host=owner.raw_host or "", port=owner.port,
                     path=rel_url.raw_path, query_string=rel_url.raw_query_string,
                     encoded=True)


def forward_headers(token: str) -> dict[str, str]:
    """What the owner gets of the caller: its token, so that it checks the same one."""
    return {"Authorization": f"Bearer {token}", "Accept": "application/json"}


ViewFun = Callable[..., Awaitable[Response]]


def owner_routed(app: Any, table: Any, match_info: str, ssl_context: SSLContext | None = None
                 ) -> Callable[[ViewFun], ViewFun]:
    """Like faust's ``app.table_route(table, match_info=...)``, with the rules above."""

    def decorator(fun: ViewFun) -> ViewFun:
        @wraps(fun)
        async def get(view: View, request: Request, *args: Any, **kwargs: Any) -> Response:
            key = request.match_info[match_info]
            try:
                owner = app.router.key_store(table.name, key)
                members = list(app.router.tables_metadata())
                target = forward_target(URL(str(owner)), members, URL(str(app.conf.canonical_url)),
                                        request.rel_url)  # type: ignore[attr-defined]
            except KeyError:  # no assignment yet
                return json_response({"error": "starting", "reason": "no owner assigned yet"},
                                     503, **{"Retry-After": "1"})
            except NotAMember as exc:
                return json_response({"error": "no owner", "reason": str(exc)}, 503)
            if target is None:
                return await fun(view, request, *args, **kwargs)
            return await _forward(app, target, request, ssl_context)

        return get

    return decorator


async def _forward(app: Any, target: URL, request: Request, ssl_context: SSLContext | None
                   ) -> Response:
    token = request.get(TOKEN)  # type: ignore[attr-defined]
    assert isinstance(token, str), "auth_middleware did not run"
    try:
        async with app.http_client.request(
                method="GET", url=target, headers=forward_headers(token), allow_redirects=False,
                ssl=ssl_context if ssl_context is not None else True,
                timeout=ClientTimeout(total=FORWARD_TIMEOUT_S)) as answer:
            body = await answer.read()
            relayed = {k: answer.headers[k] for k in RELAYED_HEADERS if k in answer.headers}
            return body_response(body, answer.status, answer.content_type, relayed)
    except (ClientError, TimeoutError) as exc:
        return json_response({"error": "owner unreachable", "worker": str(target.origin()),
                              "reason": f"{type(exc).__name__}: {exc}"}, 502)
