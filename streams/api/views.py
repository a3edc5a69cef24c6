"""HTTP views of a worker, behind bearer-token access control (docs/access.md).

Volume views are routed to the worker that owns the volume (faust forwards the caller's
headers, so the owner checks the same token); /status and /metrics describe the worker
that answers. One aiohttp middleware decides, for every path, whether a token is needed
and whose (:func:`streams.api.auth.endpoint_access`: deny by default); the volume views then
answer a volume of another tenant exactly as a volume that does not exist.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import ClientError, ClientTimeout
from aiohttp import web as aioweb
from faust.exceptions import ConsumerNotStarted
from faust.web import Request, Response, View

from streams.api.auth import (
    COOKIE_NAME,
    Access,
    AuthError,
    Principal,
    bearer_token,
    endpoint_access,
)
from streams.core.counters import VolumeState
from streams.core.events import id_error
from streams.core.monitoring import PROMETHEUS_CONTENT_TYPE, prometheus_text
from streams.core.times import NS_PER_S, parse_time_ns
from streams.core.windows.acc import WINDOW_NAMES, window_stats

if TYPE_CHECKING:
    from streams.pipeline.app import Pipeline

DASHBOARD_DIR = Path(__file__).resolve().parent / "static"
Handler = Callable[[aioweb.Request], Awaitable[aioweb.StreamResponse]]
PRINCIPAL = aioweb.RequestKey("principal", Principal)  # set by the access gate


def _json_response(body: dict[str, Any], status: int, **headers: str) -> Any:
    """An aiohttp response (what faust's Response is at run time) with any headers."""
    return aioweb.Response(body=orjson.dumps(body), status=status,
                           content_type="application/json", headers=headers)


def _with_headers(body: bytes, content_type: str, headers: dict[str, str]) -> Any:
    return aioweb.Response(body=body, content_type=content_type, charset="utf-8",
                           headers=headers)


def auth_middleware(p: Pipeline) -> Any:
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
            return _json_response({"error": "bad path", "reason": "dot segments"}, 400)
        access = endpoint_access(path)
        if access is Access.PUBLIC:
            return await _json_errors(handler, request)
        if not p.token_feed.ready.is_set():
            return _starting()
        try:
            text = bearer_token(request.headers.get("Authorization"),
                                request.cookies.get(COOKIE_NAME))
            principal = p.token_feed.book.authenticate(text)
        except AuthError as exc:
            if path.startswith("/dashboard") and "text/html" in request.headers.get("Accept", ""):
                raise aioweb.HTTPSeeOther("/login") from None  # a browser: to the sign-in form
            return _unauthorized(exc)
        if access is Access.OPERATOR and not principal.is_operator:
            return _json_response({"error": "forbidden",
                                   "reason": "this endpoint needs an operator token"}, 403)
        request[PRINCIPAL] = principal
        return await _json_errors(handler, request)

    return check


def _starting() -> Any:
    """503 until this worker has read the whole token store."""
    return _json_response({"error": "starting", "reason": "reading the token store"}, 503,
                          **{"Retry-After": "1"})


def _unauthorized(exc: AuthError) -> Any:
    return _json_response({"error": "unauthorized", "reason": str(exc)}, 401,
                          **{"WWW-Authenticate": 'Bearer realm="ioacct"'})


async def _json_errors(handler: Handler, request: aioweb.Request) -> aioweb.StreamResponse:
    """aiohttp's own errors (no such route, wrong method) as JSON, like every other answer."""
    try:
        return await handler(request)
    except aioweb.HTTPException as exc:
        if exc.status < 400:
            raise
        return _json_response({"error": exc.reason.lower()}, exc.status)


def principal_of(request: Request) -> Principal:
    principal = request.get(PRINCIPAL)  # type: ignore[attr-defined]
    assert isinstance(principal, Principal), "auth_middleware did not run"
    return principal


def register_views(p: Pipeline) -> None:
    app = p.app

    @app.page("/volumes/{volume_id}/counters")
    @app.table_route(table=p.counters, match_info="volume_id")
    async def volume_counters(web: View, request: Request, volume_id: str) -> Response:
        return counters_response(p, web, request, volume_id)

    @app.page("/volumes/{volume_id}/stats")
    @app.table_route(table=p.counters, match_info="volume_id")
    async def volume_stats(web: View, request: Request, volume_id: str) -> Response:
        return stats_response(p, web, request, volume_id)

    @app.page("/volumes")
    async def volumes(web: View, request: Request) -> Response:
        """The caller's volumes with their current activity, from every worker."""
        principal = principal_of(request)
        try:
            local = list_local_volumes(p, principal, time.time_ns())
        except ConsumerNotStarted:
            return web.json({"error": "starting", "app_id": app.conf.id}, status=503)
        if request.query.get("scope") == "local":
            return web.json({"volumes": local})
        return web.json(await list_all_volumes(p, request, local))

    @app.page("/whoami")
    async def whoami(web: View, request: Request) -> Response:
        return web.json(principal_of(request).to_json())

    @app.page("/status")
    async def status(web: View, request: Request) -> Response:
        raw_topic = p.raw_topic.get_topic_name()
        try:
            assignment = app.consumer.assignment()
        except ConsumerNotStarted:
            return web.json({"error": "starting", "app_id": app.conf.id}, status=503)
        assigned = sorted(tp.partition for tp in assignment if tp.topic == raw_topic)
        return web.json({
            "app_id": app.conf.id, "url": str(app.conf.canonical_url),
            "raw_topic": p.settings.raw_topic, "assigned_partitions": assigned,
            "tokens_known": len(p.token_feed.book),
            **{k: v for k, v in asdict(p.stats).items() if k != "last_rejection_log_ns"},
        })

    @app.page("/metrics")
    async def metrics(web: View, request: Request) -> Response:
        """Prometheus scrape target: the cumulative counters of this worker's volumes.

        Not routed: each worker serves the volumes of the raw-topic partitions actively
        assigned to it, so Prometheus must scrape every worker (docs/monitoring.md).
        Operator token only (the middleware).
        """
        try:
            body = metrics_text(p)
        except ConsumerNotStarted:  # starting up: a failed scrape (up == 0), not empty data
            return web.text("consumer not started yet\n", status=503)
        # The whole header, not content_type=: aiohttp refuses a charset in content_type.
        return web.text(body, headers={"Content-Type": PROMETHEUS_CONTENT_TYPE})

    register_dashboard(p)
    # faust's aiohttp driver; its type stub (faust.web.base.Web) does not name web_app.
    app.web.web_app.middlewares.append(auth_middleware(p))  # type: ignore[attr-defined]


def register_dashboard(p: Pipeline) -> None:
    """The panel's pages: a public sign-in form; everything else behind a token."""
    app = p.app
    files = {name: (DASHBOARD_DIR / name) for name in ("index.html", "app.js", "style.css",
                                                        "login.html")}
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

    class Login(View):
        async def get(self, request: Request) -> Response:
            return static("login.html")

        async def post(self, request: Request) -> Response:
            """Check a token and keep it in an HttpOnly cookie for the panel's requests."""
            form = await request.post()  # type: ignore[attr-defined]
            token = str(form.get("token", "")).strip()
            if not p.token_feed.ready.is_set():
                return _starting()
            try:
                principal = p.token_feed.book.authenticate(token)
            except AuthError as exc:
                return _unauthorized(exc)
            response = _json_response(principal.to_json(), 200)
            response.set_cookie(COOKIE_NAME, token, httponly=True, samesite="Strict",
                                path="/")
            return response

    class Logout(View):
        async def post(self, request: Request) -> Response:
            response = _json_response({"signed_out": True}, 200)
            response.del_cookie(COOKIE_NAME, path="/")
            return response

    app.page("/login")(Login)
    app.page("/logout")(Logout)

    @app.page("/favicon.ico")
    async def favicon(web: View, request: Request) -> Response:
        return web.bytes(b"", status=204)  # browsers ask; nothing to show, nothing to leak


_PLOTLY: list[bytes] = []


def plotly_bundle() -> bytes:
    """plotly.js as the plotly Python package ships it: served by the worker, no CDN."""
    if not _PLOTLY:
        from plotly.offline import get_plotlyjs

        _PLOTLY.append(get_plotlyjs().encode())
    return _PLOTLY[0]


def readable_state(p: Pipeline, request: Request, volume_id: str) -> VolumeState | None:
    """The volume's state if it exists *and* the caller may read it; else None, so that
    another tenant's volume reads exactly as one that does not exist."""
    state = p.load_state(volume_id)
    if state is None or not principal_of(request).may_read(state.tenant_id):
        return None
    return state


def counters_response(p: Pipeline, web: View, request: Request, volume_id: str) -> Response:
    """SEMANTICS.md section 2 counters of one volume, idle time as of now."""
    reason = id_error("volume_id", volume_id)
    if reason is not None:
        return web.error(400, reason)
    state = readable_state(p, request, volume_id)
    if state is None:
        return not_found(web, volume_id)
    return web.json(state.counters_json(volume_id, time.time_ns()))


def owned_partitions(p: Pipeline) -> set[int]:
    raw_topic = p.settings.raw_topic
    return {tp.partition for tp in p.app.consumer.assignment() if tp.topic == raw_topic}


def owned_volumes(p: Pipeline) -> list[tuple[str, VolumeState]]:
    """The volumes of the raw-topic partitions actively assigned here.

    The counters table also holds standby copies of other workers' partitions; a volume
    whose raw-topic partition is not in this worker's active assignment is left out, so
    that only the owner serves a volume, never its standby too (during a rebalance a
    volume may be briefly missing from every worker or, on stale assignments, in two).
    """
    raw_topic = p.settings.raw_topic
    owned = owned_partitions(p)
    out = []
    for key, snapshot in p.counters.items():
        if snapshot is None:
            continue
        if p.app.producer.key_partition(raw_topic, key).partition not in owned:
            continue
        out.append((key.decode(), VolumeState.from_snapshot(snapshot)))
    return out


def metrics_text(p: Pipeline) -> str:
    """Prometheus text of the volumes this worker owns (:func:`owned_volumes`)."""
    now_ns = time.time_ns()  # counters_json wants one; idle_time_ns is not exported
    return prometheus_text((volume_id, state.counters_json(volume_id, now_ns))
                           for volume_id, state in owned_volumes(p))


ACTIVITY_S = 60  # "current activity": the last minute of complete 1 s windows


def list_local_volumes(p: Pipeline, principal: Principal, now_ns: int) -> list[dict[str, Any]]:
    """The caller's volumes owned here, each with its totals and its last minute's rates."""
    to_ns = now_ns // NS_PER_S * NS_PER_S  # the current, incomplete second is left out
    from_ns = to_ns - ACTIVITY_S * NS_PER_S
    out = []
    for volume_id, state in owned_volumes(p):
        if not principal.may_read(state.tenant_id):
            continue
        partition = p.app.producer.key_partition(p.settings.raw_topic,
                                                 volume_id.encode()).partition
        recent = p.windows_for(partition).windows_of(volume_id, NS_PER_S, from_ns, to_ns)
        counters = state.counters_json(volume_id, now_ns)
        last = [window_stats(volume_id, e.tenant_id, e.acc) for e in recent]
        out.append({
            "volume_id": volume_id, "tenant_id": state.tenant_id,
            "last_io_ns": counters["last_io_ns"],
            "totals": {k: counters[k] for k in (
                "read_ios", "write_ios", "read_bytes", "write_bytes", "read_ios_error",
                "write_ios_error", "flush_ios", "discard_ios")},
            "invalid_ios": sum(counters[f"invalid_{op}_ios"]
                               for op in ("read", "write", "flush", "discard")),
            "activity": {
                "from_ns": from_ns, "to_ns": to_ns,
                "read_iops": sum(w["read_ios"] for w in last) / ACTIVITY_S,
                "write_iops": sum(w["write_ios"] for w in last) / ACTIVITY_S,
                "read_bytes_per_s": sum(w["read_bytes"] for w in last) / ACTIVITY_S,
                "write_bytes_per_s": sum(w["write_bytes"] for w in last) / ACTIVITY_S,
                "busy_fraction": sum(w["busy_time_ns"] for w in last)
                / (ACTIVITY_S * NS_PER_S),
            },
        })
    return out


async def list_all_volumes(p: Pipeline, request: Request, local: list[dict[str, Any]]
                           ) -> dict[str, Any]:
    """Merge :func:`list_local_volumes` of every worker, asked with the caller's token."""
    me = str(p.app.conf.canonical_url).rstrip("/")
    hosts = sorted({str(h).rstrip("/") for h in p.app.router.table_metadata(p.counters.name)}
                   - {me})
    headers = {k: v for k, v in request.headers.items()
               if k.lower() in ("authorization", "cookie")}
    timeout = ClientTimeout(total=5)

    async def ask(host: str) -> list[dict[str, Any]]:
        async with p.app.http_client.get(f"{host}/volumes", params={"scope": "local"},
                                         headers=headers, timeout=timeout) as response:
            response.raise_for_status()
            body = await response.json()
            return list(body["volumes"])

    answers = await asyncio.gather(*(ask(h) for h in hosts), return_exceptions=True)
    merged = {v["volume_id"]: v for v in local}
    unreachable = []
    for host, answer in zip(hosts, answers, strict=True):
        if isinstance(answer, (ClientError, asyncio.TimeoutError, KeyError, ValueError)):
            unreachable.append({"worker": host, "error": f"{type(answer).__name__}: {answer}"})
        elif isinstance(answer, BaseException):
            raise answer
        else:
            merged.update({v["volume_id"]: v for v in answer})
    return {"volumes": [merged[k] for k in sorted(merged)],
            "complete": not unreachable, "unreachable": unreachable}


WINDOWS_NS = {name: length for length, name in WINDOW_NAMES.items()}
DEFAULT_SPAN_NS = {"1s": 15 * 60 * NS_PER_S, "1m": 24 * 3600 * NS_PER_S,
                   "1h": 30 * 24 * 3600 * NS_PER_S}


def stats_response(p: Pipeline, web: View, request: Request, volume_id: str) -> Response:
    """Stored windows of one volume: ?window=1s|1m|1h&from=..&to=.. (start in [from, to))."""
    window = request.query.get("window", "1m")
    if window not in WINDOWS_NS:
        return web.error(400, "window must be 1s, 1m or 1h")
    now_ns = time.time_ns()
    try:
        to_ns = parse_time_ns(request.query.get("to", "now"), now_ns)
        from_ns = parse_time_ns(request.query.get("from", str(to_ns - DEFAULT_SPAN_NS[window])),
                                now_ns)
    except ValueError as exc:
        return web.error(400, str(exc))
    reason = id_error("volume_id", volume_id)
    if reason is not None:
        return web.error(400, reason)
    if readable_state(p, request, volume_id) is None:
        return not_found(web, volume_id)
    partition = p.app.producer.key_partition(p.settings.raw_topic, volume_id.encode()).partition
    windows = [
        {**window_stats(volume_id, entry.tenant_id, entry.acc),
         "revision": entry.revision - 1 if entry.emitted else None}
        for entry in p.windows_of(partition, volume_id, WINDOWS_NS[window], from_ns, to_ns)
    ]
    return web.json({"volume_id": volume_id, "window": window, "from_ns": from_ns,
                     "to_ns": to_ns, "windows": windows})


def not_found(web: View, volume_id: str) -> Response:
    body: dict[str, Any] = {"error": "unknown volume", "volume_id": volume_id}
    return web.json(body, status=404)
