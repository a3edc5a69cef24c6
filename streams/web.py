"""HTTP views of a worker. Volume views are routed to the worker that owns the volume;
/status and /metrics describe the worker that answers."""

from __future__ import annotations

import time
from dataclasses import asdict
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from faust.exceptions import ConsumerNotStarted
from faust.web import Request, Response, View

from .accounting import VolumeState
from .events import id_error
from .monitoring import PROMETHEUS_CONTENT_TYPE, prometheus_text
from .windows import NS_PER_S, window_stats

if TYPE_CHECKING:
    from .app import Pipeline


def register_views(p: Pipeline) -> None:
    app = p.app

    @app.page("/volumes/{volume_id}/counters")
    @app.table_route(table=p.counters, match_info="volume_id")
    async def volume_counters(web: View, request: Request, volume_id: str) -> Response:
        return counters_response(p, web, volume_id)

    @app.page("/volumes/{volume_id}/stats")
    @app.table_route(table=p.counters, match_info="volume_id")
    async def volume_stats(web: View, request: Request, volume_id: str) -> Response:
        return stats_response(p, web, request, volume_id)

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
            **{k: v for k, v in asdict(p.stats).items() if k != "last_rejection_log_ns"},
        })

    @app.page("/metrics")
    async def metrics(web: View, request: Request) -> Response:
        """Prometheus scrape target: the cumulative counters of this worker's volumes.

        Not routed: each worker serves the volumes of the raw-topic partitions actively
        assigned to it, so Prometheus must scrape every worker (docs/monitoring.md).
        """
        try:
            body = metrics_text(p)
        except ConsumerNotStarted:  # starting up: a failed scrape (up == 0), not empty data
            return web.text("consumer not started yet\n", status=503)
        # The whole header, not content_type=: aiohttp refuses a charset in content_type.
        return web.text(body, headers={"Content-Type": PROMETHEUS_CONTENT_TYPE})


def counters_response(p: Pipeline, web: View, volume_id: str) -> Response:
    """SEMANTICS.md section 2 counters of one volume, idle time as of now."""
    reason = id_error("volume_id", volume_id)
    if reason is not None:
        return web.error(400, reason)
    state = p.load_state(volume_id)
    if state is None:
        return not_found(web, volume_id)
    return web.json(state.counters_json(volume_id, time.time_ns()))


def metrics_text(p: Pipeline) -> str:
    """Prometheus text of the volumes of the raw-topic partitions actively assigned here.

    The counters table also holds standby copies of other workers' partitions; a volume
    whose raw-topic partition is not in this worker's active assignment is left out, so
    that only the owner serves a volume, never its standby too (during a rebalance a
    volume may be briefly missing from every worker or, on stale assignments, in two).
    """
    raw_topic = p.settings.raw_topic
    owned = {tp.partition for tp in p.app.consumer.assignment() if tp.topic == raw_topic}
    now_ns = time.time_ns()  # counters_json wants one; idle_time_ns is not exported
    volumes = []
    for key, snapshot in p.counters.items():
        if snapshot is None:
            continue
        if p.app.producer.key_partition(raw_topic, key).partition not in owned:
            continue
        volume_id = key.decode()
        state = VolumeState.from_snapshot(snapshot)
        volumes.append((volume_id, state.counters_json(volume_id, now_ns)))
    return prometheus_text(volumes)


WINDOWS_NS = {"1s": NS_PER_S, "1m": 60 * NS_PER_S, "1h": 3600 * NS_PER_S}
DEFAULT_SPAN_NS = {"1s": 15 * 60 * NS_PER_S, "1m": 24 * 3600 * NS_PER_S,
                   "1h": 30 * 24 * 3600 * NS_PER_S}


def parse_time_ns(text: str, now_ns: int) -> int:
    """Epoch ns, ISO 8601 (naive = UTC), or 'now' / 'now-15m' style offsets."""
    if text.lstrip("-").isdigit():
        return int(text)
    if text.startswith("now"):
        rest = text[3:]
        if not rest:
            return now_ns
        units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
        if rest[0] in "+-" and rest[1:-1].isdigit() and rest[-1] in units:
            return now_ns + int(rest[:-1]) * units[rest[-1]] * NS_PER_S
        raise ValueError(f"cannot read {text!r}: use now-15m, now-2h, now-7d")
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp()) * NS_PER_S + moment.microsecond * 1000


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
    if p.load_state(volume_id) is None:
        return not_found(web, volume_id)
    partition = p.app.producer.key_partition(p.settings.raw_topic, volume_id.encode()).partition
    windows = [
        {**window_stats(volume_id, entry.tenant_id, entry.acc),
         "revision": entry.revision - 1 if entry.emitted else None}
        for entry in p.windows_for(partition).windows_of(
            volume_id, WINDOWS_NS[window], from_ns, to_ns)
    ]
    return web.json({"volume_id": volume_id, "window": window, "from_ns": from_ns,
                     "to_ns": to_ns, "windows": windows})


def not_found(web: View, volume_id: str) -> Response:
    body: dict[str, Any] = {"error": "unknown volume", "volume_id": volume_id}
    return web.json(body, status=404)
