"""HTTP views of a worker. Volume views are routed to the worker that owns the volume."""

from __future__ import annotations

import time
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from faust.web import Request, Response, View

from .events import id_error

if TYPE_CHECKING:
    from .app import Pipeline


def register_views(p: Pipeline) -> None:
    app = p.app

    @app.page("/volumes/{volume_id}/counters")
    @app.table_route(table=p.counters, match_info="volume_id")
    async def volume_counters(web: View, request: Request, volume_id: str) -> Response:
        return counters_response(p, web, volume_id)

    @app.page("/status")
    async def status(web: View, request: Request) -> Response:
        raw_topic = p.raw_topic.get_topic_name()
        assigned = sorted(tp.partition for tp in app.consumer.assignment() if tp.topic == raw_topic)
        return web.json({
            "app_id": app.conf.id, "url": str(app.conf.canonical_url),
            "raw_topic": p.settings.raw_topic, "assigned_partitions": assigned,
            **{k: v for k, v in asdict(p.stats).items() if k != "last_rejection_log_ns"},
        })


def counters_response(p: Pipeline, web: View, volume_id: str) -> Response:
    """SEMANTICS.md section 2 counters of one volume, idle time as of now."""
    reason = id_error("volume_id", volume_id)
    if reason is not None:
        return web.error(400, reason)
    state = p.load_state(volume_id)
    if state is None:
        return not_found(web, volume_id)
    return web.json(state.counters_json(volume_id, time.time_ns()))


def not_found(web: View, volume_id: str) -> Response:
    body: dict[str, Any] = {"error": "unknown volume", "volume_id": volume_id}
    return web.json(body, status=404)
