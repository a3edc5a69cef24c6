"""HTTP views of a worker, behind bearer-token access control (docs/access.md).

Volume views are routed to the worker that owns the volume, a member of the consumer
group, with the caller's token only (``routing.py``: the owner checks the same token);
/status and /metrics describe the worker that answers. The access gate (``gate.py``)
lets a request in or not; the volume views then answer a volume of another tenant
exactly as a volume that does not exist. What the views read of a worker is
``ports.WorkerState``.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import asdict
from ssl import SSLContext
from typing import Any

from aiohttp import ClientError, ClientTimeout
from faust.exceptions import ConsumerNotStarted
from faust.web import Request, Response, View
from yarl import URL

from streams.api.auth import Principal
from streams.api.dashboard import register_dashboard
from streams.api.gate import (
    TOKEN,
    RateLimits,
    add_security_headers,
    auth_middleware,
    body_response,
    principal_of,
)
from streams.api.health import PartitionLag, worker_text
from streams.api.ports import WorkerState
from streams.api.prometheus import PROMETHEUS_CONTENT_TYPE, latency_text, prometheus_text
from streams.api.ratelimit import Limit
from streams.api.routing import forward_headers, owner_routed, url_ident
from streams.api.stats import WINDOWS_NS, BadQuery, stats_body, stats_query
from streams.api.tls import client_context
from streams.api.tokens import TokenFeed
from streams.core.counters import COUNTER_NAMES, VolumeState
from streams.core.events import id_error
from streams.core.times import NS_PER_S
from streams.core.windows.acc import window_stats


def register_views(p: WorkerState, token_feed: TokenFeed) -> RateLimits:
    """Every page of the worker's web server, behind the access gate (``gate.py``)."""
    settings = p.settings
    limits = RateLimits(Limit(settings.web_rate_per_s, settings.web_burst),
                        Limit(settings.web_operator_rate_per_s, settings.web_operator_burst))
    _register_volume_views(p)
    _register_worker_views(p, token_feed, limits)
    register_dashboard(p.app, token_feed)
    # faust's aiohttp driver; its type stub (faust.web.base.Web) does not name web_app.
    web_app = p.app.web.web_app  # type: ignore[attr-defined]
    web_app.middlewares.append(auth_middleware(token_feed, limits))
    web_app.on_response_prepare.append(add_security_headers)
    return limits


def _register_volume_views(p: WorkerState) -> None:
    app = p.app
    peer_ssl = client_context(p.settings)  # how a forward checks the owner (HTTPS)

    @app.page("/volumes/{volume_id}/counters")
    @owner_routed(app, p.counters, "volume_id", peer_ssl)
    async def volume_counters(web: View, request: Request, volume_id: str) -> Response:
        return counters_response(p, web, request, volume_id)

    @app.page("/volumes/{volume_id}/stats")
    @owner_routed(app, p.counters, "volume_id", peer_ssl)
    async def volume_stats(web: View, request: Request, volume_id: str) -> Response:
        return await stats_response(p, web, request, volume_id)

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
        return web.json(await list_all_volumes(p, request, local, peer_ssl))


def _register_worker_views(p: WorkerState, token_feed: TokenFeed, limits: RateLimits) -> None:
    app = p.app

    @app.page("/whoami")
    async def whoami(web: View, request: Request) -> Response:
        return web.json(principal_of(request).to_json())

    @app.page("/status")
    async def status(web: View, request: Request) -> Response:
        try:
            assigned = sorted(owned_partitions(p))
        except ConsumerNotStarted:
            return web.json({"error": "starting", "app_id": app.conf.id}, status=503)
        return web.json({
            "app_id": app.conf.id, "url": str(app.conf.canonical_url),
            "raw_topic": p.settings.raw_topic, "assigned_partitions": assigned,
            "tokens_known": len(token_feed.book), "http": limits.status(),
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
        response: Any = web.text(body, headers={"Content-Type": PROMETHEUS_CONTENT_TYPE})
        # gzip when the scraper accepts it (Prometheus does): the latency histograms make
        # ~11 KB a volume, about 8.6 MB for 750 volumes (docs/monitoring.md).
        response.enable_compression()
        return response  # type: ignore[no-any-return]


def readable_state(p: WorkerState, request: Request, volume_id: str) -> VolumeState | None:
    """The volume's state if it exists *and* the caller may read it; else None, so that
    another tenant's volume reads exactly as one that does not exist."""
    state = p.load_state(volume_id)
    if state is None or not principal_of(request).may_read(state.tenant_id):
        return None
    return state


def counters_response(p: WorkerState, web: View, request: Request, volume_id: str) -> Response:
    """SEMANTICS.md section 2 counters of one volume, idle time as of now."""
    reason = id_error("volume_id", volume_id)
    if reason is not None:
        return web.error(400, reason)
    state = readable_state(p, request, volume_id)
    if state is None:
        return not_found(web, volume_id)
    return web.json(state.counters_json(volume_id, time.time_ns()))


def owned_partitions(p: WorkerState) -> set[int]:
    raw_topic = p.settings.raw_topic
    return {tp.partition for tp in p.app.consumer.assignment() if tp.topic == raw_topic}


def owned_volumes(p: WorkerState) -> list[tuple[str, VolumeState]]:
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


def metrics_text(p: WorkerState) -> str:
    """Prometheus text of the volumes this worker owns (:func:`owned_volumes`): their
    counters, their latency histograms; then the worker's own health (api/health.py)."""
    now_ns = time.time_ns()  # counters_json wants one; idle_time_ns is not exported
    owned = owned_volumes(p)
    volumes = volume_metrics(owned, now_ns, p.settings.metrics_latency_histograms)
    lags = [PartitionLag(*position) for position in p.input_positions()]
    stats = p.stats
    return volumes + worker_text(asdict(stats), lags, bool(getattr(p.app, "in_recovery", False)),
                                 stats.close_delays, stats.started_ns, now_ns)


def volume_metrics(owned: list[tuple[str, VolumeState]], now_ns: int, histograms: bool) -> str:
    """The volumes' counters and, unless ``IOACCT_METRICS_LATENCY_HISTOGRAMS=0``, their
    latency histograms, in Prometheus text."""
    text = prometheus_text((volume_id, state.counters_json(volume_id, now_ns))
                           for volume_id, state in owned)
    if histograms:
        text += latency_text((volume_id, state.tenant_id, state.latency_histograms())
                             for volume_id, state in owned)
    return text


ACTIVITY_S = 60  # "current activity": the last minute of complete 1 s windows
INVALID_COUNTERS = tuple(name for name, _slot in COUNTER_NAMES if name.startswith("invalid_"))
# A listing's totals: ok requests of every op; bytes and failed requests of reads and writes.
TOTAL_COUNTERS = tuple(
    name for name, _slot in COUNTER_NAMES
    if (name.endswith("_ios") and name not in INVALID_COUNTERS)
    or (name.startswith(("read_", "write_")) and name.endswith(("_bytes", "_ios_error"))))


def list_local_volumes(p: WorkerState, principal: Principal, now_ns: int) -> list[dict[str, Any]]:
    """The caller's volumes owned here, each with its totals and its last minute's rates."""
    to_ns = now_ns // NS_PER_S * NS_PER_S  # the current, incomplete second is left out
    from_ns = to_ns - ACTIVITY_S * NS_PER_S
    out = []
    for volume_id, state in owned_volumes(p):
        if not principal.may_read(state.tenant_id):
            continue
        partition = p.app.producer.key_partition(p.settings.raw_topic,
                                                 volume_id.encode()).partition
        recent = p.windows_of(partition, volume_id, NS_PER_S, from_ns, to_ns)
        last = [window_stats(volume_id, e.tenant_id, e.acc) for e in recent]
        out.append(_volume_summary(volume_id, state.counters_json(volume_id, now_ns), last,
                                   from_ns, to_ns))
    return out


def _volume_summary(volume_id: str, counters: dict[str, Any], last: list[dict[str, Any]],
                    from_ns: int, to_ns: int) -> dict[str, Any]:
    """One volume of a listing: its totals, and its rates over the 1 s windows ``last``."""
    return {
        "volume_id": volume_id, "tenant_id": counters["tenant_id"],
        "last_io_ns": counters["last_io_ns"],
        "totals": {k: counters[k] for k in TOTAL_COUNTERS},
        "invalid_ios": sum(counters[k] for k in INVALID_COUNTERS),
        "activity": {
            "from_ns": from_ns, "to_ns": to_ns,
            "read_iops": sum(w["read_ios"] for w in last) / ACTIVITY_S,
            "write_iops": sum(w["write_ios"] for w in last) / ACTIVITY_S,
            "read_bytes_per_s": sum(w["read_bytes"] for w in last) / ACTIVITY_S,
            "write_bytes_per_s": sum(w["write_bytes"] for w in last) / ACTIVITY_S,
            "busy_fraction": sum(w["busy_time_ns"] for w in last) / (ACTIVITY_S * NS_PER_S),
        },
    }


async def list_all_volumes(p: WorkerState, request: Request, local: list[dict[str, Any]],
                           peer_ssl: SSLContext | None = None) -> dict[str, Any]:
    """Merge :func:`list_local_volumes` of every worker, asked with the caller's token."""
    me = url_ident(URL(str(p.app.conf.canonical_url)))
    # The group's members as the assignment lists them; the caller's token, no cookie.
    hosts = sorted({str(h).rstrip("/") for h in p.app.router.table_metadata(p.counters.name)
                    if url_ident(URL(str(h))) != me})
    headers = forward_headers(request[TOKEN])  # type: ignore[index]
    timeout = ClientTimeout(total=5)

    async def ask(host: str) -> list[dict[str, Any]]:
        async with p.app.http_client.get(f"{host}/volumes", params={"scope": "local"},
                                         headers=headers, timeout=timeout,
                                         allow_redirects=False,
                                         ssl=peer_ssl or True) as response:
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


async def stats_response(p: WorkerState, web: View, request: Request, volume_id: str
                         ) -> Response:
    """Stored windows of one volume: ?window=1s|1m|1h&from=..&to=.. (start in [from, to)),
    at most ``web_max_windows`` of them (``stats.stats_query``)."""
    try:
        window, from_ns, to_ns = stats_query(request.query, time.time_ns(),
                                             p.settings.web_max_windows)
    except BadQuery as exc:
        return web.error(400, str(exc))
    reason = id_error("volume_id", volume_id)
    if reason is not None:
        return web.error(400, reason)
    if readable_state(p, request, volume_id) is None:
        return not_found(web, volume_id)
    partition = p.app.producer.key_partition(p.settings.raw_topic, volume_id.encode()).partition
    entries = p.windows_of(partition, volume_id, WINDOWS_NS[window], from_ns, to_ns)
    head = {"volume_id": volume_id, "window": window, "from_ns": from_ns, "to_ns": to_ns}
    body = await stats_body(volume_id, head, entries)
    return body_response(body, 200, "application/json", {})


def not_found(web: View, volume_id: str) -> Response:
    body: dict[str, Any] = {"error": "unknown volume", "volume_id": volume_id}
    return web.json(body, status=404)
